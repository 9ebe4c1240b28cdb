"""The systemd units of deploy/systemd: each passes `systemd-analyze verify`, each command line
parses with the real command line, each is hardened as docs/operations.md says, and CPython
runs with what `MemoryDenyWriteExecute=yes` enforces."""

from __future__ import annotations

import ctypes
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer._click.core import Command, Context  # typer's own click
from typer.core import TyperGroup

from petra.cli import app

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
INSTALLED = "/opt/petra/bin/petra"
VENV_PETRA = Path(sys.executable).parent / "petra"
SERVICES = {
    "petra-ledger.service": ("ledger", "serve"),
    "petra-replica.service": ("ledger", "replicate"),
    "petra-dso.service": ("dso", "serve"),
    "petra-meter.service": ("meter", "run"),
    "petra-mixer.service": ("mixer", "serve"),
    "petra-bidstore.service": ("bidstore", "serve"),
    "petra-monitor.service": ("monitor", "serve"),
}
WITH_KEYS = ("petra-ledger.service", "petra-dso.service", "petra-meter.service")
BACKED_UP = ("ledger", "dso", "meter", "monitor")  # the roles with a store of their own
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "UMask": "0077",
}
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux 6.3 and later


def unit_file(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit's settings by section and key, every value a key was given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return sections


def exec_start(name: str) -> list[str]:
    [line] = unit_file(name)["Service"]["ExecStart"]
    return shlex.split(line)


def test_every_role_has_a_unit_and_nothing_else_is_there() -> None:
    expected = {*SERVICES, "petra-backup@.service", "petra-backup@.timer"}
    assert {path.name for path in UNITS.iterdir()} == expected


@pytest.mark.parametrize("name", [*SERVICES, "petra-backup@.service"])
def test_every_service_is_hardened(name: str) -> None:
    service = unit_file(name)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], (name, key)
    assert "@system-service" in service["SystemCallFilter"]
    if service.get("DynamicUser") != ["yes"]:
        assert (service["User"], service["Group"]) == (["petra"], ["petra"])
        assert "petra" in service["StateDirectory"]
    assert service["ConfigurationDirectory"] == ["petra"]
    assert exec_start(name)[0] == INSTALLED


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_long_running_service_restarts_after_network(name: str) -> None:
    unit = unit_file(name)
    assert unit["Service"]["Restart"] == ["on-failure"]
    assert "network-online.target" in unit["Unit"]["After"][0].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", WITH_KEYS)
def test_a_key_passphrase_comes_as_a_credential(name: str) -> None:
    service = unit_file(name)["Service"]
    [credential] = service["LoadCredential"]
    assert credential.startswith("passphrase:/")
    command = exec_start(name)
    at = command.index("--passphrase-file")
    assert command[at + 1] == "${CREDENTIALS_DIRECTORY}/passphrase"


def test_the_meter_fits_a_small_board_and_the_bid_store_waits_for_tor() -> None:
    meter = unit_file("petra-meter.service")["Service"]
    assert meter["MemoryMax"] == ["160M"]
    bidstore = unit_file("petra-bidstore.service")["Unit"]
    assert "tor.service" in bidstore["After"][0].split()


def _click_command(args: list[str]) -> tuple[Command, list[str]]:
    """The `petra` subcommand that `args` name, and the arguments left for it."""
    command = typer.main.get_command(app)
    while isinstance(command, TyperGroup):
        name, *args = args
        found = command.get_command(Context(command), name)
        assert found is not None, f"petra has no command {name!r}"
        command = found
    return command, args


def _parses(command_line: list[str], tmp_path: Path) -> None:
    """`command_line` (after the petra binary) parses with the real command: every option is
    one it has, and every option's value is accepted (files standing in for /etc/petra)."""
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a passphrase\n")
    args = [
        arg.replace("${CREDENTIALS_DIRECTORY}/passphrase", str(passphrase)) for arg in command_line
    ]
    command, rest = _click_command(args)
    known = {opt for param in command.params for opt in param.opts}
    for arg in rest:
        if arg.startswith("--"):
            assert arg in known, f"`petra {' '.join(args)}`: {arg} is not an option of it"
    # resilient_parsing: the options and their arity are checked; the files are not read.
    command.make_context(command.name or "petra", rest, resilient_parsing=True)


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_command_line_parses_with_the_real_cli(name: str, tmp_path: Path) -> None:
    command = exec_start(name)
    assert tuple(command[1:3]) == SERVICES[name]
    assert f"/etc/petra/{name.removeprefix('petra-').removesuffix('.service')}.toml" in command
    _parses(command[1:], tmp_path)


@pytest.mark.parametrize("role", BACKED_UP)
def test_the_backup_command_line_parses_for_every_role_with_a_store(
    role: str, tmp_path: Path
) -> None:
    command = [arg.replace("%i", role) for arg in exec_start("petra-backup@.service")]
    assert command[1:3] == [role, "backup"]
    assert f"/var/lib/petra/backups/{role}.backup" in command
    _parses(command[1:], tmp_path)


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    assert VENV_PETRA.is_file(), "the venv has no petra: run `make venv`"
    names = [path.name for path in UNITS.iterdir()]
    # The template's instances too, so that %i is a role: ExecStart's arguments are checked.
    names += ["petra-backup@ledger.service", "petra-backup@ledger.timer"]
    for name in names:
        template = name.replace("@ledger.", "@.")
        text = (UNITS / template).read_text().replace(INSTALLED, str(VENV_PETRA))
        (tmp_path / name).write_text(text)
    verified = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # systemd-analyze warns of an unknown key or a value it ignores but exits 0: both fail.
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr


MDWE_CHECK = """
import ctypes, mmap
import assets, bidstore, dso, ledger, mixer, monitoring, service, smartmeter, wallet
import fastapi, pydantic, sqlalchemy, uvicorn
from assets import Keypair
from assets.keyfile import dump_keys
from petra.cli import app
dump_keys({"meter": Keypair.generate()}, b"passphrase")  # argon2 and the sealing cipher
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda n: n + 1)  # a libffi closure
assert callback(1) == 2
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused")
"""


def _deny_write_execute() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


@pytest.mark.slow  # a few seconds: it imports every package in a fresh interpreter
def test_python_and_petras_libraries_run_with_memory_deny_write_execute() -> None:
    """What `MemoryDenyWriteExecute=yes` enforces, set on a child with prctl(PR_SET_MDWE)
    (kept across exec): the interpreter, every package and its native libraries load and
    work, while a writable and executable mapping is refused."""
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_deny_write_execute, check=True)
    except subprocess.SubprocessError:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    checked = subprocess.run(
        [sys.executable, "-c", MDWE_CHECK],
        preexec_fn=_deny_write_execute,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (checked.returncode, checked.stdout.strip()) == (0, "refused"), checked.stderr
