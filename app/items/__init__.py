"""The items resource: routes, the SQL store, schemas, pagination, conditional requests, the
read cache and idempotent creates."""
