-- 90% reads / 10% writes: 70% get by id, 20% list page, 10% create.
request = function()
  local roll = math.random(1, 100)
  if roll <= 70 then
    return get_item_request()
  elseif roll <= 90 then
    return list_page_request()
  end
  return create_item_request()
end
