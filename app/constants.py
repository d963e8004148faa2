"""The values several layers must spell the same way: media types, token scopes, `Retry-After`.

One module in the bottom layer (beside `app.settings`), not one per package: the handlers
(`app.items`, `app.auth`), the error responses and the OpenAPI document (`app.http`) all name
these, and `app.http` may not import `app.auth` or `app.items`. It imports nothing.
"""

from __future__ import annotations

# Media types (RFC 8259 JSON, RFC 7396 merge patch, RFC 9457 problem details).
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
PROBLEM_JSON = "application/problem+json"

# OAuth 2.0 scopes a token may hold: items:write also allows every read.
SCOPE_READ = "items:read"
SCOPE_WRITE = "items:write"

# `Retry-After` seconds. The database or a dependency is down: clients back off a little.
RETRY_AFTER_UNAVAILABLE = "2"
# Another request with the same Idempotency-Key is running: it usually ends within a second.
RETRY_AFTER_KEY_IN_FLIGHT = "1"
