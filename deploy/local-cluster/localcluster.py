"""A scale-out rehearsal on one machine: nginx in front of N `python -m app serve` instances.

    .venv/bin/python deploy/local-cluster/localcluster.py up [--no-pgbouncer] [--instances 2]

runs, in a temporary folder of its own (config, pid and log files):

- N instances of the server (WORKERS each, own ports), sharing the machine's PostgreSQL and
  Redis, with one JWT secret, so any instance accepts any instance's tokens;
- optionally a private PgBouncer (Debian package) in transaction pooling mode between the
  instances' pools and PostgreSQL (`DB_PGBOUNCER=true`; the cache's LISTEN connections, the
  migration lock and the capacity check go to PostgreSQL directly: `DATABASE_DIRECT_URL`);
- a private nginx (Debian package) as the load balancer: round robin, passive health
  (`max_fails`/`fail_timeout`), `proxy_next_upstream` for requests that are safe to resend,
  `X-Forwarded-For` from its own source address (127.0.0.2), the only one the instances
  trust (`TRUSTED_PROXIES`).

nginx and pgbouncer are installed with apt-get when missing (as root). The system services
are never started, stopped or reconfigured; neither are PostgreSQL's or Redis's.
`kill -HUP <pid of this script>` restarts the instances one at a time (SIGTERM, wait for the
exit, start, wait for readiness). The tests in tests/cluster/ drive the same `Cluster`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
log = logging.getLogger("local-cluster")

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/items_cluster"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# nginx connects to the instances from this address: the only one they trust.
PROXY_ADDR = "127.0.0.2"
# Passive health in nginx: a failed server sits out this long before it is tried again.
FAIL_TIMEOUT_S = 2
PACKAGES = {"nginx": "/usr/sbin/nginx", "pgbouncer": "/usr/sbin/pgbouncer"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def with_port(url: str, port: int, host: str = "127.0.0.1") -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def ensure_packages(*names: str) -> None:
    """Install the Debian packages whose binaries are missing (needs root and apt-get)."""
    missing = [name for name in names if not Path(PACKAGES[name]).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{', '.join(missing)} missing: apt-get install -y {' '.join(missing)}")
    log.info("installing %s with apt-get", " ".join(missing))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Packages' postinst scripts must not start the system services: policy-rc.d says no.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, timeout=900
        )
    finally:
        if made_policy:
            policy.unlink()


def wait_for(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def render(template: str, target: Path, **values: str) -> Path:
    text = (HERE / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    if "@@" in text:
        raise ValueError(f"{template}: a placeholder was left unfilled")
    target.write_text(text)
    return target


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM to the process itself (never its group), a second one, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # A manager wedged during start-up ends on a second SIGTERM (STACK-NOTES).
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return process.wait()


@dataclass
class Instance:
    """One `python -m app serve` on its own port; restartable on the same port."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"],
                cwd=ROOT,
                env={**self.env, "PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"instance {self.name} exited; see {self.log_path}")
        try:
            return httpx.get(f"{self.base}/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(self.ready, timeout, f"instance {self.name} ready", step=0.1)

    def stop(self, timeout: float = 60) -> int:
        if self.process is None:
            return 0
        code = stop_process(self.process, timeout)
        self.process = None
        return code


@dataclass
class Cluster:
    """nginx + instances (+ PgBouncer) in a temporary folder; `start()` then `stop()`."""

    database_url: str
    redis_url: str = DEFAULT_REDIS_URL
    instances: int = 2
    workers: int = 2
    pool_max: int = 5
    pgbouncer: bool = True
    pgbouncer_pool_size: int = 10
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    members: list[Instance] = field(default_factory=list)
    lb_port: int = 0
    pgbouncer_port: int = 0
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    _nginx: subprocess.Popen[bytes] | None = None
    _pgbouncer: subprocess.Popen[bytes] | None = None
    _own_workdir: bool = False

    @property
    def base(self) -> str:
        """The load balancer's URL: what clients use."""
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def app_database_url(self) -> str:
        """The instances' DATABASE_URL: PgBouncer's port, or PostgreSQL's."""
        if self.pgbouncer:
            return with_port(self.database_url, self.pgbouncer_port)
        return self.database_url

    @property
    def folder(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("the cluster has not been started")
        return self.workdir

    @property
    def nginx_access_log(self) -> Path:
        return self.folder / "nginx-access.log"

    def start(self) -> Cluster:
        ensure_packages("nginx", *(["pgbouncer"] if self.pgbouncer else []))
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="items-cluster-"))
            self._own_workdir = True
        # nginx workers (nobody) and pgbouncer (postgres, when started as root) read and
        # write here.
        self.workdir.chmod(0o755)
        try:
            if self.pgbouncer:
                self._start_pgbouncer()
            self.members = [
                Instance(
                    name=chr(ord("a") + n),
                    port=free_port(),
                    env=self.instance_env(),
                    log_path=self.workdir / f"instance-{chr(ord('a') + n)}.log",
                )
                for n in range(self.instances)
            ]
            for member in self.members:
                member.start()
            for member in self.members:
                member.wait_ready()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def instance_env(self) -> dict[str, str]:
        """Production settings, the same for every instance (the same image, N replicas)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_", "DB_", "WORKERS", "PORT", "HOST", "PROMETHEUS"))
        }
        env.update(
            ENV="production",
            HOST="127.0.0.1",
            WORKERS=str(self.workers),
            DATABASE_URL=self.app_database_url,
            DATABASE_DIRECT_URL=self.database_url,
            DB_PGBOUNCER="true" if self.pgbouncer else "false",
            DB_POOL_MIN="1",
            DB_POOL_MAX=str(self.pool_max),
            REDIS_URL=self.redis_url,
            JWT_SECRET=self.jwt_secret,
            TRUSTED_PROXIES=PROXY_ADDR,
            # nginx sees no readiness: the drain it relies on is the refused connection after
            # SHUTDOWN_DELAY (app/ops/lifecycle.py), which it retries on the next instance.
            SHUTDOWN_DELAY="1",
            GRACEFUL_SHUTDOWN_TIMEOUT="10",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
        )
        env.update(self.env)
        return env

    def _start_pgbouncer(self) -> None:
        folder = self.folder / "pgbouncer"
        folder.mkdir(exist_ok=True)
        user = urlsplit(self.database_url).username or "postgres"
        (folder / "userlist.txt").write_text(f'"{user}" ""\n"postgres" ""\n')
        self.pgbouncer_port = free_port()
        pg = urlsplit(self.database_url)
        user_line = ""
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; it switches to this user after start-up.
            import pwd

            entry = pwd.getpwnam("postgres")
            for path in (folder, folder / "userlist.txt"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            user_line = "user = postgres"
        config = render(
            "pgbouncer.ini.in",
            folder / "pgbouncer.ini",
            DIR=str(folder),
            PORT=str(self.pgbouncer_port),
            PG_HOST=pg.hostname or "127.0.0.1",
            PG_PORT=str(pg.port or 5432),
            USER_LINE=user_line,
            POOL_SIZE=str(self.pgbouncer_pool_size),
            MAX_CLIENT_CONN=str(max(100, 2 * self.instances * self.workers * self.pool_max)),
        )
        with (folder / "stderr.log").open("ab") as err:
            self._pgbouncer = subprocess.Popen(
                [PACKAGES["pgbouncer"], str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        wait_for(lambda: port_open(self.pgbouncer_port), 15, "pgbouncer listening")

    def _start_nginx(self) -> None:
        (self.folder / "nginx-tmp").mkdir(exist_ok=True)
        self.lb_port = free_port()
        servers = "\n".join(
            f"        server {member.upstream} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;"
            for member in self.members
        )
        config = render(
            "nginx.conf.in",
            self.workdir / "nginx.conf",
            DIR=str(self.workdir),
            PORT=str(self.lb_port),
            SERVERS=servers,
            PROXY_ADDR=PROXY_ADDR,
        )
        subprocess.run(
            [PACKAGES["nginx"], "-t", "-q", "-p", str(self.workdir), "-c", str(config)],
            check=True,
            timeout=30,
        )
        with (self.workdir / "nginx-stderr.log").open("ab") as err:
            self._nginx = subprocess.Popen(
                [PACKAGES["nginx"], "-p", str(self.workdir), "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        wait_for(lambda: port_open(self.lb_port), 15, "nginx listening")

    def restart(self, member: Instance, on_event: Callable[[str], None] | None = None) -> int:
        """SIGTERM one instance, wait for its exit, start it again, wait until it is ready.

        Afterwards waits FAIL_TIMEOUT_S more, so that nginx has put it back in rotation
        before the caller takes the next one down (Kubernetes: `minReadySeconds`).
        """
        say = on_event or (lambda event: log.info("%s", event))
        say(f"{member.name}: SIGTERM")
        code = member.stop()
        say(f"{member.name}: exited {code}")
        member.start()
        say(f"{member.name}: started")
        member.wait_ready()
        say(f"{member.name}: ready")
        time.sleep(FAIL_TIMEOUT_S + 0.5)
        say(f"{member.name}: back in rotation")
        return code

    def rolling_restart(self, on_event: Callable[[str], None] | None = None) -> list[int]:
        return [self.restart(member, on_event) for member in self.members]

    def stop(self) -> None:
        if self._nginx is not None:
            # nginx: SIGQUIT is its graceful stop; SIGTERM its fast one.
            self._nginx.send_signal(signal.SIGQUIT)
            try:
                self._nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop_process(self._nginx, 5)
            self._nginx = None
        for member in self.members:
            member.stop()
        if self._pgbouncer is not None:
            # SIGINT: PgBouncer's safe shutdown (waits for clients' transactions).
            self._pgbouncer.send_signal(signal.SIGINT)
            try:
                self._pgbouncer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop_process(self._pgbouncer, 5)
            self._pgbouncer = None
        if self._own_workdir and self.workdir is not None and not os.environ.get("KEEP_CLUSTER"):
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(**options: object) -> Iterator[Cluster]:
    cluster = Cluster(**options)  # type: ignore[arg-type]
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def _prepare_database(url: str) -> None:
    """Create the database when missing; `python -m app migrate` brings it to head."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def migrate(database_url: str) -> None:
    asyncio.run(_prepare_database(database_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_"))}
    env.update(DATABASE_URL=database_url, ENV="development")
    subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=env, check=True)


def with_pgbouncer(database_url: str, command: list[str]) -> int:
    """Run `command` with TEST_DATABASE_URL pointing at a private PgBouncer (transaction
    pooling) in front of `database_url`, and DB_PGBOUNCER=true: e.g. the API test suite."""
    ensure_packages("pgbouncer")
    cluster = Cluster(database_url=database_url, instances=0)
    cluster.workdir = Path(tempfile.mkdtemp(prefix="items-pgbouncer-"))
    cluster.workdir.chmod(0o755)
    cluster._own_workdir = True  # noqa: SLF001 (the cluster's own helper, same module)
    try:
        cluster._start_pgbouncer()  # noqa: SLF001 (the cluster's own helper, same module)
        env = {
            **os.environ,
            "TEST_DATABASE_URL": with_port(database_url, cluster.pgbouncer_port),
            "DB_PGBOUNCER": "true",
            # The suites' apps have no direct URL: their cache (LISTEN) stays off.
            "CACHE_ENABLED": "false",
        }
        log.info("pgbouncer on 127.0.0.1:%d: %s", cluster.pgbouncer_port, " ".join(command))
        return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    through = sub.add_parser(
        "with-pgbouncer", help="run a command (after --) with TEST_DATABASE_URL via PgBouncer"
    )
    through.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    )
    through.add_argument("argv", nargs=argparse.REMAINDER)
    up = sub.add_parser("up", help="run the cluster until interrupted (SIGHUP: rolling restart)")
    up.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    up.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    up.add_argument("--instances", type=int, default=2)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--pool-max", type=int, default=5, help="DB_POOL_MAX per worker")
    up.add_argument("--no-pgbouncer", dest="pgbouncer", action="store_false")
    up.add_argument("--pgbouncer-pool-size", type=int, default=10)
    up.add_argument("--env", "-e", action="append", default=[], help="KEY=VALUE for instances")
    up.add_argument("--workdir", type=Path, help="keep config and logs here (default: temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "with-pgbouncer":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return with_pgbouncer(args.database_url, command or [sys.executable, "-m", "pytest"])

    migrate(args.database_url)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(
        database_url=args.database_url,
        redis_url=args.redis_url,
        instances=args.instances,
        workers=args.workers,
        pool_max=args.pool_max,
        pgbouncer=args.pgbouncer,
        pgbouncer_pool_size=args.pgbouncer_pool_size,
        env=dict(item.split("=", 1) for item in args.env),
        workdir=args.workdir.resolve() if args.workdir else None,
    )
    restart_wanted = False
    stop_wanted = False

    def on_hup(_signum: int, _frame: object) -> None:
        nonlocal restart_wanted
        restart_wanted = True

    def on_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_wanted
        stop_wanted = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    cluster.start()
    try:
        log.info("load balancer: %s", cluster.base)
        for member in cluster.members:
            log.info("instance %s: %s (log %s)", member.name, member.base, member.log_path)
        if cluster.pgbouncer:
            log.info("pgbouncer: 127.0.0.1:%d (transaction pooling)", cluster.pgbouncer_port)
        log.info(
            "folder: %s; kill -HUP %d: rolling restart; Ctrl-C: stop", cluster.workdir, os.getpid()
        )
        while not stop_wanted:
            time.sleep(0.2)
            if restart_wanted:
                restart_wanted = False
                cluster.rolling_restart()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
