"""Command line: `python -m app serve | migrate | gen-cert | create-user | revoke-tokens |
disable-user | enable-user | set-scopes`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from app.auth.users import UserError
from app.ops.logs import configure_logging
from app.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

T = TypeVar("T")

log = logging.getLogger("app")


def _with_database(settings: Settings) -> Settings:
    """Point settings at the embedded PostgreSQL when DATABASE_URL is empty."""
    if not settings.embedded_db:
        return settings
    from app.db import embedded

    url = embedded.start(settings.DATA_DIR)
    return settings.model_copy(update={"DATABASE_URL": url})


def migrate(settings: Settings) -> int:
    from app.db.migrate import migrate as apply_migrations

    applied = asyncio.run(apply_migrations(_with_database(settings)))
    log.info("migrations applied: %s", ", ".join(applied) if applied else "none (at head)")
    return 0


def serve(settings: Settings) -> int:
    import shutil

    from app.ops.lifecycle import prepare_metrics_dir

    # Before anything imports prometheus_client (it picks multiprocess mode at import time);
    # workers inherit the variable.
    metrics_dir = prepare_metrics_dir(settings)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        return _serve(settings)
    finally:
        if settings.METRICS_DIR is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(settings: Settings) -> int:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from app.db.capacity import check_capacity
    from app.db.migrate import migrate as apply_migrations
    from app.factory import with_redirect_app, worker_app
    from app.ops import tls

    if settings.tls_enabled:
        # A missing, mismatched or expired certificate stops start-up here, naming the file.
        cert = tls.check_files(settings)
        log.info("TLS on: %s, valid %d more days", settings.tls_cert, cert.days_left())
        os.environ[tls.NOT_AFTER_ENV] = cert.not_after.isoformat()  # for the workers' readiness
    if settings.embedded_db:
        settings = _with_database(settings)
        # The embedded database is private to this process: bring it to head before serving.
        applied = asyncio.run(apply_migrations(settings))
        log.info("migrations applied: %s", ", ".join(applied) if applied else "none (at head)")
    asyncio.run(check_capacity(settings))
    if settings.dev_user:
        from app.auth import dev_user

        asyncio.run(dev_user.ensure(settings))

    # Each spawned worker builds its app through this factory, logging configured first.
    loader = AppLoader(factory=partial(with_redirect_app, worker_app, settings))
    app = loader.load()
    app.prepare(
        host=settings.HOST,
        port=settings.PORT,
        workers=settings.WORKERS,
        # Sanic's access log is replaced by app.access (ACCESS_LOG, app/observability.py).
        access_log=False,
        single_process=False,
        auto_reload=False,
        motd=False,
        ssl=tls.server_ssl(settings),
    )
    tls.prepare_redirect(settings)
    if _StopRequest.signalled:
        return 0  # a stop signal whose exit was swallowed: never start the workers
    Sanic.serve(primary=app, app_loader=loader)
    return 0


def gen_cert(settings: Settings, args: argparse.Namespace) -> int:
    from app.ops.tls import generate_dev_cert

    del settings
    try:
        cert, key = generate_dev_cert(Path(args.out), force=args.force)
    except FileExistsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    log.info("wrote %s and %s (development only: self-signed for localhost)", cert, key)
    return 0


def _read_password() -> str:
    """Prompted on a terminal; else one line from stdin, so scripts can pipe it in."""
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise UserError("password: the two entries differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _on_database(settings: Settings, work: Callable[[BaseDBAsyncClient], Awaitable[T]]) -> T:
    """Run `work` with the ORM on one direct connection to the database (the user commands)."""
    from app.db.wiring import orm_session

    async def run() -> T:
        async with orm_session(_with_database(settings)) as db:
            return await work(db)

    return asyncio.run(run())


def create_user(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import users

    scopes = [scope for part in args.scopes for scope in part.replace(",", " ").split()]
    try:
        users.check_new_user(args.username, "x" * users.MIN_PASSWORD_LENGTH, scopes)
        password = _read_password()
        user = _on_database(
            settings, lambda db: users.create_user(db, args.username, password, scopes)
        )
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    log.info("created user %s (id %d, scopes: %s)", user.username, user.id, " ".join(user.scopes))
    return 0


def revoke_tokens(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import users

    try:
        revoked = _on_database(settings, lambda db: users.revoke_user_tokens(db, args.username))
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    log.info(
        "revoked %d refresh tokens of %s; its access tokens stop working within 1 s",
        revoked,
        args.username,
    )
    return 0


def change_user(settings: Settings, args: argparse.Namespace) -> int:
    """`disable-user`, `enable-user`, `set-scopes`: the user's access tokens stop working
    within 1 s on every worker (app/token_cache.py); disabling also ends every login."""
    from app.auth import users

    async def change(db: BaseDBAsyncClient) -> str:
        if args.command == "set-scopes":
            scopes = [scope for part in args.scopes for scope in part.replace(",", " ").split()]
            kept = await users.set_scopes(db, args.username, scopes)
            return f"scopes of {args.username}: {' '.join(kept) or '(none)'}"
        active = args.command == "enable-user"
        await users.set_active(db, args.username, active=active)
        return f"{'enabled' if active else 'disabled'} {args.username}"

    try:
        done = _on_database(settings, change)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    log.info("%s; access tokens issued before stop working within 1 s", done)
    return 0


def token(settings: Settings) -> int:
    """The development user's access token on stdout, alone (`TOKEN=$(make -s token)`)."""
    from app.auth.dev_user import DevUserError, fetch_token

    try:
        access_token = fetch_token(settings)
    except DevUserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(access_token + "\n")
    return 0


COMMANDS = {"serve": serve, "migrate": migrate, "token": token}
# Commands that also take their parsed arguments.
ARG_COMMANDS = {
    "gen-cert": gen_cert,
    "create-user": create_user,
    "revoke-tokens": revoke_tokens,
    "disable-user": change_user,
    "enable-user": change_user,
    "set-scopes": change_user,
}


class _StopRequest:
    """Whether SIGTERM/SIGINT came before the server's own handlers took over."""

    signalled = False


def _stop_before_serving(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    # Until the server's own handlers take over, SIGTERM/SIGINT end start-up cleanly (exit 0).
    # The exit is raised wherever the main thread happens to be, and Python ignores it there
    # when that is a weakref callback or a finaliser ("Exception ignored in ..."): start-up
    # also looks at the flag before it hands over to the server.
    _StopRequest.signalled = True
    log.info("%s before serving: stopping", signal.Signals(signum).name)
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_before_serving)
    signal.signal(signal.SIGINT, _stop_before_serving)
    parser = argparse.ArgumentParser(prog="python -m app", description="The items service.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the API with WORKERS worker processes")
    sub.add_parser("migrate", help="apply database migrations, then exit")
    sub.add_parser("token", help="log the development user in; its access token on stdout")
    cert = sub.add_parser("gen-cert", help="write a development TLS key and certificate")
    cert.add_argument("--out", default="certs", help="folder for fullchain.pem and privkey.pem")
    cert.add_argument("--force", action="store_true", help="replace existing files")
    user = sub.add_parser(
        "create-user", help="create a user; the password is prompted for, or read from stdin"
    )
    user.add_argument("username")
    user.add_argument(
        "--scopes", action="append", default=[], help="e.g. items:write (repeat or comma-separate)"
    )
    revoke = sub.add_parser("revoke-tokens", help="revoke every token of a user")
    revoke.add_argument("username")
    for name, help_text in (
        ("disable-user", "disable a user: no login, and every token revoked"),
        ("enable-user", "let a disabled user log in again"),
    ):
        sub.add_parser(name, help=help_text).add_argument("username")
    scopes = sub.add_parser("set-scopes", help="replace a user's scopes; old tokens revoked")
    scopes.add_argument("username")
    scopes.add_argument(
        "--scopes", action="append", default=[], help="e.g. items:read (repeat or comma-separate)"
    )
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    configure_logging(settings)
    try:
        if args.command in ARG_COMMANDS:
            return ARG_COMMANDS[args.command](settings, args)
        return COMMANDS[args.command](settings)
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
