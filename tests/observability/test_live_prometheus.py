"""A real Prometheus scraping a real 2-worker `python -m app serve`, with the shipped rules.

Every expression of the dashboard and the rules, and every metric they name, must return
series from the live server, so a renamed metric or label fails here instead of blanking a
panel or silencing an alert; and stopping the database must put ItemsNotReady in `pending`.
The server runs with TLS (the certificate gauge exists only then) on a throwaway PostgreSQL
this test may stop (tests/pg_cluster.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from app.db.migrate import migrate as migrate_database
from app.settings import load_settings
from tests.observability.conftest import DASHBOARD, RULES
from tests.pg_cluster import ThrowawayCluster
from tests.support import (
    ROOT,
    Server,
    bearer,
    create_database,
    create_user_cli,
    free_port,
    login,
    server_process,
)

pytestmark = [pytest.mark.observability, pytest.mark.server]

SCRAPE = "1s"
# Grafana's variables, as Grafana would fill them for "All" and a 1 s scrape interval.
GRAFANA_VARIABLES = {"$job": ".+", "$__rate_interval": "1m"}
METRIC_NAME = re.compile(r"(?<![\w:$])[a-z_:]*items_[a-z0-9_:]*")
DEADLINE = 60.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [sys.executable, "-m", "app", "gen-cert", "--out", str(folder), "--force"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder


@pytest.fixture(scope="module")
def server(
    throwaway_cluster: ThrowawayCluster, certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    url = create_database(throwaway_cluster.url, "items")
    asyncio.run(migrate_database(load_settings(env_file=None, DATABASE_URL=url)))
    created = create_user_cli(url, "observer", ["items:write"])
    assert created.returncode == 0, created.stderr
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with server_process(
        url,
        log_path=log_path,
        tls_ca=certs / "fullchain.pem",
        WORKERS="2",
        TLS_CERT=str(certs / "fullchain.pem"),
        TLS_KEY=str(certs / "privkey.pem"),
        RATE_LIMIT_AUTH="3/minute",
        DB_CONNECT_TIMEOUT="1",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, server: Server, certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "items",
                "scheme": "https",
                "tls_config": {"ca_file": str(certs / "fullchain.pem")},
                "static_configs": [{"targets": [f"localhost:{server.port}"]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(base), f"Prometheus not ready: {_tail(folder / 'prometheus.log')}")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Any, message: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, message
        time.sleep(0.5)


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = resp.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _traffic(server: Server, ca: Path) -> None:
    """Every kind of response the panels show: 2xx, 304, 4xx, 429, and a killed worker."""
    with httpx.Client(base_url=server.base, verify=_trust(ca), timeout=10) as client:
        token = login(server.base, "observer", verify=_trust(ca))
        headers = bearer(token["access_token"])
        created = client.post("/items", json={"name": "Gauge", "price": 1.5}, headers=headers)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        for _ in range(5):
            assert client.get(location).status_code == 200
            client.get("/items", params={"limit": 5})
        client.get(location, headers={"If-None-Match": created.headers["etag"]})
        client.patch(location, json={"quantity": 3}, headers={**headers, "If-Match": '"1"'})
        client.get("/items/999999")
        client.get("/no/such/route")
        # RATE_LIMIT_AUTH is 3/minute: the later logins are refused with 429.
        refused = [
            client.post("/auth", json={"username": "observer", "password": "wrong password!"})
            for _ in range(6)
        ]
        assert any(resp.status_code == 429 for resp in refused)


def _kill_one_worker(server: Server) -> None:
    workers = [
        child
        for child in psutil.Process(server.process.pid).children(recursive=True)
        if any(
            conn.laddr.port == server.port and conn.status == "LISTEN"
            for conn in child.net_connections("tcp")
        )
    ]
    assert workers, "no worker found"
    workers[0].send_signal(signal.SIGKILL)
    time.sleep(0.5)


def _expressions() -> dict[str, list[str]]:
    """Every expression, by where it comes from ("dashboard: <panel>", "record: ...", ...)."""
    found: dict[str, list[str]] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.setdefault(expr, []).append(f"dashboard: {panel['title']}")
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            kind = "record" if "record" in rule else "alert"
            found.setdefault(rule["expr"].strip(), []).append(f"{kind}: {name}")
    return found


def test_every_dashboard_and_rule_expression_returns_series(
    prometheus: str,
    server: Server,
    throwaway_cluster: ThrowawayCluster,
    certs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _traffic(server, certs / "fullchain.pem")
    _kill_one_worker(server)
    # Back to two workers, both serving, before the database goes.
    _wait(
        lambda: (
            httpx.get(
                f"{server.base}/health/ready", verify=_trust(certs / "fullchain.pem"), timeout=2
            ).status_code
            == 200
        ),
        "the server did not recover from the killed worker",
    )
    _wait(
        lambda: bool(_query(prometheus, "items_worker_crashes_total > 0")),
        "the crash never reached Prometheus",
    )
    # Ready on every scrape so far: neither the main process nor a worker still starting (the
    # replacement) ever shows a 0, which would page someone at every restart.
    assert _query(prometheus, "min_over_time(items_ready[1h]) < 1") == []
    # The development certificate has DEV_CERT_DAYS left: never a 0 from a process without one.
    assert _query(prometheus, "min_over_time(items_tls_certificate_days_left[1h]) < 14") == []
    assert _query(prometheus, 'ALERTS{alertname="ItemsNotReady"}') == []

    throwaway_cluster.stop()
    with httpx.Client(
        base_url=server.base, verify=_trust(certs / "fullchain.pem"), timeout=10
    ) as client:
        outage = [client.get("/items").status_code for _ in range(5)]
    assert set(outage) == {503}, outage

    _wait(
        lambda: bool(_query(prometheus, 'ALERTS{alertname="ItemsNotReady", alertstate="pending"}')),
        "ItemsNotReady never went pending with the database stopped",
    )
    _wait(
        lambda: bool(_query(prometheus, 'items_http_requests_total{status="503"}')),
        "the 503s never reached Prometheus",
    )
    # A rule evaluation after the scrape that saw the 503s.
    time.sleep(2.5)

    rows = []
    empty = []
    for expr, sources in _expressions().items():
        whole = len(_query(prometheus, expr))
        rows.append((whole, expr, sources))
        is_alert = all(source.startswith("alert:") for source in sources)
        # An alert's comparison is rightly empty on a healthy route; the metrics it reads are not.
        if whole == 0 and not is_alert:
            empty.append(f"{expr} ({', '.join(sources)})")
        for name in sorted(set(METRIC_NAME.findall(expr))):
            if not _query(prometheus, name):
                empty.append(f"{name}, in {expr} ({', '.join(sources)})")
    names = sorted({name for expr in _expressions() for name in METRIC_NAME.findall(expr)})
    report = ["series  expression [where]"]
    report += [f"{n:6d}  {' '.join(e.split())}  [{'; '.join(s)}]" for n, e, s in rows]
    report += [f"{len(_query(prometheus, name)):6d}  {name}  [metric]" for name in names]
    with capsys.disabled():  # the list belongs in the CI log, pass or fail
        sys.stdout.write("\n" + "\n".join(report) + "\n")
    assert not empty, "no series for:\n" + "\n".join(empty)
    assert _query(prometheus, "min by (instance) (items_ready) == 0"), "items_ready not 0"
