"""What every `petra` command shares: one-sentence errors and warnings on standard error, and
reading genesis files, key files and passphrases."""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from assets import Genesis, Keypair, Rejected, parse_genesis
from assets.keyfile import KeyFileError, load_keys

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from service.serving import ServeLimits


class _AfterTheLog(Console):
    """Standard error's console: what it prints follows every log line logged before it (a
    service's log lines are written by a thread of their own, `configure_logging`)."""

    def print(self, *objects: Any, **options: Any) -> None:
        flush_logs()
        super().print(*objects, **options)


# At a terminal an error wraps between words at its width; into a file or a pipe it is one
# line whatever its length, for logs and programs to read whole.
err = _AfterTheLog(stderr=True, soft_wrap=not sys.stderr.isatty())
PASSPHRASE_ENV = "PETRA_PASSPHRASE"

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        help=f"File holding the key file's passphrase (else ${PASSPHRASE_ENV}).",
        exists=True,
        dir_okay=False,
    ),
]


LOG_LEVELS = ("debug", "info", "warning", "error")
# Libraries that log a line per request or connection: below WARNING only when debugging.
CHATTY_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar="PETRA_LOG_LEVEL",
        help="How much to log: debug, info, warning or error.",
        parser=_log_level,
        metavar="LEVEL",
    ),
]


LOG_FORMATS = ("text", "json")
# Environment variables holding secrets: their values are masked in every log line.
SECRET_ENVS = (
    PASSPHRASE_ENV,
    "PETRA_ADMIN_TOKEN",
    "PETRA_DSO_TOKEN",
    "PETRA_DATADIS_PASSWORD",
    "PGPASSWORD",
)
# Secrets read from files (a passphrase, a broker's password): masked as the environment's are.
_SECRETS_READ: set[str] = set()
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^/@\s]+@")


def _log_format(text: str) -> str:
    chosen = text.strip().lower()
    if chosen not in LOG_FORMATS:
        raise typer.BadParameter(f"{text!r} is not one of {', '.join(LOG_FORMATS)}")
    return chosen


LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="PETRA_LOG_FORMAT",
        help="How to write the log: text (one line per event) or json (one object per line).",
        parser=_log_format,
        metavar="FORMAT",
    ),
]


LOOPBACK = ("127.0.0.1", "::1", "localhost")
MetricsHost = Annotated[
    str,
    typer.Option(
        "--metrics-host",
        help="The address to serve the Prometheus metrics on (loopback unless told).",
    ),
]
MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="The port to serve the Prometheus metrics on at /metrics (0: none).",
    ),
]


def mask_in_logs(secret: str) -> None:
    """Never write `secret` (read from a file: a passphrase, a password) in a log line."""
    if len(secret) >= 4:  # a shorter one would mask ordinary words
        _SECRETS_READ.add(secret)


def masked(text: str) -> str:
    """`text` without what must never reach a log: the password of a URL
    (`postgresql://petra:***@db/petra`), the value of every secret the environment holds
    (`SECRET_ENVS`) and every secret read from a file (`mask_in_logs`)."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    secrets = [os.environ.get(name) for name in SECRET_ENVS] + sorted(_SECRETS_READ)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class _OneLine(logging.Formatter):
    """`2026-12-05 22:40:01 ledger INFO message`: one line per event, whatever the message
    holds; an exception is named on the same line, its traceback follows only at debug."""

    def __init__(self, role: str, tracebacks: bool) -> None:
        super().__init__(
            "%(asctime)s " + role.replace("%", "%%") + " %(levelname)s %(message)s",
            "%Y-%m-%d %H:%M:%S",
        )
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks:
            return masked(super().format(record))
        record.message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.message += f" ({type(exc).__name__}: {exc})"
        record.asctime = self.formatTime(record, self.datefmt)
        line = masked(self.formatMessage(record))
        return line.replace("\r", "\\r").replace("\n", "\\n")


class _JsonLine(logging.Formatter):
    """`{"time": "2026-12-05T22:40:01.123Z", "role": "ledger", "level": "info", "logger":
    "petra", "message": "..."}`: one JSON object per line for a log collector; an exception
    adds `error` (its type and text) and, at debug, `traceback`."""

    def __init__(self, role: str, tracebacks: bool) -> None:
        super().__init__()
        self.role = role
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "role": self.role,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": masked(record.getMessage()),
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = masked(f"{type(exc).__name__}: {exc}")
            if self.tracebacks:
                line["traceback"] = masked(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class _NoSecrets(logging.Filter):
    """Masks what must never reach a log (`masked`) in every record, whichever library wrote
    it; the formatters mask the exception they add too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = masked(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


class _Handed(logging.handlers.QueueHandler):
    """Hands each record to the log's writer thread as it is, its message merged with its
    arguments (they may change once the caller goes on) and its exception kept for the
    formatter (the standard `QueueHandler` formats it away)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg, record.args = record.getMessage(), None
        return record


_writer: logging.handlers.QueueListener | None = None


def configure_logging(level: str, role: str, log_format: str = "text") -> None:
    """Log events at `level` (debug, info, warning or error) and above to standard error, one
    line each naming `role` (`ledger`, `bidstore`…), as text or as JSON (`log_format`); the
    HTTP libraries' own lines only at debug. No line carries a secret (`_NoSecrets`).

    Lines are formatted and written by a thread of their own, in the order logged: a service
    logs a line per request, and doing it on the event loop cost each request about 20 µs.
    What is logged before the process exits is written at its exit (`flush_logs`); a process
    killed outright may lose its last lines."""
    global _writer
    stop_logging()
    handler = logging.StreamHandler(sys.stderr)
    debug = level == "debug"
    formatter = _JsonLine if log_format == "json" else _OneLine
    handler.setFormatter(formatter(role, tracebacks=debug))
    handler.addFilter(_NoSecrets())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _writer = logging.handlers.QueueListener(records, handler)
    _writer.start()
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(_Handed(records))
    root.setLevel(level.upper())
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.DEBUG if debug else logging.WARNING)


def flush_logs() -> None:
    """Return once every line logged so far is written."""
    if _writer is not None:
        _writer.stop()
        _writer.start()


@atexit.register
def stop_logging() -> None:
    """Write every line logged so far, and stop the log's writer thread (at exit, or before
    the log is configured again)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


@contextlib.contextmanager
def lazy_progress(
    description: str, unit: str, show: Callable[[float, int], bool]
) -> Iterator[Callable[[int, int], None]]:
    """A callback `(done, total)` for long work that draws a bar on standard error once
    `show(seconds since start, total)` says the work is worth one (a quick job prints
    nothing); the bar leaves no trace when done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    started = time.monotonic()
    bar = Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        unit,
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started and show(time.monotonic() - started, total):
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield progress
    finally:
        if bar.live.is_started:  # else stopping prints an empty line
            bar.stop()


def fail(message: str) -> NoReturn:
    """Say what went wrong in one sentence and exit 2."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase from `path` (first line) or the environment; None when neither is given."""
    if path is not None:
        lines = path.read_bytes().splitlines()
        passphrase = lines[0] if lines else b""
        mask_in_logs(passphrase.decode("utf-8", "replace"))
        return passphrase
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value is not None else None


def read_genesis(path: Path) -> tuple[bytes, Genesis]:
    try:
        raw = path.read_bytes()
        return raw, parse_genesis(raw)
    except OSError as exc:
        fail(f"cannot read the genesis {path}: {exc.strerror}")
    except Rejected as exc:
        fail(f"{path} is not a valid genesis: {exc.message}")


def read_keys(path: Path, passphrase_file: Path | None) -> dict[str, Keypair]:
    try:
        return load_keys(path.read_bytes(), read_passphrase(passphrase_file))
    except OSError as exc:
        fail(f"cannot read the key file {path}: {exc.strerror}")
    except KeyFileError as exc:
        fail(f"{path}: {exc}")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by its owner only, replacing `path` atomically and durably: a
    temporary file of a unique name beside it (two writers never share one), fsynced,
    renamed over `path`, then the directory fsynced so the rename survives a crash."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates the file 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_ledger_genesis(url: str, genesis: Genesis, genesis_path: Path) -> None:
    """Exit with one sentence unless the ledger at `url` answers with `genesis`."""
    from ledger.client import LedgerClient, LedgerClientError

    with LedgerClient(url, retries=0) as client:
        try:
            served = client.genesis()
        except LedgerClientError as exc:
            fail(f"cannot read the ledger's genesis at {url}: {exc}")
    if served != genesis:
        fail(f"the ledger at {url} serves another chain than {genesis_path}")


def serve_limits() -> ServeLimits:
    """The serving limits the environment sets (`PETRA_MAX_CONNECTIONS` and the like)."""
    from service.serving import ServeLimits

    try:
        return ServeLimits.from_env()
    except ValueError as exc:
        fail(str(exc))


def serve(
    app: Any,
    host: str,
    port: int,
    stop: threading.Event | None = None,
    metrics: tuple[CollectorRegistry, str, int] | None = None,
    *,
    metrics_by_default: bool = False,
) -> None:
    """Serve `app` under the limits of `service.serving` until SIGTERM, Ctrl-C or `stop` is
    set, then return (so the caller's clean-up runs); a failed start is one sentence.
    `metrics`: (registry, host, port) to serve the service's metrics on meanwhile (a port of
    0 serves none); `metrics_by_default` as `serving_metrics` takes it."""
    from service.serving import server

    with serving_metrics(metrics, by_default=metrics_by_default):
        try:
            server(app, host, port, serve_limits(), stop).run()
        except SystemExit:  # uvicorn's own exit on a failed start, with no sentence of ours
            fail(f"cannot serve on {host}:{port}: the address is in use or not this machine's")


@contextlib.contextmanager
def serving_metrics(
    metrics: tuple[CollectorRegistry, str, int] | None, *, by_default: bool = False
) -> Iterator[None]:
    """Serve a registry's metrics at http://host:port/metrics while inside (none when `metrics`
    is None or its port 0). An address in use is one sentence and exit 2, unless the port is
    the role's default (`by_default`: nobody chose it), which warns and serves no metrics: a
    second service on one machine still runs."""
    if metrics is None or metrics[2] == 0:
        yield
        return
    from service.metrics import serve_metrics

    registry, host, port = metrics
    try:
        served = serve_metrics(registry, host, port)
    except OSError as exc:
        if not by_default:
            fail(f"cannot serve the metrics on {host}:{port}: {exc.strerror or exc}")
        warn(f"metrics not served: port {port} is in use; set --metrics-port")
        yield
        return
    if host not in LOOPBACK:
        warn(f"metrics on {host}: reachable beyond this machine")
    logging.getLogger("petra").info("metrics on http://%s:%s/metrics", host, served.port)
    try:
        yield
    finally:
        served.close()


def shown_store(url: str) -> str:
    """A database URL as logs and messages show it: the password masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL: nothing in it to hide that the user did not type
        return url


def hold_store_for(ctx: typer.Context, store: str, role: str, command: str) -> None:
    """Hold the `role` database at `store` until the command `ctx` ends, however it ends, so
    that no second process opens it (`service.database.hold_store`); call it before anything
    reads the store. One sentence naming the holder if another process has it."""
    from service.database import StoreError, hold_store

    try:
        ctx.with_resource(hold_store(store, role, command))
    except StoreError as exc:
        fail(str(exc))
