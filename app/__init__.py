"""The items service: a Sanic HTTP API over PostgreSQL (see README.md)."""

import os
import sys

# Sanic's server workers (spawned, so this runs first in each) never load `cryptography`.
# They verify HS256 tokens (HMAC from the standard library) and serve TLS with the ssl
# module; PyJWT would still import `cryptography` for the RSA/EC/EdDSA algorithms the
# service refuses, at 8.5 MB of resident memory per worker.
# A None entry makes `import cryptography` raise ModuleNotFoundError, which PyJWT handles by
# offering only its HMAC algorithms. The main process (certificate checks, gen-cert) and
# every other command load it as usual. tests/server/test_workers.py checks both halves.
if os.environ.get("SANIC_WORKER_NAME", "").startswith("Sanic-Server-"):
    sys.modules.setdefault("cryptography", None)  # type: ignore[arg-type]
