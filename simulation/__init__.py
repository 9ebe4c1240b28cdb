"""The community simulation and the harness around PETra's roles, no product code: what the
tests, the benches, the demos and `petra sim` share to run a community on one machine.

- `config`: the simulation's TOML configuration, its embedded default and its checks.
- `profiles`: each home's load (BDEW, demandlib), PV (pvlib) and battery, per interval, seeded.
- `agents`: the agents' strategies: the forecast trader, zero intelligence, passive.
- `harness`: the community as processes on loopback, on one accelerated ledger clock.
- `inprocess`: the same rules, billing, mixing protocol and matching without processes or HTTP.
- `record`, `metrics`, `report`: what a run recorded, what it measured, the report it writes.
- `sharing`: the run's homes under each sharing agreement beside peer-to-peer trading.
- `run`: `petra sim run` (`simulate`); `trydevice`: `petra sim device`.
- `scenario`: a chain and signed transactions in a few lines (`Scenario`, `pay`).
- `processes`: real `petra` processes on loopback, one process group each: start, wait until
  serving, stop (`start_petra`, `wait_serving`, `stop`, `PetraProcess`, `LedgerProcess`), and
  `free_port`.
- `devices`: simulated Modbus TCP devices, an SDM630 meter and a SunSpec inverter.

Imported on their own, as they load more: `simulation.demo` (`petra ledger demo`, rich),
`simulation.tornet` (the private Tor network of `petra tor testnet`, stem) and the benches of
`petra bench`, one module each under `simulation.bench`. Publishing a real onion service is
product code and stays in `bidstore.onion`.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`).
"""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from simulation.agents import STRATEGIES as STRATEGIES
    from simulation.agents import Market as Market
    from simulation.agents import OrderIntent as OrderIntent
    from simulation.agents import Policy as Policy
    from simulation.agents import forecast_from_history as forecast_from_history
    from simulation.agents import policy_for as policy_for
    from simulation.bench.meter import MeterBenchError as MeterBenchError
    from simulation.bench.meter import run_meter_bench as run_meter_bench
    from simulation.bench.monitor import MonitorBenchError as MonitorBenchError
    from simulation.bench.monitor import run_monitor_bench as run_monitor_bench
    from simulation.bench.sim import SimBenchResult as SimBenchResult
    from simulation.bench.sim import bench_sim as bench_sim
    from simulation.broker import BrokerError as BrokerError
    from simulation.broker import Mosquitto as Mosquitto
    from simulation.broker import mosquitto_executable as mosquitto_executable
    from simulation.config import DEFAULT_TOML as DEFAULT_TOML
    from simulation.config import ConfigError as ConfigError
    from simulation.config import HomeDefaults as HomeDefaults
    from simulation.config import HomeSpec as HomeSpec
    from simulation.config import Location as Location
    from simulation.config import SimConfig as SimConfig
    from simulation.config import check_ports_free as check_ports_free
    from simulation.config import config_from_wire as config_from_wire
    from simulation.config import config_to_wire as config_to_wire
    from simulation.config import load_config as load_config
    from simulation.devices import ManualClock as ManualClock
    from simulation.devices import PowerProfile as PowerProfile
    from simulation.devices import SimulatedDevice as SimulatedDevice
    from simulation.devices import SimulatedSdm630 as SimulatedSdm630
    from simulation.devices import SimulatedSunSpecInverter as SimulatedSunSpecInverter
    from simulation.harness import Community as Community
    from simulation.harness import HarnessError as HarnessError
    from simulation.harness import run_processes as run_processes
    from simulation.inprocess import InProcessFailed as InProcessFailed
    from simulation.inprocess import run_in_process as run_in_process
    from simulation.metrics import LedgerTrace as LedgerTrace
    from simulation.metrics import Metrics as Metrics
    from simulation.metrics import compute_metrics as compute_metrics
    from simulation.metrics import trace_ledger as trace_ledger
    from simulation.monitor import MonitorSetupError as MonitorSetupError
    from simulation.nats import NatsCluster as NatsCluster
    from simulation.nats import NatsError as NatsError
    from simulation.nats import nats_server_executable as nats_server_executable
    from simulation.processes import LedgerProcess as LedgerProcess
    from simulation.processes import NotServing as NotServing
    from simulation.processes import PetraProcess as PetraProcess
    from simulation.processes import free_port as free_port
    from simulation.processes import start_petra as start_petra
    from simulation.processes import stop as stop
    from simulation.processes import wait_serving as wait_serving
    from simulation.profiles import HomePlan as HomePlan
    from simulation.profiles import plan_community as plan_community
    from simulation.profiles import pv_year_kwh_per_kwp as pv_year_kwh_per_kwp
    from simulation.profiles import self_consumption as self_consumption
    from simulation.record import RunRecord as RunRecord
    from simulation.report import ReportFiles as ReportFiles
    from simulation.report import redraw as redraw
    from simulation.report import summary as summary
    from simulation.report import write_report as write_report
    from simulation.run import RunOutcome as RunOutcome
    from simulation.run import simulate as simulate
    from simulation.run import stopping_on_signals as stopping_on_signals
    from simulation.scenario import DEFAULT_EPOCH as DEFAULT_EPOCH
    from simulation.scenario import Scenario as Scenario
    from simulation.scenario import pay as pay
    from simulation.trydevice import device_profile as device_profile
    from simulation.trydevice import serve_device as serve_device
    from simulation.up import UpError as UpError
    from simulation.up import describe_lines as describe_lines
    from simulation.up import down as down
    from simulation.up import serve_community as serve_community
    from simulation.up import shown as shown
    from simulation.up import standing_config as standing_config
    from simulation.up import up as up

__all__, __getattr__ = lazy_door(__name__, __file__)
