"""Real services for the suite: each started once per session and handed out by one fixture."""

from __future__ import annotations

import itertools
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import typer
import typer.main
import typer.testing
from hypothesis import settings
from psycopg import sql
from services.modbus import modbus_devices_fixture, modbus_session_fixture
from services.mosquitto import mosquitto_fixture
from typer._click.core import Command as TyperCommand

from simulation.processes import free_port
from smartmeter.store import MeterStore

# The real services each live in a module of `tests/services/`; importing their fixtures here
# hands them out to the whole suite, each started once per session.
__all__ = ["modbus_devices_fixture", "modbus_session_fixture", "mosquitto_fixture"]

# typer builds the whole `petra` command tree (every command's click objects) on each
# `CliRunner.invoke`, a tenth of a second: the suite builds it once per app. The tree holds no
# state between invocations (each makes its own context), so every test still runs the
# command as `petra` would.
_trees: dict[typer.Typer, TyperCommand] = {}  # by the app itself, kept alive: ids never reused


def _command_tree(app: typer.Typer) -> TyperCommand:
    tree = _trees.get(app)
    if tree is None:
        tree = _trees[app] = _build_command_tree(app)
    return tree


_build_command_tree = typer.main.get_command
typer.main.get_command = _command_tree  # type: ignore[assignment]
typer.testing._get_command = _command_tree  # type: ignore[attr-defined,assignment]

# `make check`, the edit-test loop, explores a quarter as many examples per property as `make test`
# (`--hypothesis-profile=check`); properties that ask for more than the default scale with it.
settings.register_profile("check", max_examples=25)


_INTEGRATION = Path(__file__).parent / "integration"
# The markers of what is not quick, besides `clocked` (a part of its own, `_part`)
_WITH_SERVERS = ("integration", "slow", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--part",
        choices=("quick", "servers", "clocked"),
        default=None,
        help="quick: only the tests that start no server and take no more than a few seconds "
        "(none marked integration, slow, postgres or clocked); clocked: only the tests that "
        "keep pace with a wall clock (marked clocked); servers: all the others. `make test` "
        "runs the quick part on every core, the servers part on two workers, then the clocked "
        "part one test at a time.",
    )


def _part(item: pytest.Item) -> str:
    if item.get_closest_marker("clocked"):
        return "clocked"
    return "servers" if any(item.get_closest_marker(name) for name in _WITH_SERVERS) else "quick"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under `tests/integration/` `integration` (they start processes and
    servers, and time them), and keep only the part `--part` names.

    Each test also gets an `xdist_group` for `--dist loadgroup`: its file's (a module's
    fixtures are set up once, on one worker), or `tor` for every test on the private Tor
    network (bootstrapped once a session, on one worker)."""
    for item in items:
        if _INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
        group = "tor" if "tor_network" in getattr(item, "fixturenames", ()) else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))
    part = config.getoption("--part")
    if part is None:
        return
    kept: list[pytest.Item] = []
    left: list[pytest.Item] = []
    for item in items:
        (kept if _part(item) == part else left).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
    items[:] = kept


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The root logger as it was before each test: a command run in-process by a test
    (`configure_logging`) leaves a handler on a stream the test runner has since closed, and
    a later test's log line would print a logging error into that test's output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


POSTGRES_ROLE = "petra"
POSTGRES_SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
POSTGRES_START_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1 that trusts the `petra` role."""

    host: str
    port: int

    @property
    def base_url(self) -> str:
        """SQLAlchemy URL of the server, without a database name."""
        return f"postgresql+psycopg://{POSTGRES_ROLE}@{self.host}:{self.port}"

    def _create(self, kind: str, prefix: str) -> str:
        """CREATE `kind` (DATABASE or SCHEMA) with a fresh unique name, which it returns."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(
            host=self.host, port=self.port, user=POSTGRES_ROLE, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql.SQL(f"CREATE {kind} {{}}").format(sql.Identifier(name)))
        return name

    def fresh_database(self) -> str:
        """Create a new, uniquely named, empty database and return its SQLAlchemy URL."""
        return f"{self.base_url}/{self._create('DATABASE', 'petra')}"

    def fresh_schema(self) -> str:
        """A new, empty schema in a shared database, as a SQLAlchemy URL that uses it.

        Much cheaper than a database, for tests that need many empty stores.
        """
        name = self._create("SCHEMA", "s")
        return f"{self.base_url}/postgres?options=-csearch_path%3D{name}"


def _major_version(bindir: Path) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in bindir.parent.name.split("."))
    except ValueError:
        return ()


def _has_server_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in POSTGRES_SERVER_TOOLS)


def _postgres_bindir() -> Path | None:
    """Debian's server binaries (newest major first), else wherever `pg_config` points."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major_version, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    return next((bindir for bindir in candidates if _has_server_tools(bindir)), None)


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _wait_until_accepting(server: PostgresServer, log: Path) -> None:
    deadline = time.monotonic() + POSTGRES_START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(
                host=server.host, port=server.port, user=POSTGRES_ROLE, dbname="postgres"
            ):
                return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL is not accepting connections: {error}\n{_log_tail(log)}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session, with fsync on (durability is under test)."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server not installed: run `make system-deps` "
            "(needs Debian's postgresql package)"
        )
    # PostgreSQL refuses to run as root, so root runs it as the `postgres` system user.
    as_server_user: Sequence[str] = ()
    workdir = Path(tempfile.mkdtemp(prefix="petra-pg-"))
    if os.geteuid() == 0:
        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(workdir)
            pytest.skip("PostgreSQL needs a `postgres` system user when tests run as root")
        os.chown(workdir, server_user.pw_uid, server_user.pw_gid)
        as_server_user = ("runuser", "-u", "postgres", "--")

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_server_user, *command],
            cwd=workdir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=POSTGRES_START_TIMEOUT_S * 2,
        )

    datadir, log = workdir / "data", workdir / "server.log"
    port = free_port()
    try:
        initdb = run(
            str(bindir / "initdb"),
            f"--pgdata={datadir}",
            "--auth=trust",
            f"--username={POSTGRES_ROLE}",
            "--encoding=UTF8",
            "--locale=C",
        )
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={workdir} -c fsync=on"
        )
        start = run(
            str(bindir / "pg_ctl"),
            "start",
            f"--pgdata={datadir}",
            f"--log={log}",
            f"--options={options}",
            "--wait",
            f"--timeout={POSTGRES_START_TIMEOUT_S}",
        )
        if start.returncode != 0:
            pytest.fail(
                f"PostgreSQL failed to start on port {port}:\n{start.stdout}\n{start.stderr}\n"
                f"--- server log ---\n{_log_tail(log)}"
            )
        server = PostgresServer(host="127.0.0.1", port=port)
        _wait_until_accepting(server, log)
        yield server
    finally:
        if (datadir / "postmaster.pid").exists():
            stop = run(str(bindir / "pg_ctl"), "stop", f"--pgdata={datadir}", "--mode=fast")
            if stop.returncode != 0:
                run(str(bindir / "pg_ctl"), "stop", f"--pgdata={datadir}", "--mode=immediate")
        shutil.rmtree(workdir, ignore_errors=True)


# Every store runs on both back-ends: SQLite, and PostgreSQL where the suite can start it.
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _empty_stores(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Callable[[], str]:
    """Makes SQLAlchemy URLs of new, empty stores on the back-end `request.param`."""
    backend: str = request.param
    if backend == "sqlite":
        counter = itertools.count()
        return lambda: f"sqlite:///{tmp_path}/{name}-{next(counter)}.sqlite"
    # Looked up here, not requested, so the SQLite runs never wait for (or skip on) PostgreSQL.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_schema


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes SQLAlchemy URLs of new, empty ledger stores, once per back-end.

    A factory rather than one URL, so that each hypothesis example starts from an empty store.
    """
    return _empty_stores(request, tmp_path, "ledger")


@pytest.fixture
def store_url(store_factory: Callable[[], str]) -> str:
    """A SQLAlchemy URL of an empty ledger store, once per back-end."""
    return store_factory()


@pytest.fixture(params=BACKENDS)
def meter_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL of an empty smart-meter store (`smartmeter.store`), once per back-end."""
    return _empty_stores(request, tmp_path, "meter")()


@pytest.fixture
def meter_store(meter_store_url: str) -> Iterator[MeterStore]:
    """An empty smart-meter store, once per back-end; closed after the test."""
    with MeterStore(meter_store_url) as store:
        yield store
