"""Request bodies and query integers of the DSO admin API (pydantic at the boundary).

Strict: unknown fields are refused, and a value of another JSON type is never converted (no
`true` for 1, no `0` for false, no `1.0` for 1); a query or path integer is decimal digits with
an optional minus sign, so `+0.0`, `1e3` or `007` are refused, not read as numbers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from assets.codec import MAX_INT

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


def _integer(low: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": MAX_INT, "description": description}


_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_PRICE = {
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_INT}, {"type": "null"}],
    "description": "micro-units per kWh in force (null: none was set)",
}
# A meter's signed bill (smartmeter/billing.py), documented for clients and for schema-driven
# fuzzing; the route reads the raw bytes, because the signature covers their canonical form.
BILL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "v",
        "type",
        "chain",
        "meter",
        "interval",
        "closed_height",
        "measured_j",
        "issued_epa_w",
        "deposited_epa_w",
        "fa_issued",
        "fa_deposited",
        "price_consumption",
        "price_production",
        "energy_j",
        "amount",
        "issues",
        "deposits",
        "signature",
    ],
    "properties": {
        "v": {"type": "integer", "enum": [1]},
        "type": {"type": "string", "enum": ["bill"]},
        "chain": _HEX32,
        "meter": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        "interval": _integer(0, "the billed interval"),
        "closed_height": _integer(0, "the ledger height the bill closed at"),
        "measured_j": _integer(-MAX_INT, "measured net energy, J (consumption positive)"),
        "issued_epa_w": _integer(0, "EPA issued to the owner covering the interval, W"),
        "deposited_epa_w": _integer(0, "EPA deposited covering the interval, W"),
        "fa_issued": _integer(0, "FA issued during the interval, micro-units"),
        "fa_deposited": _integer(0, "FA deposited during the interval, micro-units"),
        "price_consumption": _PRICE,
        "price_production": _PRICE,
        "energy_j": _integer(-MAX_INT, "billed energy E_t, J"),
        "amount": _integer(-MAX_INT, "B_t, micro-units owed (negative: a credit)"),
        "issues": {"type": "array", "items": _HEX32, "maxItems": 4096},
        "deposits": {
            "type": "array",
            "maxItems": 4096,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["tx", "index"],
                "properties": {"tx": _HEX32, "index": _integer(0, "output index")},
            },
        },
        "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
    },
}
