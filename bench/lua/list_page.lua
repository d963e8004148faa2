-- GET /items?limit=20&cursor=... with a random cursor collected from this server.
request = list_page_request
