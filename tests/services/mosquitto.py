"""A real mosquitto broker on loopback for the session, which tests may stop and start again
(`simulation.broker.Mosquitto`, the one the simulated community runs too).

Use it with `from services.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401` and a
`mosquitto: Mosquitto` argument.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulation.broker import BrokerError, Mosquitto, mosquitto_executable
from simulation.processes import free_port

__all__ = ["Mosquitto", "mosquitto_fixture"]


@pytest.fixture(scope="session", name="mosquitto")
def mosquitto_fixture() -> Iterator[Mosquitto]:
    """A mosquitto broker on a free loopback port, anonymous, without persistence."""
    executable = mosquitto_executable()
    if executable is None:
        pytest.skip(
            "mosquitto not installed: run `make system-deps` (needs Debian's mosquitto package)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="petra-mosquitto-"))
    broker = Mosquitto(executable, workdir, free_port())
    try:
        try:
            broker.start()
        except BrokerError as error:
            pytest.fail(str(error))
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
