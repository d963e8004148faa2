"""Two instances behind a real nginx (and PgBouncer): the scale-out rehearsal's fixtures.

The cluster itself is deploy/local-cluster/localcluster.py, the same code an operator runs.
Traffic goes to 127.0.0.1 only; nginx and pgbouncer are private instances in a temporary
folder, installed with apt-get when missing (root), else these tests are skipped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.db.migrate import migrate as migrate_database
from app.settings import load_settings
from tests.support import ROOT, bearer, create_database, create_user_cli, drop_database, login

log = logging.getLogger(__name__)

WRITER = "cluster-writer"


def _load_localcluster() -> ModuleType:
    path = ROOT / "deploy" / "local-cluster" / "localcluster.py"
    spec = importlib.util.spec_from_file_location("localcluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster"] = module
    spec.loader.exec_module(module)
    return module


localcluster = _load_localcluster()


@pytest.fixture(scope="package", autouse=True)
def _cluster_tools() -> None:
    missing = [name for name, path in localcluster.PACKAGES.items() if not Path(path).exists()]
    if missing and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip(f"{', '.join(missing)} not installed and cannot be (needs root and apt-get)")


@pytest.fixture(scope="package")
def cluster_db(server_url: str) -> Iterator[str]:
    """A migrated database of the cluster tests' own, on the machine's PostgreSQL."""
    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the cluster tests need the machine's PostgreSQL (TEST_DATABASE_URL)")
    name = f"items_cluster_{os.getpid()}"
    url = create_database(server_url, name)
    asyncio.run(migrate_database(load_settings(env_file=None, DATABASE_URL=url)))
    yield url
    drop_database(server_url, name)


@pytest.fixture(scope="package")
def redis_url() -> str:
    """The machine's Redis; keys of these tests are unique to the run (fresh client addresses,
    fresh idempotency keys), so parallel runs cannot disturb each other."""
    return os.environ.get("TEST_REDIS_URL", localcluster.DEFAULT_REDIS_URL)


@pytest.fixture(scope="package")
def cluster(cluster_db: str, redis_url: str) -> Iterator[Any]:
    """nginx -> 2 instances x 2 workers -> PgBouncer (transaction pooling) -> PostgreSQL."""
    with localcluster.running_cluster(
        database_url=cluster_db,
        redis_url=redis_url,
        pgbouncer=True,
        env={"RATE_LIMIT": "off"},
    ) as running:
        yield running


@pytest.fixture(scope="package")
def writer(cluster: Any, cluster_db: str) -> dict[str, str]:
    """An items:write token, the way an operator gets one: `create-user`, then `POST /auth`
    (through the load balancer: every instance accepts every instance's tokens)."""
    created = create_user_cli(cluster_db, WRITER, ["items:write"])
    assert created.returncode == 0, created.stderr
    return bearer(login(cluster.base, WRITER)["access_token"])


UPSTREAMS = re.compile(r'upstream="([^"]*)" ustatus="([^"]*)"')


def nginx_upstreams(access_log: Path, since_line: int = 0) -> Counter[str]:
    """How nginx routed requests: per upstream address, and `retried` when it tried two."""
    tally: Counter[str] = Counter()
    for line in access_log.read_text().splitlines()[since_line:]:
        match = UPSTREAMS.search(line)
        if match is None:
            continue
        tried = [hop.strip() for hop in match.group(1).split(",")]
        if len(tried) > 1:
            tally["retried"] += 1
        tally[tried[-1]] += 1
    return tally


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
