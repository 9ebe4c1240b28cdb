"""The mixer coordinator's metrics (docs/operations.md): pools by state and the ledger's head
as last seen, read at each scrape; runs by how they ended, the time from a pool's start to its
landed transfer, joins and refusals by code, counted as they happen. Counts only: nothing
that tells one peer, input or output from another."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from ledger import HeadWatch
from service.metrics import ReadAtScrape, gauge

# How a run of a pool ended: its transfer landed; blames named a cheat; peers were silent
# past the timeout; an input was spent elsewhere; the ledger refused the transfer; the ledger
# could not take it in SUBMIT_ATTEMPTS.
RUN_OUTCOMES = ("landed", "blamed", "timed_out", "spent", "refused", "ledger_unavailable")
# How a pool ended: landed, failed after it started, or never started (too few peers).
POOL_OUTCOMES = ("landed", "failed", "unstarted")
# From a pool's start to its landed transfer, s: a run takes a few timeouts at most.
ROUND_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class MixerMetrics:
    """The coordinator's figures in `registry`; `pools` counts the pools held by state (under
    the coordinator's lock), `watch` is its view of the ledger (None: not watched)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        pools: Callable[[], Mapping[str, int]],
        watch: HeadWatch | None,
    ) -> None:
        self.pools, self.watch = pools, watch
        self.runs = Counter(
            "petra_mixer_rounds",
            "Runs of a pool's protocol that ended, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.pools_ended = Counter(
            "petra_mixer_pools_ended",
            "Pools that ended, by outcome (unstarted: too few peers by the deadline).",
            ["outcome"],
            registry=registry,
        )
        self.round_seconds = Histogram(
            "petra_mixer_round_seconds",
            "Seconds from a pool's start to its transfer landing on the ledger.",
            buckets=ROUND_BUCKETS_S,
            registry=registry,
        )
        self.joins = Counter(
            "petra_mixer_peers_joined", "Inputs that joined a pool.", registry=registry
        )
        self.refusals = Counter(
            "petra_mixer_refusals",
            "Requests the coordinator refused, by error code.",
            ["code"],
            registry=registry,
        )
        for outcome in RUN_OUTCOMES:  # every outcome shows from the start, at 0
            self.runs.labels(outcome)
        for outcome in POOL_OUTCOMES:
            self.pools_ended.labels(outcome)
        registry.register(ReadAtScrape(self._read, "the mixer's pools"))

    def _read(self) -> Iterable[Metric]:
        by_state = GaugeMetricFamily(
            "petra_mixer_pools", "Pools held now, by state.", labels=["state"]
        )
        for state, count in self.pools().items():
            by_state.add_metric([state], count)
        yield by_state
        if self.watch is not None:
            yield gauge(
                "mixer_ledger_height",
                "The ledger's head height as the coordinator last saw it.",
                self.watch.height,
            )
            age = self.watch.silence_s()
            if age is not None:
                yield gauge(
                    "mixer_ledger_contact_age_seconds",
                    "Seconds since the ledger last answered the coordinator.",
                    age,
                )
