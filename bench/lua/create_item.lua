-- POST /items with a small valid body (no sku, so no uniqueness conflicts).
request = create_item_request
