"""The monitoring service of a simulated community (`petra sim run --monitor`): a mosquitto
broker the homes' meters publish their readings to, and `petra monitor serve` reading them,
set up as a community manager would with the `petra monitor` commands: the community, its
master data (a member and a consumption supply point per home, and a generation supply point
per home with PV), what each meter input measures, a manager and one login per member.

Everything is written in the run's `monitor/` folder: the store, `monitor.toml` (to open the
pages again after the run, without the broker) and `logins.txt` (private)."""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from simulation.broker import BrokerError, Mosquitto, mosquitto_executable
from simulation.config import SimConfig
from simulation.processes import free_port
from simulation.profiles import HomePlan

COMMUNITY = "sim"
MANAGER = "manager"
PAGES_PORT = 7470  # `petra monitor serve`'s default, for opening the pages after the run


class MonitorSetupError(Exception):
    """The broker or the monitoring service could not be set up."""


@dataclass(frozen=True)
class MonitorPlan:
    """Where the run's monitoring lives: its folder, store, the configuration the run serves
    with (`run_config`, with the broker) and the one for afterwards (`config`)."""

    folder: Path
    store: str
    config: Path
    run_config: Path
    logins: Path


def generation_point(meter_id: str) -> str:
    """The id of a home's PV supply point: its CUPS with a border-point suffix (`1F`)."""
    return f"{meter_id}1F"


def start_broker(folder: Path) -> Mosquitto:
    """A mosquitto broker on a free loopback port, its files in `folder`."""
    executable = mosquitto_executable()
    if executable is None:
        raise MonitorSetupError(
            "--monitor needs mosquitto: run `make system-deps` (Debian's mosquitto package)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(executable, folder, free_port())
    try:
        broker.start()
    except BrokerError as exc:
        raise MonitorSetupError(str(exc)) from None
    return broker


def prepare(
    folder: Path,
    config: SimConfig,
    plans: Sequence[HomePlan],
    broker: Mosquitto,
    run: Callable[..., None],
) -> MonitorPlan:
    """Write the master data and configurations, and set the store up through `run(name,
    *petra_args)` (a `petra` command that must succeed)."""
    folder.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{folder / 'monitor.sqlite'}"
    tz = config.location.timezone
    price = config.price_consumption / 1_000_000
    export = config.price_production / 1_000_000
    run(
        "monitor-community",
        *("monitor", "community", "add", COMMUNITY, "--name", config.name),
        *("--timezone", tz, "--price", f"{price:.6f}", "--export-price", f"{export:.6f}"),
        *("--store", store),
    )
    files = _master_data(folder, plans)
    run(
        "monitor-import",
        *("monitor", "import", "members", *map(str, files)),
        *("--community", COMMUNITY, "--store", store),
    )
    feeds = folder / "feeds.csv"
    with feeds.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["node", "name", "kind", "unit", "supply_point", "role"])
        for plan in plans:
            for name, kind, unit, point, role in _feeds(plan):
                writer.writerow([plan.name, name, kind, unit, point or "", role or ""])
    run("monitor-feeds", "monitor", "feed", "import", str(feeds), "--store", store)
    logins = folder / "logins.txt"
    lines = []
    for username, role, member in [
        (MANAGER, "manager", None),
        *((plan.name, "member", plan.name) for plan in plans),
    ]:
        password = secrets.token_urlsafe(12)
        password_file = folder / f".password-{username}"
        _write_private(password_file, password + "\n")
        args = ["monitor", "user", "add", username, "--role", role, "--community", COMMUNITY]
        if member is not None:
            args += ["--member", member]
        try:
            run("monitor-user", *args, "--password-file", str(password_file), "--store", store)
        finally:
            password_file.unlink(missing_ok=True)
        lines.append(f"{username} {password} ({role})")
    _write_private(logins, "\n".join(lines) + "\n")
    community = (
        f'[[community]]\nid = "{COMMUNITY}"\nname = "{config.name}"\ntimezone = "{tz}"\n'
        f"price = {price:.6f}\nexport_price = {export:.6f}\n"
    )
    service = f'[service]\nstore = "{store}"\nport = {PAGES_PORT}\n\n'
    config_path = folder / "monitor.toml"
    config_path.write_text(service + community)
    run_config = folder / "monitor-run.toml"
    run_config.write_text(
        service
        + community
        + f'\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nbase_topic = "emon"\n'
    )
    return MonitorPlan(folder, store, config_path, run_config, logins)


def publish_section(broker: Mosquitto, plan: HomePlan) -> str:
    """The meter configuration's `[publish]` table: its readings to the run's broker."""
    return (
        f'[publish]\nhost = "{broker.host}"\nport = {broker.port}\nnode = "{plan.name}"\n'
        'base_topic = "emon"\n'
    )


def _feeds(plan: HomePlan) -> list[tuple[str, str, str, str | None, str | None]]:
    """(input, kind, unit, supply point, role) of what a home's meter publishes: its grid
    meter's counters and power, and its inverter's (`smartmeter.node` names them)."""
    feeds: list[tuple[str, str, str, str | None, str | None]] = [
        ("grid_import_kwh", "counter", "kWh", plan.meter_id, "consumption"),
        ("grid_export_kwh", "counter", "kWh", plan.meter_id, "export"),
        ("grid_power_w", "power", "W", None, None),
    ]
    if plan.pv_kwp > 0:  # an inverter exports what it produces: its power is negative
        point = generation_point(plan.meter_id)
        feeds += [
            ("pv_export_kwh", "counter", "kWh", point, "generation"),
            ("pv_import_kwh", "counter", "kWh", None, None),
            ("pv_power_w", "power", "W", None, None),
        ]
    return feeds


def _master_data(folder: Path, plans: Sequence[HomePlan]) -> list[Path]:
    members, points, plants = (
        folder / "members.csv",
        folder / "supply_points.csv",
        folder / "installations.csv",
    )
    share = 1 / len(plans) if plans else 0.0
    with members.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["ref", "name", "email"])
        for plan in plans:
            writer.writerow([plan.name, f"Household {plan.name.removeprefix('home-')}", ""])
    with plants.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "name", "peak_kw", "cost", "commissioned"])
        for plan in plans:
            if plan.pv_kwp > 0:
                cost = round(plan.pv_kwp * 1_200, 2)  # about 1,200 EUR per kWp installed
                writer.writerow(
                    [f"pv-{plan.name}", f"PV of {plan.name}", f"{plan.pv_kwp:.2f}", cost, ""]
                )
    with points.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["cups", "member", "kind", "contracted_kw", "share", "installation"])
        for plan in plans:
            writer.writerow([plan.meter_id, plan.name, "consumption", "5.75", f"{share:.6f}", ""])
            if plan.pv_kwp > 0:
                writer.writerow(
                    [
                        generation_point(plan.meter_id),
                        plan.name,
                        "generation",
                        "",
                        "",
                        f"pv-{plan.name}",
                    ]
                )
    return [members, plants, points]


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as private:
        private.write(text)
