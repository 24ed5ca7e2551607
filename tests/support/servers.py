"""Real PostgreSQL and Redis server processes on loopback ports, for the store and cache tests.

They come from the OS packages (`make services`, hack/install-services.sh: Debian's postgresql
and redis-server). A missing server fails the test that needs it, with the command to fix it:
the store tests are the point of the suite, so they never skip. As root (CI), initdb and the
server run as the `postgres` user, as PostgreSQL refuses to run as root.

Each server can be stopped, killed and started again on the same port and data directory, so a
test can take the store or the cache away in the middle of a run and give it back.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port

FIX = "run `make services` (hack/install-services.sh installs Debian's postgresql and redis-server)"


def postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        # Debian keeps the server binaries out of PATH, one directory per major version.
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = candidates[-1] if candidates else None
    if found is None:
        pytest.fail(f"PostgreSQL's {name} not found: {FIX}", pytrace=False)
    return found


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _signal_group(process: subprocess.Popen | None, signum: int) -> None:
    """Signal a server and its children (it was started in a session of its own) and wait."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
    process.wait(30)


def as_postgres_user() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a non-root user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """A throw-away PostgreSQL cluster: superuser `postgres` with a password, one database."""

    user = "postgres"
    password = "test-only-password"  # noqa: S105 - a loopback server the test owns
    dbname = "evals"

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="evals-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen | None = None
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        password_file = self.root / "pwfile"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        subprocess.run(
            [
                *as_postgres_user(),
                postgres_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self.start()
        subprocess.run(
            [
                postgres_bin("psql"),
                self.dsn(dbname="postgres"),
                "-q",
                "-c",
                f"CREATE DATABASE {self.dbname}",
            ],
            check=True,
            capture_output=True,
        )

    def dsn(self, *, dbname: str | None = None, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                *as_postgres_user(),
                postgres_bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",  # TCP only: no lock file a killed server leaves
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, self.process, "postgres")

    def stop(self) -> None:
        """A fast shutdown (SIGINT): what a pod's termination does to the server."""
        _signal_group(self.process, signal.SIGINT)

    def kill(self) -> None:
        """The server dies: SIGKILL to the postmaster and every backend (one process group)."""
        _signal_group(self.process, signal.SIGKILL)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A throw-away Redis server with a password and no persistence, as the managed cache."""

    password = "test-only-cache-password"  # noqa: S105 - a loopback server the test owns

    def __init__(self, *, maxmemory: str = "64mb") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(f"redis-server not found: {FIX}", pytrace=False)
        self.binary = binary
        self.port = free_port()
        self.maxmemory = maxmemory
        self.root = Path(tempfile.mkdtemp(prefix="evals-redis-"))
        self.process: subprocess.Popen | None = None
        self.start()

    def url(self, *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"redis://:{secret}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                self.password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory",
                self.maxmemory,
                "--maxmemory-policy",
                "allkeys-lru",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, self.process, "redis-server")

    def kill(self) -> None:
        _signal_group(self.process, signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def redis_server(**kwargs) -> Iterator[RedisServer]:
    server = RedisServer(**kwargs)
    try:
        yield server
    finally:
        server.close()
