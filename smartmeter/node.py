"""The smart-meter daemon (`petra meter run --config meter.toml`): every part of the meter, run
together over one database.

- a `SourceRunner` per configured source, storing each reading before anything else and
  closing interval energies (`smartmeter.sources`);
- the `MeterLedgerIndex`, following the ledger for the meter's regulations, issues and deposits
  (`smartmeter.ledger_index`);
- the owner's signed API (`smartmeter.api`), served by the caller on loopback, with
  `/healthz` and `/readyz`; the daemon's metrics in `MeterNode.registry` (`smartmeter.metrics`),
  and a `HeadWatch` asking the ledger its head now and then, for the readiness;
- the loop (`MeterNode.tick`, every `tick_s` and when a bill falls due by the ledger clock):
  close the bills that are due and queue them
  (`close_due_bills`), send the queue to the DSO (`BillSender`), and publish new readings for
  the monitoring layer (`ReadingPublisher`).

Everything the daemon must not lose is in the database before it is acted on (readings, the
sources' interval checkpoints, the ledger's facts, issue nonces, deposit counters, the bill
queue, the publishing cursor), so a SIGKILL at any moment loses nothing: on start each part
resumes from what is stored.

The deposit keys derive from the meter's own key (`deposit_seed`), so the sealed key file is
the one secret to back up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import nacl.encoding
import nacl.hash
from fastapi import FastAPI

from assets import Genesis, Keypair, chain_id
from dso.client import DsoClient
from ledger import HeadWatch
from ledger.client import LedgerClient
from service.clock import next_boundary, wall_seconds_until
from service.clock import now as ledger_now
from service.health import install_health
from service.metrics import new_registry
from smartmeter.api import OwnerService, create_app
from smartmeter.billing_loop import BillSender, close_due_bills
from smartmeter.config import MeterConfig, PublishConfig, SourceConfig
from smartmeter.energy import MeterConfig as EnergyConfig
from smartmeter.ledger_index import MeterLedgerIndex
from smartmeter.metrics import meter_checks, register_meter_metrics
from smartmeter.mqtt import Broker, MqttPublisher
from smartmeter.sources import SourceRunner
from smartmeter.store import MeterStore, StoredReading

log = logging.getLogger(__name__)

TICK_S = 1.0  # how often the loop closes bills, sends them and publishes readings
PUBLISHED = "published_readings"  # named state: the last reading seq the broker acknowledged
PUBLISH_BATCH = 500  # readings published per tick at most
PUBLISH_WAIT_S = 5.0  # how long a tick waits for the broker's acknowledgements
# How often the ledger is asked its head, for the readiness (a meter's index follows the ledger's
# stream: this only tells a quiet ledger from a lost one, so it may be rare on a small board).
LEDGER_HEAD_EVERY_S = 10.0
_SEED_PERSON = b"PETRA-dep-seed-1"  # BLAKE2b personalisation of the deposit seed: 16 bytes


def deposit_seed(meter_key: Keypair) -> bytes:
    """The seed the meter's deposit keys derive from: its own key's, in a domain of its own,
    so no deposit key is the meter key and a backup of the key file restores them all."""
    return nacl.hash.blake2b(
        b"",
        digest_size=32,
        key=meter_key.seed,
        person=_SEED_PERSON,
        encoder=nacl.encoding.RawEncoder,
    )


def energy_config(genesis: Genesis, source: SourceConfig) -> EnergyConfig:
    """How `source`'s readings become interval energy on the chain of `genesis`."""
    return EnergyConfig(
        interval_s=genesis.interval_s,
        epoch=genesis.epoch,
        max_gap_s=source.max_gap_s,
        max_power_w=source.max_power_w,
    )


class ReadingPublisher:
    """Publishes the stored readings to the monitoring broker as `<base>/<node>` JSON, one
    message per reading (`{"<source>_import_kwh", "<source>_export_kwh", "<source>_power_w",
    "time"}`), from the store, in order, at QoS 1. The cursor moves only once the broker has
    acknowledged, so a broker that is down delays the readings and never drops them (a reading
    may be published twice after a crash; emoncms keeps one value per time)."""

    def __init__(self, store: MeterStore, config: PublishConfig, client_id: str) -> None:
        self.store = store
        self.config = config
        self.publisher = MqttPublisher(
            Broker(config.host, config.port), client_id=client_id, base_topic=config.base_topic
        )
        self._cursor = int(store.get_state(PUBLISHED) or 0)
        self._in_flight: int | None = None  # seq of the last reading published, not acknowledged
        self._messages = 0  # messages published for the readings in flight
        self.published = 0  # messages the broker acknowledged since start

    def start(self) -> None:
        self.publisher.start()

    def close(self) -> None:
        self.publisher.close()

    @property
    def connected(self) -> bool:
        """Whether the broker has the publisher's connection now."""
        return self.publisher.connected

    @property
    def cursor(self) -> int:
        """The last reading the broker acknowledged."""
        return self._cursor

    def publish_due(self, wait_s: float = PUBLISH_WAIT_S) -> int:
        """Publish the readings stored since the cursor (a batch): how many messages the
        broker acknowledged (0 while it has not; refused readings are not published)."""
        if self._in_flight is None:
            readings = self.store.readings(after=self._cursor, limit=PUBLISH_BATCH)
            if not readings:
                return 0
            self._messages = 0
            for reading in readings:
                inputs = _inputs(reading)
                if inputs:
                    self.publisher.publish_node(self.config.node, inputs, at=reading.at)
                    self._messages += 1
            self._in_flight = readings[-1].seq
        # Unacknowledged messages stay with paho, which sends them again once it reconnects.
        if not self.publisher.wait_published(wait_s):
            return 0
        self._cursor, self._in_flight = self._in_flight, None
        self.store.put_state(PUBLISHED, self._cursor)
        self.published += self._messages
        return self._messages


def _inputs(reading: StoredReading) -> dict[str, float]:
    """A reading as emoncms inputs (kWh and W); nothing for a refused one."""
    if reading.problem is not None:
        return {}
    inputs = {}
    if reading.import_wh is not None:
        inputs[f"{reading.source}_import_kwh"] = reading.import_wh / 1000
    if reading.export_wh is not None:
        inputs[f"{reading.source}_export_kwh"] = reading.export_wh / 1000
    if reading.power_w is not None:
        inputs[f"{reading.source}_power_w"] = reading.power_w
    return inputs


class MeterNode:
    """The daemon's parts for `config`, on the chain of `genesis`, signing with `meter_key`.

    `start()` starts the sources, the ledger index and the loop; `app()` is the owner's API to serve
    on loopback, with `/healthz` and `/readyz`; `stop()` ends them all and closes the database.
    `registry` holds the daemon's metrics (`smartmeter.metrics`), to serve on a port of their
    own. `clock` gives ledger unix seconds (`service.clock`): readings' stamps, intervals, when
    a bill falls due.
    """

    def __init__(
        self,
        config: MeterConfig,
        genesis: Genesis,
        meter_key: Keypair,
        *,
        clock: Callable[[], float] = ledger_now,
        tick_s: float = TICK_S,
    ) -> None:
        self.config, self.genesis, self.meter_key = config, genesis, meter_key
        self.clock, self.tick_s = clock, tick_s
        self.chain = chain_id(genesis)
        self.store = MeterStore(config.store)
        self.ledger = LedgerClient(config.ledger)
        self.dso = DsoClient(config.dso)
        try:
            self._build(config, genesis, meter_key, clock)
        except BaseException:
            self.dso.close()
            self.ledger.close()
            self.store.close()
            raise
        self._stopping = threading.Event()
        self._loop: threading.Thread | None = None
        self._told_interval: int | None = None  # the interval the ledger's height was told in
        self.registry = new_registry()
        register_meter_metrics(self.registry, self)

    def _build(
        self,
        config: MeterConfig,
        genesis: Genesis,
        meter_key: Keypair,
        clock: Callable[[], float],
    ) -> None:
        self.ledger_index = MeterLedgerIndex(
            self.ledger, self.store, genesis, config.meter, deposit_seed(meter_key)
        )
        self.runners = [
            SourceRunner(
                source.name,
                source,
                energy_config(genesis, source),
                self.store,
                clock=clock,
                client_id=f"petra-{config.meter}-{source.name}",
            )
            for source in config.sources
        ]
        self.sender = BillSender(self.store, self.dso)
        self.desk = OwnerService(
            self.store,
            self.ledger_index,
            self.ledger,
            self.chain,
            config.meter,
            meter_key,
            config.owner,
            config.credit_line,
            clock=clock,
            closing_delay_s=config.closing_delay_s,
        )
        self.publisher = (
            None
            if config.publish is None
            else ReadingPublisher(self.store, config.publish, f"petra-{config.meter}-publisher")
        )
        self.ledger_watch = HeadWatch.of_node(config.ledger, LEDGER_HEAD_EVERY_S)

    def app(self) -> FastAPI:
        """The owner's API and the daemon's health (`smartmeter.metrics.meter_checks`); serve
        it on loopback only."""
        app = create_app(self.desk)
        install_health(app, meter_checks(self))
        return app

    def start(self) -> None:
        self.ledger_index.start()
        self.ledger_watch.start()
        for runner in self.runners:
            runner.start()
        if self.publisher is not None:
            self.publisher.start()
        self._loop = threading.Thread(target=self._run, name="meter-loop", daemon=True)
        self._loop.start()

    def tick(self) -> dict[str, Any]:
        """Close the bills that are due, send the queue, publish new readings: what it did."""
        billed = close_due_bills(
            store=self.store,
            ledger_index=self.ledger_index,
            chain=self.chain,
            meter_id=self.config.meter,
            meter_key=self.meter_key,
            interval_s=self.genesis.interval_s,
            epoch=self.genesis.epoch,
            closing_delay_s=self.config.closing_delay_s,
            now=self.clock(),
            sources=[source.name for source in self.config.sources],
        )
        for interval in billed:
            log.info("bill of interval %d queued for the DSO", interval)
        sent = self.sender.send_due()
        if sent.delivered:
            log.info("%d bills delivered to the DSO", sent.delivered)
        published = 0 if self.publisher is None else self.publisher.publish_due()
        self._tell_ledger()
        return {"billed": billed, "sent": sent, "published": published}

    def _tell_ledger(self) -> None:
        """Once an interval, a line on how far the meter follows the ledger."""
        interval = self.genesis.interval_at(int(self.clock()))
        if interval == self._told_interval:
            return
        self._told_interval = interval
        index = self.ledger_index
        if index.problem is not None:
            log.error("interval %d: the ledger index stopped: %s", interval, index.problem)
        elif index.last_error is not None:
            log.warning(
                "interval %d: ledger followed to height %d; it cannot be read now: %s",
                *(interval, index.height, index.last_error),
            )
        else:
            log.info("interval %d: ledger followed to height %d", interval, index.height)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                # A database or network failure must not end the loop: the next tick retries.
                log.exception("the meter's loop failed; trying again in %s s", self.tick_s)
            self._stopping.wait(min(self.tick_s, self.seconds_to_next_bill()))

    def seconds_to_next_bill(self) -> float:
        """Wall seconds until the next interval's bill falls due: `closing_delay_s` after the
        interval ends, by the ledger clock."""
        closes = self.genesis.epoch + self.config.closing_delay_s
        due = next_boundary(self.clock(), closes, self.genesis.interval_s)
        return wall_seconds_until(due, self.clock)

    def stop(self) -> None:
        """Stop every part, then close the clients and the database."""
        self._stopping.set()
        if self._loop is not None:
            self._loop.join()
        for runner in self.runners:
            runner.stop()
        if self.publisher is not None:
            self.publisher.close()
        self.ledger_index.stop()
        self.ledger_watch.stop()
        self.dso.close()
        self.ledger.close()
        self.store.close()
