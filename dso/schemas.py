"""Request bodies, query integers and answers of the DSO admin API (pydantic at the boundary).

Request bodies are strict: unknown fields are refused, and a value of another JSON type is
never converted (no `true` for 1, no `0` for false, no `1.0` for 1); a query or path integer is
decimal digits with an optional minus sign, so `+0.0`, `1e3` or `007` are refused, not read as
numbers.

The answers (`...View` and the other models below `Reconcile`) are the routes' response models:
they describe each answer in the OpenAPI document and shape it field for field as the service
builds it. Where an answer holds a free-form mapping (a signed transaction's or a bill's wire
JSON, an audit entry's detail), the model names the field and says what it holds; the wire
format itself is `assets`'s.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from assets.codec import MAX_INT
from dso.bills import CSV_COLUMNS

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,18})")


def _decimal(value: Any) -> Any:
    if isinstance(value, str) and _DECIMAL.fullmatch(value) is None:
        raise ValueError("must be a whole number in decimal digits, such as 12 or -3")
    return value


# After the bounds in an `Annotated` integer of a query or path, so that the OpenAPI document
# keeps them as minimum and maximum.
DECIMAL = BeforeValidator(_decimal)
UrlInt = Annotated[int, Field(ge=-MAX_INT, le=MAX_INT), DECIMAL]
UrlNatural = Annotated[int, Field(ge=0, le=MAX_INT), DECIMAL]
UrlPositive = Annotated[int, Field(ge=1, le=MAX_INT), DECIMAL]
Int = Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)]
Natural = Annotated[int, Field(ge=0, le=MAX_INT)]
Time = Annotated[
    Int | None,
    Field(description="Regulation time: in force from interval time+1 (default: the current one)"),
]
Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes, lowercase hex")]
MeterId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
OWNER_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"  # any reference a person can read: no control


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NewOperator(Body):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    role: Annotated[str, Field(pattern=r"^(admin|operator|auditor)$")]


class AuthorizeMeter(Body):
    meter: MeterId
    public_key: Hex32
    max_epa: Natural | None = Field(None, description="MAXEPA in watts (default limits if none)")
    max_eca: Natural | None = Field(None, description="MAXECA in watts (default limits if none)")
    owner: Annotated[str, Field(pattern=OWNER_PATTERN)] | None = Field(
        None, description="The DSO's reference of the meter's owner, for statements"
    )
    time: Time = None


class BanMeter(Body):
    time: Time = None


class Tariff(Body):
    price_consumption: Natural | None = Field(None, description="micro-units per kWh")
    price_production: Natural | None = Field(None, description="micro-units per kWh")
    time: Time = None


class DefaultLimits(Body):
    max_epa: Natural
    max_eca: Natural
    time: Time = None


class Policy(Body):
    low_w: Int
    high_w: Int
    gain_ppm: Natural
    max_change_ppm: Natural
    min_price: Natural
    max_price: Natural
    default_price: Natural


class ControllerSettings(Body):
    policy: Policy | None = None
    auto: bool | None = None


class Reconcile(Body):
    first: Int
    last: Int


# ------------------------------------------------------------------------------ answers


class Answer(BaseModel):
    """A route's answer. Extra fields are refused, so an answer the model does not describe
    fails its route's tests instead of losing a field."""

    model_config = ConfigDict(extra="forbid")


class Status(Answer):
    chain: str = Field(description="The chain id, hex")
    interval: int = Field(description="The interval the node's clock is in")
    interval_s: int
    epoch: int = Field(description="Unix seconds interval 0 starts at")
    currency: str = Field(description="The chain's currency; amounts are its micro-units")
    closing_delay_s: int = Field(
        description="How long after an interval ends its bills arrive: the meters' default"
    )
    dso_key: str = Field(description="The node's DSO public key, hex")
    indexed_height: int = Field(description="The ledger height the node has indexed")
    follower_problem: str | None = Field(description="Why following the ledger stopped, if it did")
    ledger_error: str | None = Field(description="The last error reaching the ledger, if any")


class WhoAmI(Answer):
    name: str
    role: str


class NewOperatorView(Answer):
    name: str
    role: str
    token: str = Field(description="The operator's bearer token, shown this once")


class OperatorView(Answer):
    name: str
    role: str
    created_at: int = Field(description="Unix seconds")
    created_by: str
    revoked_at: int | None = Field(description="Unix seconds, or null while it is valid")


class OperatorList(Answer):
    operators: list[OperatorView]


class Revoked(Answer):
    name: str
    revoked: bool


class MeterRow(Answer):
    meter: str
    public_key: str | None = Field(description="The meter's key in force, hex")
    max_epa: int | None = Field(description="MAXEPA in watts")
    max_eca: int | None = Field(description="MAXECA in watts")
    state: Literal["authorized", "banned"]
    owner: str | None
    follows_default_limits: bool


class PendingMeter(MeterRow):
    effective_from: int = Field(description="The first interval this row is in force")


class MeterList(Answer):
    interval: int
    meters: list[MeterRow]
    pending: list[PendingMeter] = Field(
        description="Meters whose next change is on the ledger, in force from a later interval"
    )


class MeterRegulation(Answer):
    height: int
    txid: str
    time: int
    transaction: dict[str, Any] = Field(description="The regulate transaction's wire JSON")


class MeterView(Answer):
    meter: str
    now: MeterRow | None
    next: MeterRow | None
    energy_assets_issued: int
    regulations: list[MeterRegulation]


class RegulationView(Answer):
    txid: str
    nonce: int
    time: int
    effective_from: int = Field(description="time + 1: the first interval it is in force")
    status: str = Field(description="pending, accepted or rejected")
    code: str | None = Field(description="The ledger's refusal code, if it refused")
    message: str | None
    height: int | None = Field(description="The block that holds it, once accepted")
    by: str = Field(description="The operator who signed it")
    created_ms: int
    transaction: dict[str, Any] = Field(description="The regulate transaction's wire JSON")


class RegulationList(Answer):
    regulations: list[RegulationView]


class LimitsView(Answer):
    max_epa: int
    max_eca: int


class ScheduleRun(Answer):
    first: int
    last: int
    price_consumption: int | None = Field(description="micro-units per kWh; null: none set")
    price_production: int | None = Field(description="micro-units per kWh; null: none set")
    default_limits: LimitsView | None


class ScheduleView(Answer):
    first: int
    last: int
    runs: list[ScheduleRun]


class TariffView(Answer):
    interval: int
    runs: list[ScheduleRun]


class DiscrepancyView(Answer):
    code: str
    message: str


class BillView(Answer):
    id: str
    meter: str
    owner: str | None
    interval: int
    closed_height: int
    amount: int = Field(description="B_t in micro-units (negative: a credit)")
    status: str = Field(description="pending, reconciled or flagged")
    discrepancies: list[DiscrepancyView]
    received_ms: int
    bill: dict[str, Any] = Field(description="The signed bill's wire JSON (assets.schemas.BILL)")


class BillReceived(BillView):
    duplicate: bool = Field(description="True: the very same bill was received before")


class BillList(Answer):
    first: int
    last: int
    bills: list[BillView]


class ReconcileCounts(Answer):
    reconciled: int
    flagged: int
    pending: int


class StatementLine(Answer):
    meter: str
    bills: int
    amount: int
    unsettled: int = Field(description="Bills pending or flagged")


class Statement(Answer):
    owner: str
    first: int
    last: int
    currency: str
    total: int
    reconciled_total: int
    meters: list[StatementLine]
    bills: list[BillView]


class IntervalForecastView(Answer):
    interval: int
    production_w: int
    consumption_w: int
    deposited_production_w: int
    open_asks_w: int
    open_bids_w: int
    net_load_w: int


class Forecast(Answer):
    first: int
    last: int
    book: str = Field(description="none (no book configured), read, or why it could not be")
    intervals: list[IntervalForecastView]


class PolicyView(Answer):
    low_w: int
    high_w: int
    gain_ppm: int
    max_change_ppm: int
    min_price: int
    max_price: int
    default_price: int


class ControllerView(Answer):
    policy: PolicyView | None
    auto: bool


class ProposalView(Answer):
    id: int
    interval: int
    price_consumption: int
    price_production: int
    net_load_w: int
    reason: str
    status: str = Field(description="open, accepted, rejected or superseded")
    regulation_nonce: int | None
    created_ms: int


class ProposalList(Answer):
    proposals: list[ProposalView]


class AuditEntryView(Answer):
    seq: int
    at_ms: int
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any] = Field(description="What changed; its keys depend on the action")
    outcome: str
    hash: str


class AuditLog(Answer):
    entries: list[AuditEntryView]


class AuditCheck(Answer):
    entries: int
    intact: bool
    problem: str | None


BILLS_CSV = {
    "type": "string",
    "description": "CSV (RFC 4180, CRLF), a header row and a row per bill: "
    + ", ".join(CSV_COLUMNS),
}
