"""Modbus TCP devices polled into the monitoring store (DESIGN.md sections 10, 11 and 13).

One thread polls every configured device at its own interval with the smart meter's readers
(`smartmeter.modbus`: an Eastron SDM630 meter, a SunSpec inverter) and stores each reading as
feeds of the device's node, stamped with the poller's clock:

- `power` (W, kind `power`; positive importing, negative producing or exporting),
- `import_kwh`, `export_kwh` (kWh, kind `counter`: the device's lifetime registers),
- `voltage_l1`.. and `current_l1`.. (V and A, kind `other`) when the device reports them.

Kinds and units are set the first time the poller stores a feed, unless someone already did.
A device that does not answer is retried with the reader's bounded exponential backoff and
refused as `device_unavailable` once per outage, not once per attempt; a reading no meter
should give (NaN, a negative counter, a counter that went backwards, a broken SunSpec chain)
is refused as `bad_frame` or `counter_went_backwards` each time. A store failure loses that
one reading (`store_unavailable`): counters are cumulative, so the next one still carries
the energy. Nothing stops the poller but `close`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Self

from monitoring.config import ModbusDevice
from monitoring.mqtt_ingest import Kind, set_kinds_on_first_sight
from monitoring.samples import COUNTER, OTHER, POWER, Refused, Sample, sample
from monitoring.store import MonitoringStore, MonitoringStoreError
from smartmeter import (
    BadFrame,
    CounterWentBackwards,
    DeviceUnavailable,
    MeterSample,
    Sdm630Reader,
    SunSpecReader,
)

log = logging.getLogger("petra.monitoring.modbus")

SOURCE = "modbus"  # the ingestion path's name in the store's refusal counts
TIMEOUT_S = 2.0  # a request's answer; a LAN device answers in milliseconds
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 1.0, 60.0
KINDS: dict[str, Kind] = {
    "power": (POWER, "W"),
    "import_kwh": (COUNTER, "kWh"),
    "export_kwh": (COUNTER, "kWh"),
    **{f"voltage_l{n}": (OTHER, "V") for n in (1, 2, 3)},
    **{f"current_l{n}": (OTHER, "A") for n in (1, 2, 3)},
}


def reading_samples(node: str, reading: MeterSample, at: float, now: float) -> list[Sample]:
    """A meter reading as checked samples of `node` at `at` (unix seconds), energies in kWh."""
    values: dict[str, float] = {
        "power": reading.power_w,
        "import_kwh": reading.import_wh / 1000,
        "export_kwh": reading.export_wh / 1000,
    }
    for n, volts in enumerate(reading.voltages_v or (), start=1):
        values[f"voltage_l{n}"] = volts
    for n, amperes in enumerate(reading.currents_a or (), start=1):
        values[f"current_l{n}"] = amperes
    return [sample(node, name, at, value, now) for name, value in values.items()]


class _Polled:
    """One device's reader, when it is due next, and whether it is in an outage."""

    def __init__(
        self, device: ModbusDevice, reader: Sdm630Reader | SunSpecReader, due: float
    ) -> None:
        self.device = device
        self.reader = reader
        self.due = due
        self.unavailable = False
        self.typed = False  # its feeds' kinds are settled


class ModbusPoller:
    """Polls `devices` into `store` on one thread (module docstring). `clock`: unix seconds,
    stamping readings; `backoff_initial_s`/`backoff_max_s`: the readers' reconnect backoff."""

    def __init__(
        self,
        store: MonitoringStore,
        devices: Sequence[ModbusDevice],
        clock: Callable[[], float] = time.time,
        *,
        timeout_s: float = TIMEOUT_S,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.store = store
        self.stored = 0  # samples written since start, for the metrics
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        start = time.monotonic()
        self._polled: list[_Polled] = []
        for device in devices:
            kind: type[Sdm630Reader | SunSpecReader] = (
                Sdm630Reader if device.kind == "sdm630" else SunSpecReader
            )
            reader = kind(
                device.host,
                device.port,
                device.device_id,
                timeout_s=timeout_s,
                backoff_initial_s=backoff_initial_s,
                backoff_max_s=backoff_max_s,
                clock=time.monotonic,
            )
            self._polled.append(_Polled(device, reader, start))

    def start(self) -> None:
        """Start polling, every device at once and then at its interval."""
        self._thread = threading.Thread(target=self._run, name="modbus-poller", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling (a read under way finishes first) and drop the connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for polled in self._polled:
            polled.reader.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> None:
        while self._polled:
            polled = min(self._polled, key=lambda one: one.due)
            if self._stop.wait(max(0.0, polled.due - time.monotonic())):
                return
            try:
                self._poll(polled)
            except Exception:  # a fault of one poll must not end the poller
                log.exception("polling %s failed", polled.device.node)
            # A poll that overran its interval is not made up for: the next one starts afresh.
            polled.due = max(polled.due + polled.device.interval_s, time.monotonic())

    def _poll(self, polled: _Polled) -> None:
        """Read one device and store its reading, or count why not."""
        device = polled.device
        try:
            reading = polled.reader.read()
        except DeviceUnavailable as exc:
            if not polled.unavailable:
                polled.unavailable = True
                self.store.refuse(SOURCE, "device_unavailable", f"{device.node}: {exc}")
            return
        except CounterWentBackwards as exc:
            self._back(polled)
            self.store.refuse(SOURCE, "counter_went_backwards", f"{device.node}: {exc.reason}")
            return
        except BadFrame as exc:
            self._back(polled)
            self.store.refuse(SOURCE, "bad_frame", f"{device.node}: {exc.reason}")
            return
        self._back(polled)
        now = self._clock()
        try:
            samples = reading_samples(device.node, reading, now, now)
        except Refused as refused:
            self.store.refuse(SOURCE, refused.reason, f"{device.node}: {refused.message}")
            return
        try:
            self.store.write(samples, now=now)
            self.stored += len(samples)
            if not polled.typed:
                set_kinds_on_first_sight(
                    self.store, {(s.node, s.name): KINDS.get(s.name) for s in samples}
                )
                polled.typed = True
        except MonitoringStoreError as exc:
            self.store.refuse(SOURCE, "store_unavailable", f"{device.node}: {exc}")

    def _back(self, polled: _Polled) -> None:
        if polled.unavailable:
            polled.unavailable = False
            log.info("Modbus device %s answers again", polled.device.node)
