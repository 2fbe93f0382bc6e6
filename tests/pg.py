"""Throwaway PostgreSQL clusters for Cueline's test suite and benchmarks.

This module is deliberately standard-library only so that it can be imported
from ``conftest.py``, from benchmark scripts, or run directly::

    python tests/pg.py            # start a cluster, print its URL, wait for Ctrl-C

A :class:`PostgresCluster` owns one private temporary directory that holds the
data directory, the server log and (normally) the unix socket.  The server
listens on 127.0.0.1 only, on a TCP port picked when the cluster is first
started, and is tuned for speed rather than durability (``fsync=off`` and
friends), because its contents are thrown away anyway.

Typical use::

    with PostgresCluster() as cluster:
        url = cluster.create_database("cueline_test")
        ...  # hand ``url`` to SQLAlchemy

Nothing is registered globally (no ``atexit`` hooks, no signal handlers
outside ``__main__``): whoever creates a cluster is responsible for calling
:meth:`PostgresCluster.cleanup` (or using it as a context manager).

Running as root (as CI does): ``initdb``, ``pg_ctl`` and ``postgres`` refuse to
run as root, so in that case they are run as the ``postgres`` system user via
``runuser`` and the cluster's directories are chowned to that user.  Client
tools (``psql``) keep running as the current user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

__all__ = ["PostgresUnavailable", "PostgresCluster", "find_bindir"]

#: Environment variable that overrides bin directory discovery.
BINDIR_ENV = "CUELINE_PG_BINDIR"
#: Debian package whose file list is searched for ``initdb``.
DEBIAN_PACKAGE = "postgresql-15"
#: System account used for the server processes when we are root.
SERVER_USER = "postgres"
#: Database superuser created by initdb (trust authentication, no password).
SUPERUSER = "postgres"
LISTEN_HOST = "127.0.0.1"

# Timeouts (seconds) for every subprocess we run.  They are generous because
# CI machines can be slow, but finite so that a wedged server fails the run
# instead of hanging it.
INITDB_TIMEOUT = 120
START_TIMEOUT = 60  # passed to ``pg_ctl -t``; the subprocess gets a bit more
STOP_TIMEOUT = 60
CLIENT_TIMEOUT = 30
LOOKUP_TIMEOUT = 15

#: How many lines of the server log to put into exception messages.
LOG_TAIL_LINES = 30

#: Binaries the cluster cannot work without.
_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")

# Linux limits a unix socket path (sun_path) to 107 bytes plus NUL.
_MAX_SOCKET_PATH = 107

# Name of our settings file inside the data directory; postgresql.conf
# includes it so that restarts and hand-run servers pick up the same settings.
_CONF_NAME = "cueline.conf"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries are missing or the cluster could not be started.

    The message explains why and, where there is one, ends with the tail of
    the relevant command output / server log.
    """


# --------------------------------------------------------------------------
# Locating the binaries
# --------------------------------------------------------------------------


def _has_server_binaries(bindir: str) -> bool:
    """Return True if *bindir* contains executable initdb, pg_ctl and postgres."""
    return all(
        os.access(os.path.join(bindir, name), os.X_OK) for name in _REQUIRED_BINARIES
    )


def _version_key(initdb_path: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin/initdb``.

    Compares versions numerically so that 15 sorts above 9.6; unparsable
    names sort last.
    """
    version = os.path.basename(os.path.dirname(os.path.dirname(initdb_path)))
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> str | None:
    """Return the directory holding the PostgreSQL server binaries, or None.

    Lookup order:

    1. ``$CUELINE_PG_BINDIR`` if set.  If it is set but does not contain the
       server binaries, None is returned rather than silently falling back,
       so a typo is noticed instead of testing against some other version.
    2. The file list of the Debian ``postgresql-15`` package
       (``dpkg -L``), which works even though Debian keeps these binaries
       off ``PATH``.  ``pg_config --bindir`` is not used: it belongs to the
       client/dev packages and can point at a different version.
    3. ``/usr/lib/postgresql/*/bin``, newest version first.
    """
    override = os.environ.get(BINDIR_ENV)
    if override:
        return override if _has_server_binaries(override) else None

    try:
        listing = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LOOKUP_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        listing = None  # no dpkg (non-Debian) or it hung: use the glob below
    if listing is not None and listing.returncode == 0:
        for line in listing.stdout.splitlines():
            line = line.strip()
            if line.endswith("bin/initdb"):
                bindir = os.path.dirname(line)
                if _has_server_binaries(bindir):
                    return bindir

    for initdb in sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True
    ):
        bindir = os.path.dirname(initdb)
        if _has_server_binaries(bindir):
            return bindir
    return None


def _missing_binaries_message() -> str:
    """Explain why find_bindir() came back empty."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        return (
            f"{BINDIR_ENV}={override!r} does not contain executable "
            f"{', '.join(_REQUIRED_BINARIES)}"
        )
    return (
        "PostgreSQL server binaries not found (looked in `dpkg -L "
        f"{DEBIAN_PACKAGE}` and /usr/lib/postgresql/*/bin); install "
        f"{DEBIAN_PACKAGE} or set {BINDIR_ENV}"
    )


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _free_port() -> int:
    """Ask the kernel for a currently unused TCP port on the loopback address.

    There is an unavoidable race between closing this socket and postgres
    binding the port; start() retries with a new port if it loses it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN_HOST, 0))
        return sock.getsockname()[1]


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last *lines* lines of *text*."""
    return "\n".join(text.splitlines()[-lines:])


def _conf_quote(value: str) -> str:
    """Quote *value* as a postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _pid_alive(pid: int) -> bool:
    """Return True if process *pid* exists and is not a zombie.

    The postmaster is re-parented to PID 1 once pg_ctl exits; in containers
    PID 1 does not always reap children, so a killed postmaster can linger
    as a zombie.  Treat that as dead.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but belongs to another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Format: "pid (comm) state ..."; comm may contain spaces/parens.
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (non-Linux): trust kill(0)


# --------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------


class PostgresCluster:
    """A private PostgreSQL server living in a temporary directory.

    Attributes (valid after :meth:`start`):

    * ``port`` -- TCP port on 127.0.0.1 (0 until the first start).
    * ``root`` -- the cluster's private temp dir (removed by cleanup()).
    * ``data_dir``, ``socket_dir``, ``log_path`` -- paths inside it.
    * ``bindir`` -- where the server binaries were found (None if missing).
    """

    def __init__(self, base_dir: str | None = None):
        """Prepare (but do not start) a cluster.

        *base_dir* is the directory in which the cluster's private temp dir is
        created; by default the system temp dir is used.  Only that private
        dir is ever removed, never *base_dir* itself.  When running as root,
        every parent of *base_dir* must be searchable by the ``postgres``
        user.
        """
        self.base_dir = base_dir
        self.bindir = find_bindir()
        self.port: int = 0
        self.root: str | None = None
        self.data_dir: str | None = None
        self.socket_dir: str | None = None
        self.log_path: str | None = None
        # Socket dir created outside ``root`` when ``root`` is too deep for
        # a unix socket path; removed by cleanup() as well.
        self._extra_socket_dir: str | None = None
        # Once the server has run on ``port`` we must keep that port
        # (restart() promises it), so no more re-picking after that.
        self._port_pinned = False
        self._server_ids = self._lookup_server_user()
        self._env = self._build_env()

    # -- public API -------------------------------------------------------

    def start(self) -> "PostgresCluster":
        """Initialise the cluster if needed and start the server.

        Runs ``initdb`` (trust auth, superuser ``postgres``, UTF8, C locale,
        ``--no-sync``) on first use, then ``pg_ctl start -w``.  Calling it on
        a running cluster is a no-op.  Returns ``self`` for chaining.

        Raises :class:`PostgresUnavailable` (with the log tail) on failure;
        call :meth:`cleanup` afterwards to remove the temp dir.
        """
        if self._is_running():
            return self
        if self.bindir is None:
            raise PostgresUnavailable(_missing_binaries_message())
        self._prepare_dirs()
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            self._initdb()

        # A port picked by _free_port() can be grabbed by someone else before
        # postgres binds it; retry a few times with a fresh port, but only
        # while we are still free to choose (not on restart()).
        attempts = 1 if self._port_pinned else 3
        for attempt in range(1, attempts + 1):
            if not self._port_pinned:
                self.port = _free_port()
            self._write_conf()
            log_offset = self._log_size()
            rc, output = self._run(
                [
                    self._bin("pg_ctl"), "start", "-w",
                    "-t", str(START_TIMEOUT),
                    "-D", self.data_dir,
                    "-l", self.log_path,
                ],
                timeout=START_TIMEOUT + 30,
                as_server=True,
            )
            if rc == 0:
                self._port_pinned = True
                return self
            # pg_ctl may have given up while the postmaster lives on (e.g.
            # slow recovery); do not leave it running behind our back.
            self._kill_server()
            new_log = self._read_log(log_offset)
            port_clash = (
                "could not bind" in new_log or "Address already in use" in new_log
            )
            if port_clash and attempt < attempts:
                continue
            raise PostgresUnavailable(
                f"pg_ctl start failed (exit {rc}) for {self.data_dir} on port "
                f"{self.port}\n--- pg_ctl output ---\n{_tail(output)}"
                f"\n--- server log tail ---\n{_tail(self._read_log())}"
            )
        raise AssertionError("unreachable")  # loop always returns or raises

    def stop(self, mode: str = "fast") -> None:
        """Stop the server with ``pg_ctl stop -m <mode>`` and wait for it.

        *mode* is ``smart``, ``fast`` or ``immediate``.  Idempotent: does
        nothing if the server is not running (or was never started).
        Raises RuntimeError if the server is still running afterwards.
        """
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"invalid shutdown mode {mode!r}")
        if not self._is_running():
            return
        rc, output = self._run(
            [
                self._bin("pg_ctl"), "stop", "-w",
                "-t", str(STOP_TIMEOUT),
                "-m", mode,
                "-D", self.data_dir,
            ],
            timeout=STOP_TIMEOUT + 30,
            as_server=True,
        )
        # pg_ctl fails when the pid file is stale (server already gone);
        # what matters is whether the server is down now.
        if rc != 0 and self._is_running():
            raise RuntimeError(
                f"pg_ctl stop -m {mode} failed (exit {rc})\n"
                f"--- pg_ctl output ---\n{_tail(output)}"
                f"\n--- server log tail ---\n{_tail(self._read_log())}"
            )

    def restart(self) -> None:
        """Stop the server, then start it again on the same port and data dir.

        Existing connections are broken, data survives.  Meant for fault
        tests ("database went away") and for applying config changes.
        """
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server (forcefully if needed) and delete its temp dirs.

        Safe to call more than once, before start() and after a failed start.
        """
        try:
            self._kill_server()
        finally:
            for path in (self.root, self._extra_socket_dir):
                if path:
                    shutil.rmtree(path, ignore_errors=True)
            self.root = self.data_dir = self.socket_dir = self.log_path = None
            self._extra_socket_dir = None

    def create_database(self, name: str) -> str:
        """Create database *name* and return its SQLAlchemy URL.

        Uses the ``psql`` binary from the bin directory when there is one,
        otherwise psycopg if it can be imported.  Raises RuntimeError on
        failure (e.g. the database already exists).
        """
        if not name or "\0" in name:
            raise ValueError("database name must be a non-empty string without NUL")
        if len(name.encode("utf-8")) > 63:
            # Postgres would silently truncate it and url() would then point
            # at a database that does not exist.
            raise ValueError(f"database name too long (max 63 bytes): {name!r}")
        if not self._is_running():
            raise RuntimeError("cluster is not running; call start() first")

        quoted = '"' + name.replace('"', '""') + '"'
        statement = f"CREATE DATABASE {quoted}"
        psql = self._bin("psql") if self.bindir else None
        if psql and os.access(psql, os.X_OK):
            rc, output = self._run(
                [
                    psql, "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", LISTEN_HOST, "-p", str(self.port),
                    "-U", SUPERUSER, "-d", "postgres",
                    "-c", statement,
                ],
                timeout=CLIENT_TIMEOUT,
            )
            if rc != 0:
                raise RuntimeError(f"{statement} failed (exit {rc}): {_tail(output)}")
        else:
            try:
                import psycopg  # optional; only needed without psql
            except ImportError:
                raise RuntimeError(
                    "cannot create database: no psql in "
                    f"{self.bindir} and psycopg is not importable"
                ) from None
            try:
                with psycopg.connect(
                    host=LISTEN_HOST,
                    port=self.port,
                    user=SUPERUSER,
                    dbname="postgres",
                    autocommit=True,  # CREATE DATABASE cannot run in a transaction
                    connect_timeout=CLIENT_TIMEOUT,
                ) as conn:
                    conn.execute(statement)
            except psycopg.Error as exc:
                raise RuntimeError(f"{statement} failed: {exc}") from exc
        return self.url(name)

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) for *dbname* on this cluster."""
        if not self.port:
            raise RuntimeError("cluster has no port yet; call start() first")
        return (
            f"postgresql+psycopg://{SUPERUSER}@{LISTEN_HOST}:{self.port}/"
            f"{urllib.parse.quote(dbname, safe='')}"
        )

    def __enter__(self) -> "PostgresCluster":
        # __exit__ is not called when __enter__ raises, so clean up here or
        # a failed start would leak its temp dir.
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<PostgresCluster port={self.port} data_dir={self.data_dir!r}>"

    # -- internals --------------------------------------------------------

    @staticmethod
    def _lookup_server_user() -> tuple[int, int] | None:
        """(uid, gid) to run server binaries as, or None for "as ourselves".

        The server binaries refuse to run as root, so when we are root we
        switch to the ``postgres`` system account that the Debian package
        creates.
        """
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (-1, -1)  # reported by start(); keeps __init__ side-effect free
        return (entry.pw_uid, entry.pw_gid)

    @staticmethod
    def _build_env() -> dict[str, str]:
        """Environment for every subprocess we run.

        Drops the caller's PG* variables (PGDATA, PGPORT, PGHOST,
        PGOPTIONS, ...) which would otherwise redirect initdb/pg_ctl/psql
        to some other server.  Forces the C locale so messages are English
        (start() greps the log for bind errors), and TZ=UTC so initdb does
        not scan the zoneinfo database and the cluster's time zone does not
        depend on the machine.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.pop("PSQLRC", None)
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        return env

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _chown(self, path: str) -> None:
        """Give *path* to the server user when we run the server as someone else."""
        if self._server_ids is not None:
            os.chown(path, *self._server_ids)

    def _prepare_dirs(self) -> None:
        """Create the private temp dir, data dir and socket dir (once)."""
        if self._server_ids == (-1, -1):
            raise PostgresUnavailable(
                f"running as root but there is no {SERVER_USER!r} system user "
                "to run the server as (initdb/postgres refuse to run as root)"
            )
        if self.root is not None:
            return
        if self.base_dir:
            os.makedirs(self.base_dir, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="cueline-pg-", dir=self.base_dir)
        self.data_dir = os.path.join(self.root, "data")
        self.log_path = os.path.join(self.root, "postgres.log")
        self.socket_dir = os.path.join(self.root, "sock")
        # The socket file is "<dir>/.s.PGSQL.<port>"; if a deep base_dir
        # would overflow sun_path, fall back to a short dir in the system
        # temp dir rather than failing with an obscure bind error.
        socket_file = os.path.join(self.socket_dir, ".s.PGSQL.65535")
        if len(os.fsencode(socket_file)) > _MAX_SOCKET_PATH:
            self._extra_socket_dir = tempfile.mkdtemp(prefix="cueline-pgsock-")
            self.socket_dir = self._extra_socket_dir
        else:
            os.mkdir(self.socket_dir, 0o700)
        os.mkdir(self.data_dir, 0o700)  # initdb insists on 0700
        # mkdtemp dirs are 0700 and owned by us; when the server runs as
        # 'postgres' it needs to own them to create files inside.
        for path in (self.root, self.data_dir, self.socket_dir):
            self._chown(path)

    def _initdb(self) -> None:
        """Run initdb into the (empty) data directory."""
        rc, output = self._run(
            [
                self._bin("initdb"),
                "-D", self.data_dir,
                "-U", SUPERUSER,
                "-A", "trust",  # throwaway, loopback-only: no passwords
                "-E", "UTF8",
                "--locale=C",  # does not depend on which locales are installed
                "--no-sync",  # skip fsync of the fresh cluster: much faster
            ],
            timeout=INITDB_TIMEOUT,
            as_server=True,
        )
        if rc != 0:
            hint = ""
            if self._server_ids is not None:
                hint = (
                    f"\n(hint: the server runs as user {SERVER_USER!r}; every "
                    f"parent directory of {self.root} must be searchable by it)"
                )
            raise PostgresUnavailable(
                f"initdb failed (exit {rc}) in {self.data_dir}{hint}\n"
                f"--- initdb output ---\n{_tail(output)}"
            )
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as conf:
            # Later settings win, so our include at the end overrides the
            # defaults initdb wrote.
            conf.write(f"\n# Added by Cueline tests/pg.py\ninclude '{_CONF_NAME}'\n")

    def _write_conf(self) -> None:
        """(Re)write our settings file; called before every server start."""
        settings = {
            "listen_addresses": _conf_quote(LISTEN_HOST),
            "port": str(self.port),
            "unix_socket_directories": _conf_quote(self.socket_dir),
            # Durability is pointless for a throwaway cluster; these make
            # commits and checkpoints much cheaper.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # Room for parallel test workers and connection-pool tests.
            "max_connections": "200",
        }
        path = os.path.join(self.data_dir, _CONF_NAME)
        with open(path, "w") as conf:
            conf.write("# Written by Cueline tests/pg.py; rewritten on each start.\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self._chown(path)

    def _wrap_for_server(self, argv: list[str]) -> tuple[list[str], dict]:
        """Arrange for *argv* to run as the server user.

        Returns the (possibly prefixed) argv and extra Popen kwargs.
        Prefers ``runuser``; without it, lets subprocess switch user itself.
        """
        if self._server_ids is None:
            return argv, {}
        runuser = shutil.which("runuser") or (
            "/usr/sbin/runuser" if os.access("/usr/sbin/runuser", os.X_OK) else None
        )
        if runuser:
            return [runuser, "-u", SERVER_USER, "--", *argv], {}
        uid, gid = self._server_ids
        return argv, {"user": uid, "group": gid, "extra_groups": []}

    def _run(
        self, argv: list[str], *, timeout: float, as_server: bool = False
    ) -> tuple[int | None, str]:
        """Run *argv* and return (exit code or None on timeout, output).

        Output goes to a temporary file rather than a pipe: ``pg_ctl start``
        leaves a daemon behind, and any daemon that inherited a pipe would
        make us wait for EOF forever.  The child gets its own session so that
        on timeout we can kill it together with anything it spawned (e.g.
        pg_ctl under runuser).
        """
        kwargs: dict = {}
        if as_server:
            argv, kwargs = self._wrap_for_server(argv)
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    # The server user may not be able to enter our cwd.
                    cwd=self.root or "/",
                    start_new_session=True,
                    **kwargs,
                )
            except OSError as exc:
                raise PostgresUnavailable(f"cannot run {argv[0]}: {exc}") from exc
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
                rc = None
            out.seek(0)
            output = out.read().decode("utf-8", errors="replace")
        if rc is None:
            output += f"\n[timed out after {timeout}s: {' '.join(argv)}]"
        return rc, output

    def postmaster_pid(self) -> int | None:
        """PID of the running server (benchmarks measure its CPU time), or None."""
        return self._postmaster_pid() if self._is_running() else None

    def _postmaster_pid(self) -> int | None:
        """PID from postmaster.pid, or None if there is no (valid) pid file."""
        if not self.data_dir:
            return None
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as pidfile:
                return int(pidfile.readline().strip())
        except (OSError, ValueError):
            return None

    def _is_running(self) -> bool:
        """True if a postmaster for our data dir is alive."""
        pid = self._postmaster_pid()
        return pid is not None and _pid_alive(pid)

    def _kill_server(self) -> None:
        """Best-effort shutdown that escalates: fast, immediate, SIGKILL.

        Used by cleanup() and after a failed start, where leaving a server
        running would be worse than being rude to it.
        """
        for mode in ("fast", "immediate"):
            try:
                self.stop(mode)
                return
            except (RuntimeError, OSError):
                continue
        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except (OSError, TypeError):
            return 0

    def _read_log(self, offset: int = 0) -> str:
        """Server log from byte *offset* on (at most the last 64 KiB)."""
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(offset, self._log_size() - 65536))
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no server log)"


# --------------------------------------------------------------------------
# Developer entry point
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Start a cluster, print how to reach it, wait for Ctrl-C/SIGTERM, clean up."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Run a throwaway PostgreSQL cluster for Cueline development."
    )
    parser.add_argument(
        "--base-dir", help="directory to create the cluster in (default: system temp dir)"
    )
    parser.add_argument(
        "-d", "--database", action="append", default=[],
        help="create this database too (repeatable)",
    )
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def _on_signal(signum, frame):
        stop_requested.set()

    # Install handlers before starting so an early Ctrl-C still cleans up.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    cluster = PostgresCluster(args.base_dir)
    try:
        began = time.monotonic()
        try:
            cluster.start()
        except PostgresUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"started in {time.monotonic() - began:.2f}s", file=sys.stderr)
        print(cluster.url(), flush=True)
        for name in args.database:
            print(cluster.create_database(name), flush=True)
        psql = os.path.join(cluster.bindir, "psql")
        print(
            f"psql: {psql} -h {LISTEN_HOST} -p {cluster.port} -U {SUPERUSER}\n"
            f"data: {cluster.data_dir}\nlog:  {cluster.log_path}\n"
            "Press Ctrl-C to stop and delete the cluster.",
            file=sys.stderr,
            flush=True,
        )
        # Poll rather than block forever so a signal that arrives between
        # checks can never be missed.
        while not stop_requested.wait(0.5):
            if not cluster._is_running():
                print(
                    "server exited unexpectedly; log tail:\n"
                    + _tail(cluster._read_log()),
                    file=sys.stderr,
                )
                return 1
        return 0
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
