"""A PostgreSQL server for the test session: $MDMSIM_TEST_POSTGRES if set, else a throwaway one of our own.

The throwaway server is initdb'd in a temporary directory and listens on 127.0.0.1 only, on a free port,
started on first use and stopped (its directory removed) when the session ends. As root it runs as the
`postgres` system user (PostgreSQL refuses root). Each test gets a fresh schema. Where no server can be had the
tests skip with the reason, except under CI=1, where they fail: CI must never pass by skipping PostgreSQL.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

URL_VARIABLE = "MDMSIM_TEST_POSTGRES"
_USER = "mdmsim"  # the throwaway cluster's superuser
_START_TIMEOUT = 60  # seconds; initdb and the first start are slow on a loaded 2-core machine


class _Server:
    """The session's server (the URL of one given by $MDMSIM_TEST_POSTGRES, or our own), and its schemas."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.failure: str | None = None
        self._data: Path | None = None
        self._run_as: list[str] = []
        self._bin: Path | None = None
        self._schemas: list[str] = []
        self._numbers = itertools.count()

    def ensure(self) -> str:
        if self.url is None and self.failure is None:
            try:
                import psycopg  # noqa: F401  # the driver first: without it no server helps

                self.url = os.environ.get(URL_VARIABLE) or self._start()
            except Exception as exc:  # any reason at all: it becomes the skip's (or CI's failure's) reason
                self.failure = f"no PostgreSQL server for the tests: {exc}"
        if self.url is None:
            if os.environ.get("CI"):
                pytest.fail(f"{self.failure} (CI=1: PostgreSQL tests must run, not skip)", pytrace=False)
            pytest.skip(self.failure or "no PostgreSQL")
        return self.url

    def new_schema(self) -> str:
        self.ensure()
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        self._schemas.append(name)
        return name

    def stop(self) -> None:
        if self._data is None:
            self._drop_schemas()
            return
        data, self._data = self._data, None
        subprocess.run([*self._run_as, str(self._tool("pg_ctl")), "stop", "-D", str(data / "db"), "-m", "immediate",
                        "-w"], capture_output=True, timeout=_START_TIMEOUT, check=False)  # fmt: skip
        shutil.rmtree(data, ignore_errors=True)

    def _drop_schemas(self) -> None:
        """On a server we were given, leave nothing behind."""
        if not self._schemas or self.url is None:
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            for name in self._schemas:
                db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self._schemas.clear()

    def _start(self) -> str:
        self._bin = _find_bin()
        data = Path(tempfile.mkdtemp(prefix="mdmsim-pg-"))
        self._data = data
        if os.geteuid() == 0:
            user = _unprivileged_user()
            self._run_as = ["runuser", "-u", user, "--"]
            os.chmod(data, 0o700)
            shutil.chown(data, user)
        init = [*self._run_as, str(self._tool("initdb")), "-D", str(data / "db"), "-U", _USER, "--auth=trust",
                "--no-sync", "--locale=C", "--encoding=UTF8"]  # fmt: skip
        _run(init, "initdb")
        for attempt in range(3):  # the free port may be taken between our probe and the server's bind
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")  # fmt: skip
            start = [*self._run_as, str(self._tool("pg_ctl")), "start", "-D", str(data / "db"), "-w",
                     "-t", str(_START_TIMEOUT), "-l", str(data / "server.log"), "-o", options]  # fmt: skip
            try:
                _run(start, "pg_ctl start")
                break
            except RuntimeError as exc:
                if attempt == 2:
                    log = data / "server.log"
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"{exc}\n{tail}") from None
        return f"postgresql://{_USER}@127.0.0.1:{port}/postgres"

    def _tool(self, name: str) -> Path:
        assert self._bin is not None
        return self._bin / name


def _find_bin() -> Path:
    """The directory of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    raise RuntimeError("initdb not found (install PostgreSQL, e.g. Debian's `postgresql` package)")


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root, and runuser (to start PostgreSQL as another user) is missing")
        return name
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=_START_TIMEOUT * 2, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")


SERVER = _Server()


def postgres_storage():
    """A `PostgresStorage` on a fresh schema of the session's server (skips or fails as the module says)."""
    from mdm_server.storage.postgres import PostgresStorage

    return PostgresStorage(SERVER.ensure(), schema=SERVER.new_schema())


def documents_opener(backend: str, tmp_path: Path):
    """A function opening the same admin document store each time it is called: SQLite or PostgreSQL."""
    if backend == "sqlite":
        from mdm_server.admin.docstore import DocumentStore

        return lambda: DocumentStore(tmp_path / "admin.sqlite3")
    from mdm_server.admin.docstore_postgres import PostgresDocumentStore

    url, schema = SERVER.ensure(), SERVER.new_schema()
    return lambda: PostgresDocumentStore(url, schema=schema)
