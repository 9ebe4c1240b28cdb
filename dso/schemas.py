"""Request bodies of the DSO admin API (pydantic at the boundary; unknown fields are refused)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from assets.codec import MAX_INT

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
    model_config = ConfigDict(extra="forbid")


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
