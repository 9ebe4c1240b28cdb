"""`petra sim up` and `petra sim down` as a newcomer runs them: a community of three homes in
the background, its state file and printed guide, a wallet command of a home left to people,
a second `up` refused, `down` leaving no process of the folder, and `down` with nothing up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulation.up import STATE_FILE, belongs, down, processes_of

pytestmark = [pytest.mark.slow, pytest.mark.clocked]

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
UP_TIMEOUT_S = 240
UNSET = ("PETRA_PASSPHRASE", "PETRA_WALLET", "PETRA_CLOCK", "FORCE_COLOR", "PETRA_DEBUG")


def petra(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run(
        [*PETRA, *args],
        cwd=cwd,
        env={**environment, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def community(tmp_path: Path) -> Iterator[Path]:
    """`petra sim up --homes 3` in `tmp_path`; whatever the test did, nothing of it is left."""
    folder = tmp_path / "petra-sim"
    try:
        yield folder
    finally:
        down(folder)
        for pid in processes_of(folder):  # only if `down` failed: the test then fails below
            os.kill(pid, 9)


def test_up_shows_the_community_and_down_stops_all_of_it(tmp_path: Path, community: Path) -> None:
    up = petra(tmp_path, "sim", "up", "--homes", "3")
    assert up.returncode == 0, up.stderr
    state = json.loads((community / STATE_FILE).read_text())
    assert belongs(state["pid"], community)
    printed = up.stdout
    assert all(len(line) <= 80 for line in printed.splitlines()), printed
    for name in ("ledger", "replica", "dso", "mixer", "bidstore"):
        assert state["nodes"][name]["url"] in printed
    assert [h["name"] for h in state["homes"]] == ["alice", "bob", "home-03"]
    assert [h["agent"] for h in state["homes"]] == [False, False, True]
    for home in state["homes"]:
        assert home["meter_url"] in printed
    assert "petra-sim/homes/alice/wallet.json" in printed
    assert "petra-sim/nodes/passphrase" in printed
    head = httpx.get(f"{state['nodes']['ledger']['url']}/v1/head", timeout=10)
    assert head.status_code == 200

    # As the guide says: the wallet and the passphrase file, no clock to set.
    balance = petra(
        tmp_path,
        *("wallet", "balance", "--wallet", "petra-sim/homes/alice/wallet.json"),
        *("--passphrase-file", "petra-sim/nodes/passphrase"),
    )
    assert balance.returncode == 0, balance.stderr
    assert "nothing yet" in balance.stdout
    bob = {"PETRA_WALLET": "petra-sim/homes/bob/wallet.json"}
    bob["PETRA_PASSPHRASE"] = (community / "nodes" / "passphrase").read_text().strip()
    # as `up` prints it: the interval ten ahead
    assert "petra wallet withdraw epa:1000W@$T eca:1000W@$T fa:0.1EUR" in printed
    t = (int(time.time()) - state["epoch"]) // state["interval_s"] + 10
    withdraw = petra(tmp_path, "wallet", "withdraw", f"epa:1000W@{t}", "fa:0.1EUR", env=bob)
    assert withdraw.returncode == 0, withdraw.stderr
    assert f"EPA 1,000 W for interval {t}" in withdraw.stdout
    assert "FA 0.100000 EUR" in withdraw.stdout

    again = petra(tmp_path, "sim", "up", "--homes", "3")
    assert again.returncode == 2
    assert "already up in petra-sim" in again.stderr
    assert "Traceback" not in again.stderr
    assert belongs(state["pid"], community)

    pids = [state["pid"], *state["node_pids"]]
    assert len(pids) == 1 + 5 + 3
    stopped = petra(tmp_path, "sim", "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the community in petra-sim" in stopped.stdout
    assert not (community / STATE_FILE).exists()
    assert processes_of(community) == []
    assert not any(_running(pid) for pid in pids)

    nothing = petra(tmp_path, "sim", "down")
    assert nothing.returncode == 0
    assert nothing.stdout.strip() == "no community is up in petra-sim: nothing to stop"


def test_up_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "petra-sim").mkdir()
    (tmp_path / "petra-sim" / "notes.txt").write_text("mine\n")
    refused = petra(tmp_path, "sim", "up", "--homes", "3")
    assert refused.returncode == 2
    assert "holds files that are not a community's" in refused.stderr
    assert (tmp_path / "petra-sim" / "notes.txt").exists()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
