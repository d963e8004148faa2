"""HTTP plumbing every resource shares: problem+json errors, the strict JSON body, responses,
request ids and security headers, client addresses, the OpenAPI document and Swagger UI.

Uses `app.db` at most; never a resource package (the import contract in pyproject.toml).
"""
