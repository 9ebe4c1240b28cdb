"""A consistent copy of a running service's store, taken without stopping the service and
without its hold (`database.hold_store`): it only reads.

SQLite: the online backup API, in steps, all of them inside one read transaction, so the copy
is the store as of one moment even while the service writes (WAL readers block no writer);
written to a temporary file beside the target, fsynced, checked (`PRAGMA integrity_check`) and
only then renamed into place, readable by its owner only. PostgreSQL: `pg_dump
--format=custom` of the URL's database (and schema), the password passed in the child's
environment, never on its command line."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

PAGES_PER_STEP = 1024  # 4 MiB at SQLite's default page size: a step per progress update
PG_DUMP_TIMEOUT_S = 3600
# Query keys of a SQLAlchemy PostgreSQL URL that libpq understands as they are.
_LIBPQ_KEYS = ("host", "sslmode", "sslrootcert", "sslcert", "sslkey", "options", "connect_timeout")

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


class BackupError(Exception):
    """The backup could not be taken; the message is one sentence for the operator."""


@dataclass(frozen=True, slots=True)
class BackupCopy:
    """A backup written to `path`: its size in bytes, and the role's schema revision
    (`<prefix>_alembic_version`) when the store records one."""

    path: Path
    size_bytes: int
    revision: str | None


@dataclass(frozen=True, slots=True)
class PgDumpCommand:
    """The `pg_dump` run for a PostgreSQL store: `argv` (no password in it) and the
    environment it adds (`PGPASSWORD`, when the URL holds one)."""

    argv: tuple[str, ...]
    env: dict[str, str]

    def shown(self) -> str:
        """The command as an operator would type it, the password left as a variable."""
        secret = "PGPASSWORD=... " if self.env else ""
        return secret + " ".join(_shell_word(word) for word in self.argv)


def backup_store(
    url: str,
    target: Path,
    *,
    revision_table: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BackupCopy:
    """Copy the store at `url` (SQLite or PostgreSQL) to `target`, consistent as of one moment
    while its service runs. `revision_table`: the table holding the role's schema revision.
    BackupError when `target` exists (unless `force`) or the copy cannot be taken."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BackupError(f"{url} is not a database URL") from None
    if target.exists() and not force:
        raise BackupError(f"{target} exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise BackupError(f"cannot write {target}: the folder {target.parent} does not exist")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return backup_sqlite(_sqlite_path(parsed), target, revision_table, progress)
    if backend == "postgresql":
        return backup_postgresql(parsed, target, revision_table)
    raise BackupError(f"cannot back up a {backend} store: PETra's stores are SQLite or PostgreSQL")


# ---------------------------------------------------------------- SQLite


def _sqlite_path(url: URL) -> Path:
    name = url.database
    if not name or name == ":memory:" or url.query.get("mode") == "memory":
        raise BackupError("an in-memory store lives in its process only: there is nothing to copy")
    path = Path(name)
    if not path.is_file():
        raise BackupError(f"there is no store at {path}")
    return path


def backup_sqlite(
    source: Path,
    target: Path,
    revision_table: str | None = None,
    progress: Progress | None = None,
) -> BackupCopy:
    """Copy the SQLite database `source` to `target` with the online backup API, in steps of
    `PAGES_PER_STEP` pages inside one read transaction (a consistent snapshot, while others
    write); check the copy, then rename it into place (mode 0600, fsynced)."""
    with _temporary_beside(target) as tmp:
        try:
            with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reader:
                reader.isolation_level = None  # the transaction below is ours, not the module's
                reader.execute("BEGIN")
                # The first read starts the snapshot: every step copies this same moment.
                reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
                with closing(sqlite3.connect(tmp)) as copy:
                    reader.backup(
                        copy,
                        pages=PAGES_PER_STEP,
                        progress=None if progress is None else _pages(progress),
                    )
                reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BackupError(f"cannot copy the store {source}: {exc}") from None
        revision = _check_sqlite_copy(tmp, revision_table)
        _durable_rename(tmp, target)
    return BackupCopy(target, target.stat().st_size, revision)


def _pages(progress: Progress) -> Callable[[int, int, int], None]:
    return lambda _status, remaining, total: progress(total - remaining, total)


def _check_sqlite_copy(path: Path, revision_table: str | None) -> str | None:
    """The copy's schema revision, once `PRAGMA integrity_check` finds it sound."""
    try:
        with closing(sqlite3.connect(path)) as copy:
            verdict = [row[0] for row in copy.execute("PRAGMA integrity_check")]
            if verdict != ["ok"]:
                raise BackupError(f"the copy fails SQLite's integrity check: {verdict[0]}")
            if revision_table is None:
                return None
            found = copy.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (revision_table,)
            ).fetchone()
            if found is None:
                return None
            row = copy.execute(f'SELECT version_num FROM "{revision_table}"').fetchone()
            return None if row is None else str(row[0])
    except sqlite3.Error as exc:
        raise BackupError(f"cannot check the copy: {exc}") from None


def sqlite_integrity(path: Path) -> str | None:
    """None when SQLite's `PRAGMA integrity_check` finds the database at `path` sound, else
    its first complaint."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        first = db.execute("PRAGMA integrity_check").fetchone()
    return None if first is not None and first[0] == "ok" else str(first[0] if first else "")


# ---------------------------------------------------------------- PostgreSQL


def pg_dump_command(url: URL | str, target: Path) -> PgDumpCommand:
    """The `pg_dump --format=custom` of the store at `url` into `target`: its database, and
    its schema when the URL sets one (`options=-csearch_path=NAME`)."""
    parsed = make_url(url) if isinstance(url, str) else url
    query = {k: str(v) for k, v in parsed.query.items() if k in _LIBPQ_KEYS}
    user = quote(parsed.username or "", safe="")
    where = parsed.host or ""
    if parsed.port:
        where += f":{parsed.port}"
    conninfo = f"postgresql://{user}{'@' if user else ''}{where}/{quote(parsed.database or '')}"
    if query:
        conninfo += "?" + urlencode(query)
    argv = ["pg_dump", "--format=custom", "--no-password", f"--file={target}"]
    schema = _search_path_schema(query.get("options", ""))
    if schema is not None:
        argv.append(f"--schema={schema}")
    argv.append(f"--dbname={conninfo}")
    env = {} if parsed.password is None else {"PGPASSWORD": str(parsed.password)}
    return PgDumpCommand(tuple(argv), env)


def _search_path_schema(options: str) -> str | None:
    """The first schema of `-csearch_path=NAME[,…]` in libpq's `options`, if set."""
    for option in options.split():
        for prefix in ("-csearch_path=", "--search_path="):
            if option.startswith(prefix):
                return option.removeprefix(prefix).split(",")[0].strip('"') or None
    return None


def backup_postgresql(url: URL, target: Path, revision_table: str | None = None) -> BackupCopy:
    """`pg_dump --format=custom` of the store at `url` into `target`, through a temporary
    file beside it (fsynced, mode 0600). BackupError with the command to run when pg_dump is
    not on PATH."""
    planned = pg_dump_command(url, target)
    executable = shutil.which("pg_dump")
    if executable is None:
        raise BackupError(
            "pg_dump is not on PATH: install PostgreSQL's client tools (Debian: apt install "
            f"postgresql-client), or run it yourself: {planned.shown()}"
        )
    revision = _postgres_revision(url, revision_table)
    with _temporary_beside(target) as tmp:
        command = pg_dump_command(url, tmp)
        try:
            done = subprocess.run(
                [executable, *command.argv[1:]],
                env={**os.environ, **command.env},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=PG_DUMP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BackupError(f"pg_dump took more than {PG_DUMP_TIMEOUT_S} s; stopped") from None
        if done.returncode != 0:
            said = next((line for line in done.stderr.splitlines() if line.strip()), "")
            raise BackupError(f"pg_dump failed (exit {done.returncode}): {said}")
        _durable_rename(tmp, target)
    return BackupCopy(target, target.stat().st_size, revision)


def _postgres_revision(url: URL, revision_table: str | None) -> str | None:
    """The role's schema revision in the live store, read once before the dump."""
    if revision_table is None:
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT to_regclass(:table)"), {"table": revision_table})
            if exists is None:
                return None
            found = conn.scalar(text(f'SELECT version_num FROM "{revision_table}"'))
            return None if found is None else str(found)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot reach the store: {exc.args[0]}") from None
    finally:
        engine.dispose()


# ---------------------------------------------------------------- writing the copy


@contextmanager
def _temporary_beside(target: Path) -> Iterator[Path]:
    """A new empty file beside `target` (mode 0600), removed on leaving unless renamed, with
    any -wal/-shm/-journal SQLite left of it."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{s}") for s in ("-wal", "-shm", "-journal"))):
            with suppress(OSError):
                leftover.unlink()


def _durable_rename(tmp: Path, target: Path) -> None:
    """fsync `tmp`, rename it over `target` (mode 0600) and fsync the folder."""
    try:
        os.chmod(tmp, 0o600)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror}") from None


def _shell_word(word: str) -> str:
    safe = all(c.isalnum() or c in "-_=./:@,%+" for c in word)
    return word if safe and word else "'" + word.replace("'", "'\\''") + "'"
