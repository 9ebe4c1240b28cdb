"""Interval energy from a meter's counters: M_t of DESIGN.md section 7, in whole joules.

The hardware reports two cumulative counters, energy imported and energy exported, at irregular
times. M_t, the net energy of interval t (consumption positive), is built from counter deltas
only, never by integrating power. Interval k covers [epoch + k*interval_s,
epoch + (k+1)*interval_s) (DESIGN.md section 3).

Units. Counters are converted once, on arrival, to whole joules (the billing unit): the exact
binary value of the device's number times 3600 (Wh) or 3.6e6 (kWh), rounded half to even. A
joule is finer than any register (1 Wh = 3600 J, 0.01 kWh = 36000 J), so integer registers are
exact and a float register loses at most half a joule per reading; deltas telescope, so totals
are exact in those joules. Times are converted once to whole microseconds, rounded half to even.

Deltas. A counter that goes down has either wrapped (its register of `wrap_at_j` overflowed: the
delta is exact, modulo the register, accepted only if it is under half the register, the serial
number arithmetic of RFC 1982, and under `max_power_w` when set) or been reset (the new value is
under `reset_below_j`: the delta is the new value, the energy counted since the reset, and what
was counted between the last reading and the reset is lost, so the intervals are suspect).
Anything else going down is a broken reading.

Apportioning. The energy between two consecutive valid readings is known only in total. If they
are at most `max_gap_s` apart, the delta is split linearly in time over the intervals the span
touches, by cumulative rounding (half to even) so the parts sum to the delta exactly. If they are
further apart, nothing is invented: the whole delta is unattributed (reported, kept in the
totals, so energy is conserved) and the intervals inside the gap are missing. The part of a span
that falls in intervals already reported (a reading delivered after `close(now)` gave up waiting)
is unattributed too: a reported interval never changes.

Status of a reported interval, first match wins:
- `missing`: no span of at most `max_gap_s` covers any of it;
- `suspect`: a rejected reading fell in it, or a counter reset inside a span touching it;
- `partial`: spans cover only part of it (the rest is before the first reading or in a gap);
- `measured`: spans cover all of it, and nothing is wrong.

A wrap is exact, so it only adds a note to `reasons`. Pure: no I/O, no clock; `now` is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, StrEnum
from fractions import Fraction
from typing import Any

US_PER_S = 1_000_000
MAX_TIME_S = 253_402_300_799  # 9999-12-31T23:59:59Z: later times are a broken clock
CLOSE_LIMIT = 100_000  # intervals reported per `close` call, so a clock jump cannot stall it
STATE_VERSION = 1


class EnergyUnit(Enum):
    """The unit a device reports its counters in; the value is joules per unit."""

    WH = 3_600
    KWH = 3_600_000


class IntervalStatus(StrEnum):
    """How far an interval's energy can be trusted; see the module docstring for the rule."""

    MEASURED = "measured"
    PARTIAL = "partial"
    SUSPECT = "suspect"
    MISSING = "missing"


class RejectCode(StrEnum):
    """Why a reading was rejected: one code per check of `IntervalMeter.add`."""

    NOT_A_NUMBER = "not_a_number"  # time or a counter is NaN, infinite or not a number
    NEGATIVE = "negative"  # a counter below zero
    BEFORE_EPOCH = "before_epoch"  # time before the chain's epoch
    AFTER_YEAR_9999 = "after_year_9999"  # time after MAX_TIME_S
    DUPLICATE_TIME = "duplicate_time"  # the same microsecond as the previous valid reading
    OUT_OF_ORDER = "out_of_order"  # earlier than the previous valid reading
    ABOVE_REGISTER = "above_register"  # a counter at or over `wrap_at_j`
    BACKWARDS = "backwards"  # a counter went down and it is neither a reset nor a wrap
    IMPLAUSIBLE = "implausible"  # more energy than `max_power_w` allows in the time


@dataclass(frozen=True, slots=True)
class CounterReading:
    """One reading as the device gave it, unchecked: `at` in unix seconds, the two cumulative
    counters in `unit`, and `source` (the device or register) for diagnostics."""

    at: float
    import_counter: float
    export_counter: float
    unit: EnergyUnit = EnergyUnit.WH
    source: str = ""


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """How readings become interval energy.

    `interval_s` and `epoch` (unix seconds) as in genesis. `max_gap_s`: the longest span between
    two readings whose energy is still apportioned (about twice the reading period).
    `reset_below_j`: a counter that goes down to under this many joules was reset.
    `wrap_at_j`: the register's modulus in joules (a 32-bit register of 0.01 kWh:
    2**32 * 36_000), None if it never wraps. `max_power_w`: deltas above this power are
    rejected as implausible, None for no check.
    """

    interval_s: int
    epoch: int = 0
    max_gap_s: int = 60
    reset_below_j: int = 3_600_000
    wrap_at_j: int | None = None
    max_power_w: int | None = None

    def __post_init__(self) -> None:
        if self.interval_s < 1:
            raise ValueError(f"interval_s is at least 1 s, not {self.interval_s}")
        if self.max_gap_s < 1:
            raise ValueError(f"max_gap_s is at least 1 s, not {self.max_gap_s}")
        if self.reset_below_j < 0:
            raise ValueError(f"reset_below_j is not negative, not {self.reset_below_j}")
        if self.wrap_at_j is not None and self.wrap_at_j < 2:
            raise ValueError(f"wrap_at_j is at least 2 J, not {self.wrap_at_j}")
        if self.max_power_w is not None and self.max_power_w < 1:
            raise ValueError(f"max_power_w is at least 1 W, not {self.max_power_w}")


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    """One closed interval: energies in joules, `net_j` = `import_j` - `export_j` is M_t.

    `readings`: valid readings taken in it. `covered_us`: microseconds of it inside spans of at
    most `max_gap_s`. `reasons`: why it is not `measured`, and notes (a wrap), in order.
    """

    interval: int
    import_j: int
    export_j: int
    net_j: int
    status: IntervalStatus
    readings: int
    covered_us: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unattributed:
    """Energy, joules, between two valid readings at `start_us` and `end_us` (unix
    microseconds) that no interval got: the span was a gap, or its intervals were reported."""

    start_us: int
    end_us: int
    import_j: int
    export_j: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReadingOutcome:
    """What `IntervalMeter.add` made of a reading.

    Accepted: `code` and `reason` are None, `import_j` and `export_j` are the deltas since the
    previous valid reading in joules (0 for the first), `notes` name a reset or wrap, and
    `unattributed` is the part of the deltas no interval got, if any. Rejected: `code` and
    `reason` say why, and the deltas are 0.
    """

    code: RejectCode | None = None
    reason: str | None = None
    import_j: int = 0
    export_j: int = 0
    notes: tuple[str, ...] = ()
    unattributed: Unattributed | None = None

    @property
    def accepted(self) -> bool:
        return self.code is None


class _Rejected(Exception):
    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class _Open:
    """What is known so far about an interval not yet reported."""

    import_j: int = 0
    export_j: int = 0
    covered_us: int = 0
    readings: int = 0
    suspect: bool = False
    reasons: list[str] | None = None

    def note(self, reason: str, *, suspect: bool = False) -> None:
        if self.reasons is None:
            self.reasons = []
        self.reasons.append(reason)
        self.suspect = self.suspect or suspect


@dataclass(frozen=True, slots=True)
class _Sample:
    at_us: int
    import_j: int
    export_j: int


# ---------------------------------------------------------------- conversions at the boundary


def counter_joules(value: float, unit: EnergyUnit) -> int:
    """`value` (a finite number in `unit`) in whole joules, rounded half to even."""
    return round(Fraction(value) * unit.value)


def time_us(at: float) -> int:
    """`at` (finite unix seconds) in whole microseconds, rounded half to even."""
    return round(Fraction(at) * US_PER_S)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _apportion(total: int, start: int, end: int, cut: int) -> int:
    """The part of `total` that falls in [start, cut) when spread evenly over [start, end)."""
    return round(Fraction(total * (cut - start), end - start))


# ---------------------------------------------------------------- the accumulator


class IntervalMeter:
    """Turns counter readings, given in time order, into interval energy.

    `add` takes one reading and never raises on bad data: it returns a `ReadingOutcome`.
    `close` reports each interval exactly once, in order, when no later reading can change it.
    `to_state` and `from_state` carry everything across a restart as a JSON-able dict.
    """

    def __init__(self, config: MeterConfig) -> None:
        self.config = config
        self._last: _Sample | None = None
        self._next: int | None = None  # the first interval not yet reported
        self._open: dict[int, _Open] = {}
        self.unattributed_import_j = 0
        self.unattributed_export_j = 0

    # -- time

    @property
    def _interval_us(self) -> int:
        return self.config.interval_s * US_PER_S

    def interval_of(self, at_us: int) -> int:
        """The index of the interval holding `at_us` (unix microseconds)."""
        return (at_us - self.config.epoch * US_PER_S) // self._interval_us

    def _start_us(self, interval: int) -> int:
        return self.config.epoch * US_PER_S + interval * self._interval_us

    def _slot(self, interval: int) -> _Open | None:
        """The accumulator of `interval`, or None once it has been reported."""
        if self._next is None or interval < self._next:
            return None
        return self._open.setdefault(interval, _Open())

    # -- readings

    def add(self, reading: CounterReading) -> ReadingOutcome:
        """Take the next reading; see `ReadingOutcome`. A rejected reading marks suspect the
        interval it is timed in, or the earliest unreported one if that is not possible."""
        try:
            sample = self._sample(reading)
            import_j, import_note, import_reset = self._delta("import", sample)
            export_j, export_note, export_reset = self._delta("export", sample)
            for name, joules in (("import", import_j), ("export", export_j)):
                if not self._plausible(joules, sample):
                    raise _Rejected(
                        RejectCode.IMPLAUSIBLE,
                        f"{name} of {joules} J since the previous reading is over the meter's "
                        f"{self.config.max_power_w} W",
                    )
        except _Rejected as rejected:
            self._mark_rejected(reading, rejected.reason)
            return ReadingOutcome(code=rejected.code, reason=rejected.reason)
        notes = tuple(note for note in (import_note, export_note) if note)
        unattributed = self._attribute(
            sample, import_j, export_j, notes, suspect=import_reset or export_reset
        )
        return ReadingOutcome(
            import_j=import_j, export_j=export_j, notes=notes, unattributed=unattributed
        )

    def _sample(self, reading: CounterReading) -> _Sample:
        """The reading in joules and microseconds, or _Rejected: the static checks."""
        for name, value in (
            ("time", reading.at),
            ("import counter", reading.import_counter),
            ("export counter", reading.export_counter),
        ):
            if not _finite(value):
                raise _Rejected(RejectCode.NOT_A_NUMBER, f"{name} is {value!r}, not a number")
        for name, value in (
            ("import counter", reading.import_counter),
            ("export counter", reading.export_counter),
        ):
            if value < 0:
                raise _Rejected(RejectCode.NEGATIVE, f"{name} is negative: {value!r}")
        sample = _Sample(
            time_us(reading.at),
            counter_joules(reading.import_counter, reading.unit),
            counter_joules(reading.export_counter, reading.unit),
        )
        if sample.at_us < self.config.epoch * US_PER_S:
            raise _Rejected(
                RejectCode.BEFORE_EPOCH, f"time {reading.at!r} is before epoch {self.config.epoch}"
            )
        if sample.at_us > MAX_TIME_S * US_PER_S:
            raise _Rejected(RejectCode.AFTER_YEAR_9999, f"time {reading.at!r} is after year 9999")
        wrap_at = self.config.wrap_at_j
        for name, joules in (("import", sample.import_j), ("export", sample.export_j)):
            if wrap_at is not None and joules >= wrap_at:
                raise _Rejected(
                    RejectCode.ABOVE_REGISTER,
                    f"{name} counter {joules} J is over its register's range of {wrap_at} J",
                )
        if self._last is not None and sample.at_us == self._last.at_us:
            raise _Rejected(
                RejectCode.DUPLICATE_TIME,
                f"time {reading.at!r} repeats the previous reading's {self._last.at_us} us",
            )
        if self._last is not None and sample.at_us < self._last.at_us:
            raise _Rejected(
                RejectCode.OUT_OF_ORDER,
                f"time {reading.at!r} is before the previous reading's {self._last.at_us} us",
            )
        return sample

    def _delta(self, name: str, sample: _Sample) -> tuple[int, str | None, bool]:
        """The counter's increase in joules since the last reading, a note on a reset or wrap,
        and whether it was reset; _Rejected if it went down otherwise."""
        if self._last is None:
            return 0, None, False
        before = self._last.import_j if name == "import" else self._last.export_j
        after = sample.import_j if name == "import" else sample.export_j
        if after >= before:
            return after - before, None, False
        wrap_at = self.config.wrap_at_j
        if wrap_at is not None:
            wrapped = after + wrap_at - before
            if 2 * wrapped < wrap_at and self._plausible(wrapped, sample):
                return (
                    wrapped,
                    f"{name} counter wrapped at {wrap_at} J: {before} -> {after} J",
                    False,
                )
        if after < self.config.reset_below_j:
            note = (
                f"{name} counter reset: {before} -> {after} J, the energy counted between the "
                "previous reading and the reset is lost"
            )
            return after, note, True
        raise _Rejected(
            RejectCode.BACKWARDS,
            f"{name} counter went back from {before} J to {after} J, neither a reset "
            f"(under {self.config.reset_below_j} J) nor a wrap",
        )

    def _plausible(self, joules: int, sample: _Sample) -> bool:
        """Whether `joules` since the last reading stay within `max_power_w`."""
        if self.config.max_power_w is None or self._last is None:
            return True
        return joules * US_PER_S <= self.config.max_power_w * (sample.at_us - self._last.at_us)

    def _mark_rejected(self, reading: CounterReading, reason: str) -> None:
        if self._last is None or self._next is None:
            return  # the meter has not started: there is no interval to mark
        target = self.interval_of(self._last.at_us)
        if _finite(reading.at):
            at_us = time_us(reading.at)
            if self._last.at_us <= at_us <= MAX_TIME_S * US_PER_S:
                target = self.interval_of(at_us)
        slot = self._open.setdefault(max(target, self._next), _Open())
        slot.note(f"rejected reading at {reading.at!r} ({reading.source}): {reason}", suspect=True)

    def _attribute(
        self,
        sample: _Sample,
        import_j: int,
        export_j: int,
        notes: tuple[str, ...],
        *,
        suspect: bool,
    ) -> Unattributed | None:
        """Spread the deltas since the last reading over the intervals the span touches."""
        last, self._last = self._last, sample
        if self._next is None:
            self._next = self.interval_of(sample.at_us)
        reading_slot = self._slot(self.interval_of(sample.at_us))
        if reading_slot is not None:
            reading_slot.readings += 1
        if last is None:
            return None
        start, end = last.at_us, sample.at_us
        first, final = self.interval_of(start), self.interval_of(end - 1)
        if end - start > self.config.max_gap_s * US_PER_S:
            gap = (
                f"no reading from {start} us to {end} us, over max_gap_s = "
                f"{self.config.max_gap_s} s: its energy is unattributed"
            )
            for interval in sorted({first, final}):
                slot = self._slot(interval)
                if slot is not None:
                    slot.note(gap)
                    for note in notes:
                        slot.note(note, suspect=suspect)
            return self._unattributed(start, end, import_j, export_j, gap)
        lost_import = lost_export = 0
        for interval in range(first, final + 1):
            low = max(start, self._start_us(interval))
            high = min(end, self._start_us(interval + 1))
            part_import = _apportion(import_j, start, end, high) - _apportion(
                import_j, start, end, low
            )
            part_export = _apportion(export_j, start, end, high) - _apportion(
                export_j, start, end, low
            )
            slot = self._slot(interval)
            if slot is None:
                lost_import += part_import
                lost_export += part_export
                continue
            slot.import_j += part_import
            slot.export_j += part_export
            slot.covered_us += high - low
            for note in notes:
                slot.note(note, suspect=suspect)
        if lost_import or lost_export:
            return self._unattributed(
                start, end, lost_import, lost_export, "part of the span is in reported intervals"
            )
        return None

    def _unattributed(
        self, start: int, end: int, import_j: int, export_j: int, reason: str
    ) -> Unattributed:
        self.unattributed_import_j += import_j
        self.unattributed_export_j += export_j
        return Unattributed(start, end, import_j, export_j, reason)

    # -- reporting

    def close(self, now: float | None = None, *, limit: int = CLOSE_LIMIT) -> list[IntervalEnergy]:
        """The intervals that are final and not yet reported, in order, each reported once;
        at most `limit` of them (call again while it returns `limit`).

        An interval is final once a valid reading is at or after its end. With `now` (unix
        seconds, a time by which every reading taken before it has been given to `add`), when
        the last reading is over `max_gap_s` before `now`, any further reading starts a gap, so
        every interval ending by `now` is final too: those after the last reading are missing.
        """
        if self._last is None or self._next is None:
            return []
        final = self.interval_of(self._last.at_us)  # intervals before this one are final
        if now is not None and _finite(now):
            now_us = time_us(now)
            if now_us - self._last.at_us > self.config.max_gap_s * US_PER_S:
                final = max(final, self.interval_of(now_us))
        final = min(final, self._next + max(limit, 0))
        closed = [self._report(interval) for interval in range(self._next, final)]
        self._next = max(self._next, final)
        return closed

    def _report(self, interval: int) -> IntervalEnergy:
        slot = self._open.pop(interval, None) or _Open()
        reasons = list(slot.reasons or [])
        if slot.covered_us == 0:
            status = IntervalStatus.MISSING
            reasons.append("no span of readings at most max_gap_s apart covers it")
        elif slot.suspect:
            status = IntervalStatus.SUSPECT
        elif slot.covered_us < self._interval_us:
            status = IntervalStatus.PARTIAL
            reasons.append(f"readings cover {slot.covered_us} of {self._interval_us} us")
        else:
            status = IntervalStatus.MEASURED
        return IntervalEnergy(
            interval=interval,
            import_j=slot.import_j,
            export_j=slot.export_j,
            net_j=slot.import_j - slot.export_j,
            status=status,
            readings=slot.readings,
            covered_us=slot.covered_us,
            reasons=tuple(reasons),
        )

    # -- persistence

    def to_state(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart, as a JSON-able dict of integers,
        strings, booleans, lists and null."""
        last = self._last
        return {
            "v": STATE_VERSION,
            "interval_s": self.config.interval_s,
            "epoch": self.config.epoch,
            "last": None
            if last is None
            else {"at_us": last.at_us, "import_j": last.import_j, "export_j": last.export_j},
            "next_interval": self._next,
            "open": [
                {
                    "interval": interval,
                    "import_j": slot.import_j,
                    "export_j": slot.export_j,
                    "covered_us": slot.covered_us,
                    "readings": slot.readings,
                    "suspect": slot.suspect,
                    "reasons": list(slot.reasons or []),
                }
                for interval, slot in sorted(self._open.items())
            ],
            "unattributed_import_j": self.unattributed_import_j,
            "unattributed_export_j": self.unattributed_export_j,
        }

    @classmethod
    def from_state(cls, config: MeterConfig, state: dict[str, Any]) -> IntervalMeter:
        """The meter `to_state` saved, under `config`; ValueError if `state` is not one, or
        was saved under other intervals (its indices would name the wrong times)."""
        try:
            if state["v"] != STATE_VERSION:
                raise ValueError(f"meter state version {state['v']!r}, expected {STATE_VERSION}")
            if (state["interval_s"], state["epoch"]) != (config.interval_s, config.epoch):
                raise ValueError(
                    f"meter state is for {state['interval_s']!r} s intervals from "
                    f"{state['epoch']!r}, the config says {config.interval_s} s from {config.epoch}"
                )
            meter = cls(config)
            last = state["last"]
            if last is not None:
                meter._last = _Sample(
                    _int(last["at_us"]), _int(last["import_j"]), _int(last["export_j"])
                )
            meter._next = None if state["next_interval"] is None else _int(state["next_interval"])
            for entry in state["open"]:
                if not isinstance(entry["reasons"], list):
                    raise ValueError(f"meter state reasons are {entry['reasons']!r}, not a list")
                reasons = [str(reason) for reason in entry["reasons"]]
                meter._open[_int(entry["interval"])] = _Open(
                    import_j=_int(entry["import_j"]),
                    export_j=_int(entry["export_j"]),
                    covered_us=_int(entry["covered_us"]),
                    readings=_int(entry["readings"]),
                    suspect=bool(entry["suspect"]),
                    reasons=reasons or None,
                )
            meter.unattributed_import_j = _int(state["unattributed_import_j"])
            meter.unattributed_export_j = _int(state["unattributed_export_j"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a meter state: {error!r}") from None
        return meter


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"meter state holds {value!r} where an integer belongs")
    return value
