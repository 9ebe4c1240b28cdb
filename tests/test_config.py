"""One way to configure every role (`petra.config`): the precedence flag > environment > file >
default on real commands, every refusal with its sentence, paths relative to the file, the
meter's and the monitor's own files, `store_in_config`; and the log (`petra.console`): JSON
lines, no secret in any line, the metrics port that is in use."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from petra import console
from petra.cli import app
from petra.config import LogAndMetrics, chosen, log_and_metrics, store_in_config
from service.metrics import new_registry
from simulation.scenario import Scenario

PASSPHRASE = "correct horse battery staple"
ENVS = ("PETRA_LOG_LEVEL", "PETRA_LOG_FORMAT", "PETRA_PASSPHRASE", "PETRA_DSO_TOKEN")
OWNER = "4c" * 32


@pytest.fixture(autouse=True)
def _no_petra_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it means: none leaks in from the shell running pytest."""
    for name in ENVS:
        monkeypatch.delenv(name, raising=False)


def command(*path: str) -> Any:
    """The click command `petra PATH...` (e.g. `ledger serve`)."""
    found = typer.main.get_command(app)
    for name in path:
        found = found.commands[name]  # type: ignore[attr-defined]
    return found


def parsed(args: list[str], *path: str) -> Any:
    """The context of `petra PATH ARGS` once its options are read, without running it."""
    return command(*path).make_context(" ".join(path), args)


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A folder holding genesis.json and keys.json (their content is not read here)."""
    (tmp_path / "genesis.json").write_bytes(Scenario().genesis_raw)
    (tmp_path / "keys.json").write_text("{}")
    return tmp_path


def toml(folder: Path, text: str, name: str = "petra.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def refused(result: Result) -> str:
    """The error sentence of a command that refuses cleanly: exit 2, one line, no trace."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


def serve(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["ledger", "serve", *map(str, args)], env=env)


# ---------------------------------------------------------------- precedence


def test_the_built_in_default_when_nothing_else_is_given(chain: Path) -> None:
    ctx = parsed(["--genesis", str(chain / "genesis.json"), "--keys", "k"], "ledger", "serve")

    assert (ctx.params["port"], ctx.params["log_level"], ctx.params["metrics_port"]) == (
        7420,
        "info",
        9420,
    )
    assert not chosen(ctx, "metrics_port")


def test_the_file_over_the_default(chain: Path) -> None:
    config = toml(
        chain,
        '[ledger]\ngenesis = "genesis.json"\nkeys = "keys.json"\nport = 7001\n'
        'log_level = "DEBUG"\nlog_format = "json"\nmetrics_port = 0\n',
    )

    ctx = parsed(["--config", str(config)], "ledger", "serve")

    assert ctx.params["genesis"] == [chain / "genesis.json"]
    assert ctx.params["keys"] == chain / "keys.json"
    assert (ctx.params["port"], ctx.params["log_level"], ctx.params["log_format"]) == (
        7001,
        "debug",
        "json",
    )
    assert ctx.params["metrics_port"] == 0
    assert chosen(ctx, "metrics_port")


def test_the_environment_over_the_file(chain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = toml(chain, '[ledger]\ngenesis = "genesis.json"\nkeys = "k"\nlog_level = "debug"\n')
    monkeypatch.setenv("PETRA_LOG_LEVEL", "warning")

    ctx = parsed(["--config", str(config)], "ledger", "serve")

    assert ctx.params["log_level"] == "warning"


def test_a_flag_over_the_environment_and_the_file(
    chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = toml(chain, '[ledger]\ngenesis = "genesis.json"\nkeys = "k"\nport = 7001\n')
    monkeypatch.setenv("PETRA_LOG_LEVEL", "warning")

    ctx = parsed(
        ["--port", "7002", "--log-level", "error", "--config", str(config)], "ledger", "serve"
    )

    assert (ctx.params["port"], ctx.params["log_level"]) == (7002, "error")


@pytest.mark.parametrize(
    ("path", "table", "required"),
    [
        (("ledger", "serve"), "ledger", 'keys = "keys.json"\n'),
        (("ledger", "replicate"), "replica", 'ledger = "http://127.0.0.1:7420"\n'),
        (("dso", "serve"), "dso", 'keys = "keys.json"\n'),
        (("mixer", "serve"), "mixer", ""),
        (("bidstore", "serve"), "bidstore", ""),
    ],
)
def test_each_service_reads_its_own_table(
    chain: Path, path: tuple[str, ...], table: str, required: str
) -> None:
    other = "dso" if table == "ledger" else "ledger"  # another role's table in one file: left
    config = toml(
        chain, f'[{table}]\ngenesis = "genesis.json"\n{required}port = 7777\n[{other}]\nport = 1\n'
    )

    ctx = parsed(["--config", str(config)], *path)

    assert ctx.params["port"] == 7777


def test_a_relative_sqlite_store_is_taken_from_the_files_folder(
    chain: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    relative = toml(
        chain,
        '[ledger]\ngenesis = "genesis.json"\nkeys = "k"\nstore = "sqlite:///data/ledger.sqlite"\n',
        "a.toml",
    )
    postgres = "postgresql+psycopg://petra@db/petra"
    absolute = toml(
        chain,
        f'[ledger]\ngenesis = "{chain}/genesis.json"\nkeys = "k"\nstore = "{postgres}"\n',
        "b.toml",
    )

    assert parsed(["--config", str(relative)], "ledger", "serve").params["store"] == [
        f"sqlite:///{chain}/data/ledger.sqlite"
    ]
    assert parsed(["--config", str(absolute)], "ledger", "serve").params["store"] == [postgres]


def test_a_list_in_the_file_gives_an_option_taken_once_per_chain(chain: Path) -> None:
    (chain / "south.json").write_bytes(Scenario(name="south").genesis_raw)
    config = toml(
        chain,
        '[ledger]\ngenesis = ["genesis.json", "south.json"]\nkeys = "keys.json"\n'
        'store = ["sqlite:///north.sqlite", "sqlite:///south.sqlite"]\n',
    )

    ctx = parsed(["--config", str(config)], "ledger", "serve")

    assert ctx.params["genesis"] == [chain / "genesis.json", chain / "south.json"]
    assert ctx.params["store"] == [
        f"sqlite:///{chain}/north.sqlite",
        f"sqlite:///{chain}/south.sqlite",
    ]
    missing = toml(chain, '[ledger]\ngenesis = ["genesis.json", "east.json"]\n', "m.toml")
    sentence = refused(serve("--config", missing))
    assert "[ledger] genesis: file '" in sentence and "/east.json' does not exist" in sentence


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ('[ledger]\nport = "abc"\n', "[ledger] port: 'abc' is not a valid integer"),
        ("[ledger]\nport = 70000\n", "[ledger] port: '70000' should be less than or equal to"),
        ('[ledger]\nlog_level = "loud"\n', "[ledger] log_level: 'loud' is not one of debug"),
        ('[ledger]\nlog_format = "xml"\n', "[ledger] log_format: 'xml' is not one of text, json"),
        ("[ledger]\nprot = 7420\n", "[ledger] prot: unknown key (did you mean port?)"),
        ("[ledger]\nport = [1, 2]\n", "[ledger] port must be one value, not a table or a list"),
        ("[legder]\nport = 1\n", "unknown table [legder] (did you mean [ledger]?)"),
        ("port = 1\n", "port is outside any table: put it under [ledger]"),
        ("[dso]\nport = 1\n", "has no [ledger] table: the options of petra ledger serve go"),
        ("[ledger\n", "is not valid TOML"),
        ('[ledger]\ngenesis = "missing.json"\n', "missing.json' does not exist"),
    ],
)
def test_a_faulty_file_is_one_sentence_naming_the_key(
    chain: Path, text: str, sentence: str
) -> None:
    config = toml(chain, text)

    said = refused(serve("--config", config, "--genesis", chain / "genesis.json", "--keys", "k"))

    assert said.startswith(f"{config}")
    assert sentence in said


@pytest.mark.parametrize("key", ["passphrase", "dso_token", "password", "admin_token"])
def test_a_secret_in_a_file_is_refused_naming_where_it_belongs(chain: Path, key: str) -> None:
    config = toml(chain, f'[ledger]\n{key} = "{PASSPHRASE}"\n')

    said = refused(serve("--config", config))

    assert f"[ledger] {key}: a secret is never read from a configuration file" in said
    assert "$PETRA_PASSPHRASE" in said and "passphrase_file" in said
    assert PASSPHRASE not in said


def test_a_passphrase_file_may_be_named_in_the_file(chain: Path) -> None:
    (chain / "passphrase").write_text(PASSPHRASE + "\n")
    config = toml(
        chain, '[ledger]\npassphrase_file = "passphrase"\ngenesis = "genesis.json"\nkeys = "k"\n'
    )

    ctx = parsed(["--config", str(config)], "ledger", "serve")

    assert ctx.params["passphrase_file"] == chain / "passphrase"


def test_a_required_option_given_nowhere_names_both_ways(chain: Path) -> None:
    config = toml(chain, '[ledger]\nkeys = "keys.json"\n')

    assert refused(serve("--config", config)) == (
        f"give --genesis or genesis in [ledger] of {config}"
    )
    assert refused(serve("--keys", "k")) == (
        "give --genesis, or genesis in the [ledger] table of a --config file"
    )


# ---------------------------------------------------------------- the meter's and the monitor's


def meter_file(folder: Path, extra: str) -> Path:
    return toml(
        folder,
        f'[meter]\nid = "m1"\nkeys = "keys.json"\ngenesis = "genesis.json"\nowner = "{OWNER}"\n'
        f'{extra}\n[[source]]\nkind = "sdm630"\n',
        "meter.toml",
    )


def test_the_meters_file_sets_its_log_and_metrics_below_flags_and_environment(
    chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smartmeter.config import load_config

    config = meter_file(chain, 'log_level = "debug"\nlog_format = "json"\nmetrics_port = 0')
    monkeypatch.setenv("PETRA_LOG_FORMAT", "text")

    ctx = parsed(["--config", str(config), "--metrics-port", "9999"], "meter", "run")
    running = log_and_metrics(ctx, config, "meter", load_config(config))

    assert running == LogAndMetrics("debug", "text", "127.0.0.1", 9999, False)


def test_the_meters_metrics_port_from_its_file_is_chosen(chain: Path) -> None:
    from smartmeter.config import load_config

    config = meter_file(chain, "metrics_port = 9441")
    ctx = parsed(["--config", str(config)], "meter", "run")

    running = log_and_metrics(ctx, config, "meter", load_config(config))

    assert running == LogAndMetrics("info", "text", "127.0.0.1", 9441, False)
    assert log_and_metrics(ctx, None, "meter", None).metrics_by_default


def test_the_meters_file_refuses_a_log_format_naming_the_key(chain: Path) -> None:
    config = meter_file(chain, 'log_format = "xml"')

    said = refused(CliRunner().invoke(app, ["meter", "run", "--config", str(config)]))

    assert said == f"{config}: meter.log_format: 'xml' is not one of text, json"


def test_the_monitors_service_table_takes_the_same_keys(tmp_path: Path) -> None:
    config = toml(tmp_path, '[service]\nmetrics_port = "x"\n', "monitor.toml")

    said = refused(CliRunner().invoke(app, ["monitor", "serve", "--config", str(config)]))

    assert said == f"{config}: service.metrics_port must be a whole number from 0 to 65535"


def test_store_in_config_reads_each_roles_file(chain: Path) -> None:
    ledger = toml(chain, '[replica]\nstore = "sqlite:///replica.sqlite"\n', "replica.toml")
    dso = toml(chain, '[dso]\nstore = "postgresql+psycopg://petra@db/dso"\n', "dso.toml")
    meter = meter_file(chain, 'store = "sqlite:///meter.sqlite"')
    monitor = toml(chain, '[service]\nstore = "sqlite:///m.sqlite"\n', "monitor.toml")

    assert store_in_config("ledger", ledger) == f"sqlite:///{chain}/replica.sqlite"
    assert store_in_config("dso", dso) == "postgresql+psycopg://petra@db/dso"
    assert store_in_config("meter", meter) == f"sqlite:///{chain}/meter.sqlite"
    assert store_in_config("monitor", monitor) == f"sqlite:///{chain}/m.sqlite"


def test_store_in_config_names_the_file_that_names_no_store(chain: Path) -> None:
    config = toml(chain, "[ledger]\nport = 1\n")

    with pytest.raises(ValueError, match=f"{config} names no store: give store in its"):
        store_in_config("ledger", config)
    with pytest.raises(ValueError, match="cannot read"):
        store_in_config("dso", chain / "absent.toml")
    with pytest.raises(ValueError, match=r"meter\.id is missing"):
        store_in_config("meter", toml(chain, "[meter]\n", "bad-meter.toml"))


# ---------------------------------------------------------------- the log


def logged(
    capsys: pytest.CaptureFixture[str], log_format: str, write: Any, level: str = "info"
) -> list[str]:
    console.configure_logging(level, "ledger", log_format)
    write(logging.getLogger("petra.test"))
    console.flush_logs()
    return capsys.readouterr().err.splitlines()


def test_lines_from_every_thread_are_written_each_in_its_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def write(log: logging.Logger) -> None:
        def many(name: str) -> None:
            for n in range(300):
                log.info("%s %d", name, n)

        threads = [threading.Thread(target=many, args=(f"t{k}",)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    lines = logged(capsys, "text", write)

    for k in range(4):
        mine = [line.rsplit(" ", 2)[1:] for line in lines if f" t{k} " in line]
        assert mine == [[f"t{k}", str(n)] for n in range(300)]


def test_an_error_printed_follows_every_line_logged_before_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console.configure_logging("info", "ledger")
    for n in range(20_000):  # far more than the log's thread writes in the meantime
        logging.getLogger("petra.test").info("line %d", n)
    console.err.print("error: the last word")

    lines = capsys.readouterr().err.splitlines()

    assert lines[-1] == "error: the last word"
    assert len(lines) == 20_001


def test_what_a_process_logged_is_written_when_it_exits() -> None:
    script = (
        "import logging\n"
        "from petra.console import configure_logging\n"
        "configure_logging('info', 'ledger')\n"
        "for n in range(2000): logging.getLogger('petra.test').info('line %d', n)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    assert [line.rsplit(" ", 1)[1] for line in done.stderr.splitlines()] == [
        str(n) for n in range(2000)
    ]


def test_a_json_log_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    def write(log: logging.Logger) -> None:
        log.info("two\nlines %s", "here")
        try:
            raise OSError("disk full")
        except OSError:
            log.exception("store failed")

    lines = logged(capsys, "json", write)

    first, second = (json.loads(line) for line in lines)
    assert len(lines) == 2
    assert {k: first[k] for k in ("role", "level", "logger", "message")} == {
        "role": "ledger",
        "level": "info",
        "logger": "petra.test",
        "message": "two\nlines here",
    }
    assert first["time"].endswith("Z")
    assert second["error"] == "OSError: disk full"
    assert "traceback" not in second  # only at debug


def test_no_secret_reaches_a_log_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PETRA_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PETRA_DSO_TOKEN", "pdso_secrettoken")
    from_file = tmp_path / "passphrase"
    from_file.write_text("another secret phrase\n")
    console.read_passphrase(from_file)

    def write(log: logging.Logger) -> None:
        log.info("opened with %s", PASSPHRASE)
        log.info("token pdso_secrettoken; store postgresql://petra:hunter22@db/petra")
        log.warning("file said %s", "another secret phrase")
        try:
            raise ValueError(f"bad passphrase {PASSPHRASE}")
        except ValueError:
            log.exception("refused")

    for log_format in ("text", "json"):
        text = "\n".join(logged(capsys, log_format, write, level="debug"))
        for secret in (PASSPHRASE, "pdso_secrettoken", "hunter22", "another secret phrase"):
            assert secret not in text, log_format
        assert "postgresql://petra:***@db/petra" in text


# ---------------------------------------------------------------- the metrics port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_default_metrics_port_in_use_warns_and_the_service_runs_on(
    taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = False
    with console.serving_metrics((new_registry(), "127.0.0.1", taken_port), by_default=True):
        ran = True

    assert ran
    assert f"metrics not served: port {taken_port} is in use; set --metrics-port" in (
        " ".join(capsys.readouterr().err.split())
    )


def test_a_chosen_metrics_port_in_use_is_refused(
    taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        pytest.raises(typer.Exit) as stopped,
        console.serving_metrics((new_registry(), "127.0.0.1", taken_port)),
    ):
        pytest.fail("the service must not run")

    assert stopped.value.exit_code == 2
    assert f"cannot serve the metrics on 127.0.0.1:{taken_port}" in capsys.readouterr().err


# ---------------------------------------------------------------- the examples

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


@pytest.mark.parametrize(
    ("example", "path"),
    [
        ("ledger", ("ledger", "serve")),
        ("replica", ("ledger", "replicate")),
        ("dso", ("dso", "serve")),
        ("mixer", ("mixer", "serve")),
        ("bidstore", ("bidstore", "serve")),
    ],
)
def test_each_example_is_read_by_its_command(
    chain: Path, example: str, path: tuple[str, ...]
) -> None:
    config = chain / f"{example}.toml"
    config.write_text((EXAMPLES / f"{example}.toml").read_text())
    for name in ("ledger-keys.json", "dso-keys.json", "ledger-passphrase", "dso-passphrase"):
        (chain / name).write_text("")

    ctx = parsed(["--config", str(config)], *path)

    assert ctx.params["log_format"] == "json"
    assert chosen(ctx, "metrics_port")


def test_the_meters_example_is_read_by_its_loader() -> None:
    from smartmeter.config import load_config

    settings = load_config(EXAMPLES / "meter.toml")

    assert (settings.log_format, settings.metrics_port) == ("json", 9440)
