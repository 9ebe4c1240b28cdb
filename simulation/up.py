"""`petra sim up` and `petra sim down`: the community of `petra sim run` kept running in the
background, in real time, for people to try PETra by hand.

`up` resolves the configuration (real time, short intervals, a horizon of a day, the first two
homes left to people: alice, with PV, and bob), writes it to `<folder>/sim-config.json` and
starts `petra sim serve-community` in a session of its own, its log in
`<folder>/community.log`. That process brings the community up on the wall clock (ledger time
is wall time, so a person's `petra wallet` needs no `PETRA_CLOCK`), writes where everything is
to `<folder>/community.json` (atomically, with its pid and every node's), runs until the
horizon or SIGTERM/SIGINT, stops every node it started and removes the state file. `down`
sends it SIGTERM and waits; whatever of the folder is still running after that (a process
killed with SIGKILL leaves its nodes behind) is stopped by the pids in the state file.

A process belongs to a folder when its command line names the folder's absolute path: every
node's does (its genesis or its meter's configuration lies there), and so does the background
process's (`--dir`). That is how `up` tells a live community from a stale state file, and
how the tests check nothing is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import tempfile
import threading
import time
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service import WALL_CLOCK
from simulation.config import HomeSpec, SimConfig, config_from_wire, config_to_wire
from simulation.harness import Community, plan_clock
from simulation.processes import start_petra
from simulation.profiles import draw_homes, plan_community
from simulation.run import stopping_on_signals

log = logging.getLogger("petra.sim.up")

STATE_FILE = "community.json"  # where everything is, while the community is up
CONFIG_FILE = "sim-config.json"  # the resolved configuration the background process runs
LOG_FILE = "community.log"
OWNED = (STATE_FILE, CONFIG_FILE, LOG_FILE, "nodes", "homes")  # what `up` may clear
DEFAULT_INTERVAL_S = 60
HORIZON_S = 86_400  # a day of intervals, then the community stops by itself
MIX_WAIT_S = 45.0  # wall seconds a pool waits for more peers: time for a second person
STEP_TIMEOUT_S = 600.0  # wall seconds a person has to take a trade's next step
MANUAL = (
    HomeSpec("alice", annual_kwh=3200.0, pv_kwp=4.0, strategy="passive"),
    HomeSpec("bob", annual_kwh=4200.0, strategy="passive"),
)
UP_TIMEOUT_S = 300.0
DOWN_TIMEOUT_S = 120.0  # the community's close joins agents (30 s) and stops every node
KILL_WAIT_S = 10.0


class UpError(Exception):
    """The standing community cannot be started, found or stopped: one sentence."""


# ------------------------------------------------------------ the configuration


def standing_config(config: SimConfig, *, homes: int | None, interval_s: int) -> SimConfig:
    """`config` for people: real time, `interval_s`-second intervals for a day, and explicit
    homes whose first two are alice (with PV) and bob, unless the configuration lists its own
    homes (then its first two are the people's). The start is set when the community starts
    (`at_now`)."""
    if interval_s < 10:
        raise UpError(f"--interval-s must be at least 10 s for people to keep up, not {interval_s}")
    if not config.mixing:
        raise UpError("a community to try by hand mixes: set mixing = true in the configuration")
    specs = config.home_specs
    count = homes if homes is not None else (len(specs) or config.homes)
    if specs and homes is not None and homes != len(specs):
        raise UpError(
            f"the configuration lists {len(specs)} homes, so --homes cannot be {homes}: drop "
            "--homes or edit its [[home]] tables"
        )
    if count < 2:
        raise UpError(f"a community to try by hand needs at least 2 homes, not {count}")
    if not specs:
        # The drawn neighbours are those `petra sim run` would draw, from the same seed.
        draws = np.random.default_rng(config.seed).spawn(3)[0]
        drawn = draw_homes(dataclasses.replace(config, homes=count), draws)
        specs = (*MANUAL, *drawn[len(MANUAL) :])
    return dataclasses.replace(
        config,
        homes=len(specs),
        home_specs=specs,
        interval_s=interval_s,
        intervals=max(1, HORIZON_S // interval_s),
        speed=1.0,
    )


def at_now(config: SimConfig, now: float) -> SimConfig:
    """`config` starting at the interval boundary that leaves the nodes their boot time from
    `now` (unix seconds), in the location's time zone; then the genesis epoch is the start
    of the interval `now` is in (`plan_clock`)."""
    _, prelude, _ = plan_clock(config, config.homes)
    start = (int(now) // config.interval_s + prelude) * config.interval_s
    zone = zoneinfo.ZoneInfo(config.location.timezone)
    return dataclasses.replace(config, start=datetime.fromtimestamp(start, zone))


# ------------------------------------------------------------ the background process


def serve_community(folder: Path, *, autopilot: bool) -> None:
    """The background process of `up`: run the community of `<folder>/sim-config.json` until
    its horizon or SIGTERM/SIGINT, keeping `<folder>/community.json` while it is up."""
    folder = folder.resolve()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in (
        "httpx",
        "pymodbus",
        "petra.mixer.client",
    ):  # a line per request or poll would bury the rest
        logging.getLogger(chatty).setLevel(logging.WARNING)
    wire = json.loads((folder / CONFIG_FILE).read_text())
    config = at_now(config_from_wire(wire), time.time())
    plans = plan_community(config)
    names = [plan.name for plan in plans]
    manual = names if not autopilot else names[: len(MANUAL)]
    stop = threading.Event()
    state = folder / STATE_FILE

    def status(text: str) -> None:
        log.info("%s", text)

    with stopping_on_signals(stop), contextlib.ExitStack() as stack:
        stack.callback(lambda: state.unlink(missing_ok=True))
        community = stack.enter_context(
            Community(
                config,
                plans,
                folder,
                on_status=status,
                stop=stop,
                manual=manual,
                mix_wait_s=MIX_WAIT_S,
                step_timeout_s=STEP_TIMEOUT_S,
                clock=WALL_CLOCK,  # ledger time is wall time: a person's wallet needs no setting
            )
        )
        community.start()  # a signal now only sets `stop`: a start cut short would orphan nodes
        # An authorization is in force from the interval after the one its regulation names:
        # wait until the ledger says every meter is, so a person's first withdrawal is not
        # refused.
        _wait_until_authorized(community, stop)
        if stop.is_set():
            log.info("stopping before the first interval, as asked")
            return
        _write_atomically(state, json.dumps(_state(community), indent=2).encode())
        log.info(
            "up: %d homes, %d intervals of %d s", len(plans), config.intervals, config.interval_s
        )
        community.run()
        log.info("stopping every node" if stop.is_set() else "the horizon is reached: stopping")
    log.info("stopped")


def _wait_until_authorized(community: Community, stop: threading.Event) -> None:
    """Return once the ledger has every home's meter authorized in the current interval (at
    most three intervals), or `stop` is set."""
    meters = {home.plan.meter_id for home in community.homes}
    deadline = time.monotonic() + 3 * community.config.interval_s
    while not stop.is_set() and time.monotonic() < deadline:
        now = community.interval_now()
        try:
            answer = httpx.get(f"{community.url('ledger')}/v1/regulation/{now}", timeout=10)
            named = {
                m["meter"]
                for m in answer.json().get("meters", [])
                if m.get("public_key") and not m.get("banned")
            }
        except (httpx.HTTPError, ValueError):
            named = set()
        if meters <= named:
            return
        log.info("waiting for the meters' authorization to be in force (interval %d)", now)
        stop.wait(2.0)


def _state(community: Community) -> dict[str, Any]:
    described = community.describe()
    meters = [h.meter for h in community.homes if h.meter is not None]
    return {
        **described,
        "pid": os.getpid(),
        "node_pids": [n.process.pid for n in [*community.nodes, *meters]],
        "community_log": str(community.folder / LOG_FILE),
        "ends": described["epoch"] + (described["last_interval"] + 1) * described["interval_s"],
    }


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` at once: a reader sees the old file or the whole new one."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------ up and down


def up(
    folder: Path,
    config: SimConfig,
    *,
    autopilot: bool,
    on_status: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Start `config` (from `standing_config`) in the background in `folder` and return its
    state once it is up. UpError if one is already up there, or it fails to start."""
    folder = folder.resolve()
    running = find_running(folder)
    if running is not None:
        raise UpError(
            f"a community is already up in {shown(folder)} (pid {running['pid']}): "
            f"`petra sim down --dir {shown(folder)}` stops it"
        )
    _clear(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config_to_wire(config), indent=2) + "\n")
    flag = "--autopilot" if autopilot else "--no-autopilot"
    background = start_petra(
        "sim", "serve-community", "--dir", str(folder), flag, log=folder / LOG_FILE
    )
    deadline = time.monotonic() + UP_TIMEOUT_S
    while True:
        state = _read_state(folder)
        if state is not None and state.get("pid") == background.pid:
            return state
        if background.poll() is not None:
            raise UpError(
                f"the community did not start (exit {background.returncode}); "
                f"{shown(folder / LOG_FILE)} ends with: {_last_line(folder / LOG_FILE)}"
            )
        if time.monotonic() > deadline:
            _stop_pid(background.pid, [])
            raise UpError(
                f"the community was not up after {UP_TIMEOUT_S:.0f} s and was stopped; "
                f"see {shown(folder / LOG_FILE)}"
            )
        on_status(_last_line(folder / LOG_FILE).partition(f"{log.name}: ")[2] or "starting")
        time.sleep(0.3)


def down(folder: Path) -> dict[str, Any] | None:
    """Stop the community up in `folder`: SIGTERM its background process, wait for it to stop
    every node, then stop any node of the folder still running. Its last state, or None when
    none was up (a stale state file is removed)."""
    folder = folder.resolve()
    state = _read_state(folder)
    if state is None:
        return None
    alive = belongs(int(state.get("pid", 0)), folder)
    _stop_pid(int(state["pid"]) if alive else 0, [int(p) for p in state.get("node_pids", [])])
    (folder / STATE_FILE).unlink(missing_ok=True)
    return state if alive else None


def find_running(folder: Path) -> dict[str, Any] | None:
    """The state of the community up in `folder`, or None; a stale state file (its process
    gone) is removed, and any node of it still running is stopped."""
    folder = folder.resolve()
    state = _read_state(folder)
    if state is None:
        return None
    if belongs(int(state.get("pid", 0)), folder):
        return state
    _stop_pid(0, [int(p) for p in state.get("node_pids", [])])
    (folder / STATE_FILE).unlink(missing_ok=True)
    return None


def processes_of(folder: Path) -> list[int]:
    """Pids of the processes whose command line names `folder` (its absolute path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and int(entry.name) != os.getpid()
            and belongs(int(entry.name), folder)
        ):
            found.append(int(entry.name))
    return found


def belongs(pid: int, folder: Path) -> bool:
    """Whether process `pid` runs and its command line names `folder` (absolute)."""
    if pid <= 0:
        return False
    try:
        arguments = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    mark = str(folder.resolve()).encode()
    return any(a == mark or a.startswith(mark + b"/") for a in arguments)


def _stop_pid(pid: int, node_pids: list[int]) -> None:
    """SIGTERM the background process `pid` (0: none) and wait for it; then SIGTERM, and after
    `KILL_WAIT_S` SIGKILL, the process group of every node still running."""
    folder_of = {p: _cmdline(p) for p in node_pids}
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone([pid], DOWN_TIMEOUT_S):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone([pid], KILL_WAIT_S)
    # A node left behind is one still running the same command line (not a reused pid).
    left = [p for p in node_pids if folder_of[p] is not None and _cmdline(p) == folder_of[p]]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p, sig)
        if _wait_gone(left, KILL_WAIT_S):
            return


def _cmdline(pid: int) -> bytes | None:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    """Wait until none of `pids` runs (zombies count as gone); whether they all went."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not [p for p in pids if _running(p)]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        status = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        (folder / STATE_FILE).unlink(missing_ok=True)  # not ours to read: stale
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def _clear(folder: Path) -> None:
    """Remove a previous community's files from `folder`; refuse a folder holding others."""
    import shutil

    if not folder.exists():
        return
    if not folder.is_dir():
        raise UpError(f"{shown(folder)} is not a folder: choose another --dir")
    present = {p.name for p in folder.iterdir()}
    if present and CONFIG_FILE not in present:
        raise UpError(
            f"{shown(folder)} holds files that are not a community's: choose another --dir"
        )
    leftovers = processes_of(folder)
    if leftovers:
        raise UpError(
            f"processes of a previous community still run in {shown(folder)} (pids "
            f"{', '.join(map(str, leftovers))}): stop them first"
        )
    for name in OWNED:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "nothing"
    return lines[-1] if lines else "nothing"


# ------------------------------------------------------------ what people read


def shown(path: Path | str) -> str:
    """`path` relative to the working directory when it lies below it, else absolute."""
    text = str(path)
    with contextlib.suppress(ValueError):
        return str(Path(text).relative_to(Path.cwd())) or "."
    return text


def describe_lines(state: dict[str, Any]) -> list[str]:
    """Where everything of the community in `state` is and what to run next, in lines of at
    most 80 columns (paths shown relative to the working directory)."""
    nodes: dict[str, dict[str, Any]] = state["nodes"]
    interval_s, epoch = int(state["interval_s"]), int(state["epoch"])
    homes: list[dict[str, Any]] = state["homes"]
    people = [h for h in homes if not h["agent"]]
    ends = datetime.fromtimestamp(int(state["ends"])).strftime("%Y-%m-%d %H:%M")
    folder = shown(state["folder"])
    now = (int(time.time()) - epoch) // interval_s
    labels = {"ledger": "ledger", "replica": "replica", "dso": "DSO"}
    labels |= {"mixer": "mixer", "bidstore": "bid store"}
    lines = [
        f"A community of {len(homes)} homes is up in {folder} (pid {state['pid']}).",
        f"Intervals of {interval_s} s on the wall clock; interval now: {now} (from "
        f"{datetime.fromtimestamp(epoch + now * interval_s).strftime('%H:%M:%S')}).",
        f"It runs until {ends} or `petra sim down --dir {folder}`.",
        "",
        "Services",
    ]
    lines += [f"  {labels.get(name, name):<10} {node['url']}" for name, node in nodes.items()]
    lines += ["", "Homes"]
    for home in homes:
        driver = "autopilot" if home["agent"] else "yours"
        pv = f"PV {home['pv_kwp']:g} kWp" if home["pv_kwp"] else "no PV"
        lines.append(f"  {home['name']:<10} {home['meter_url']:<23} {pv:<13} {driver}")
        if not home["agent"]:
            lines.append(f"  {'':<10} wallet {shown(home['wallet'])}")
    lines += [
        "",
        "Files",
        f"  genesis    {shown(state['genesis'])}",
        f"  passphrase {shown(state['passphrase_file'])} (every wallet's and key file's)",
        f"  DSO token  {shown(state['admin_token_file'])}",
        f"  logs       {shown(state['community_log'])}, {folder}/nodes/*.log,",
        f"             {folder}/homes/*/meter.log",
    ]
    if people:
        first = people[0]
        lines += [
            "",
            f"Next, as {first['name']} (the same in another terminal for "
            f"{people[1]['name'] if len(people) > 1 else 'another home'}):",
            f"  export PETRA_WALLET={shown(first['wallet'])}",
            f'  export PETRA_PASSPHRASE="$(cat {shown(state["passphrase_file"])})"',
            f"  T=$(( ($(date +%s) - {epoch}) / {interval_s} + 10 ))  # ten intervals ahead",
            "  petra wallet balance",
            "  petra wallet withdraw epa:1000W@$T eca:1000W@$T fa:0.1EUR",
            "  petra wallet mix --rounds 1",
            "The walk-through is docs/tutorial.md.",
        ]
    return lines
