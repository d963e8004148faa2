"""Tokens: sanic-jwt's endpoints over our user store, and the scope check that guards handlers.

sanic-jwt serves `POST /auth` (login), `POST /auth/refresh`, `GET /auth/me` and
`GET /auth/verify`; app/auth/endpoints.py adds `POST /auth/logout`. Access tokens are HS256 JWTs
carrying `user_id` and `scopes`: checking one is a signature check, with no database call.
Refresh tokens are random strings stored hashed in PostgreSQL, so any worker on any machine
can refresh, and logout or `python -m app revoke-tokens` revokes them. Each refresh rotates
the refresh token (app/auth/users.py: one family per login, a replayed token revokes its family).

Revocation without a query per request: access tokens carry their user's `token_version`,
and every worker polls the versions of recently changed users (app/auth/token_cache.py). A token
older than its user's version is refused with 401 (disabled, revoked, or scopes changed: a
refresh gets a token with the current scopes, and a lowered scope then gives 403), within
MAX_AGE (1 s) of the change on every worker and machine; while polls fail, requests with a
bearer token get 503.

Handlers are guarded by `require_scope`, not sanic-jwt's `@scoped`: sanic-jwt 1.8 answers a
missing scope with 401 instead of 403 (it hands `status_code=403` to Sanic's `Unauthorized`,
which takes it as a WWW-Authenticate parameter) and decodes the token twice per request.
`authorize` below is the one place that fixes the status; it verifies the token once, with
the same key, algorithm and claims as sanic-jwt, and matches scopes with sanic-jwt's own
validator. `tests/unit/test_auth_upstream.py` fails when upstream changes that behaviour.
"""
