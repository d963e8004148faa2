-- GET /items/{id} with a uniformly random id in [1, n_items].
request = get_item_request
