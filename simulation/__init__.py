"""The harness around PETra's roles, no product code: what the tests, the benches, the demo and
the coming simulation share to run a community on one machine.

- `scenario`: a chain and signed transactions in a few lines (`Scenario`, `pay`).
- `processes`: real `petra` processes on loopback, one process group each: start, wait until
  serving, stop (`start_petra`, `wait_serving`, `stop`, `PetraProcess`, `LedgerProcess`), and
  `free_port`.
- `devices`: simulated Modbus TCP devices, an SDM630 meter and a SunSpec inverter.

Imported on their own, as they load more: `simulation.demo` (`petra ledger demo`, rich),
`simulation.tornet` (the private Tor network of `petra tor testnet`, stem) and the benches of
`petra bench`, one module each under `simulation.bench`. Publishing a real onion service is
product code and stays in `bidstore.onion`.
"""

from simulation.devices import (
    ManualClock,
    PowerProfile,
    SimulatedDevice,
    SimulatedSdm630,
    SimulatedSunSpecInverter,
)
from simulation.processes import (
    LedgerProcess,
    NotServing,
    PetraProcess,
    free_port,
    start_petra,
    stop,
    wait_serving,
)
from simulation.scenario import DEFAULT_EPOCH, Scenario, pay

__all__ = [
    "DEFAULT_EPOCH",
    "LedgerProcess",
    "ManualClock",
    "NotServing",
    "PetraProcess",
    "PowerProfile",
    "Scenario",
    "SimulatedDevice",
    "SimulatedSdm630",
    "SimulatedSunSpecInverter",
    "free_port",
    "pay",
    "start_petra",
    "stop",
    "wait_serving",
]
