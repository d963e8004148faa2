"""Container HEALTHCHECK: GET /health (liveness, no database) on this container.

Reads PORT like the server does (a hard-coded port breaks `-e PORT=...`) and
speaks HTTPS when the server does. TLS is on by the rule of app/settings.py:
TLS_ENABLED when set, else whether TLS_CERT or TLS_KEY is set. The rule is
repeated here, not imported, because importing the settings costs ~0.4 s of
CPU on every probe. The certificate names the public host, not 127.0.0.1, so
it is not verified. Exit 0 = healthy, 1 = unhealthy (Docker's contract).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping

TRUE = {"1", "on", "t", "true", "y", "yes"}
FALSE = {"0", "off", "f", "false", "n", "no"}


def tls_on(env: Mapping[str, str]) -> bool:
    enabled = env.get("TLS_ENABLED", "").strip().lower()
    if enabled in TRUE:
        return True
    if enabled in FALSE:
        return False
    return bool(env.get("TLS_CERT") or env.get("TLS_KEY"))


def main() -> int:
    port = os.environ.get("PORT") or "8000"
    context = None
    scheme = "http"
    if tls_on(os.environ):
        scheme = "https"
        context = ssl._create_unverified_context()  # noqa: S323, SLF001 (a probe of its own localhost)
    url = f"{scheme}://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except OSError as error:
        sys.stderr.write(f"healthcheck {url}: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
