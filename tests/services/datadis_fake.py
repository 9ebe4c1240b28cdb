"""A local Datadis private API that enforces Datadis' limits, for the client's tests: a login
with a known user answering a JWT-shaped bearer token that expires, 401 without a valid one,
an identical query within 24 h of ITS OWN clock (which the test moves) answering 429, failed
calls counting toward that, at most two years back, hour-ending curves with 23- and 25-hour
days and some `Estimada` rows. It records every call, so a test can assert the client never
repeated a query. Serve `fake.app()` with `integration.monitoring_harness.served`.

Its curves are built walking UTC forward, labelling each interval by the wall clock where it
ends (the client walks the other way, from labels to UTC): `value_at` says what any interval
holds, so a test can check each stored sample at its time."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Form, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

API = "/api-private/api"
DAY_S = 86_400
USER, PASSWORD = "12345678Z", "contraseña secreta"
HOME = "ES0021000000000001RK"  # a household: hourly curves only
QUARTERS = "ES0031000000000002BZ"  # point type 2: quarter-hourly curves too
SUPPLIES: tuple[dict[str, Any], ...] = (
    {"cups": HOME, "distributorCode": "8", "pointType": 5},
    {"cups": QUARTERS, "distributorCode": "2", "pointType": 2},
)


@dataclass
class FakeClock:
    """The fake's time (unix s), shared with the client under test."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Call:
    """One request the fake answered: `params` without the token, sorted."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    status: int
    at: float


def value_at(cups: str, start: int) -> float:
    """The consumption (kWh) of `cups` in the interval starting at `start` (unix s, UTC)."""
    return round(0.001 + ((start // 900) % 997) / 1000 + int(cups[-6:-2] or 0) / 10_000, 4)


def estimated_at(start: int) -> bool:
    return (start // 3600) % 7 == 0


def months(first: str, last: str) -> list[tuple[int, int]]:
    year, month = (int(x) for x in first.split("/"))
    end = tuple(int(x) for x in last.split("/"))
    found = []
    while (year, month) <= end:
        found.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def curve(cups: str, first: str, last: str, zone: ZoneInfo, length_s: int) -> list[dict[str, Any]]:
    """Datadis' rows of `cups` for months `first`..`last`, hour-ending by the wall clock."""
    rows = []
    for year, month in months(first, last):
        day = date(year, month, 1)
        while day.month == month:
            following = day + timedelta(days=1)
            t = int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())
            end = int(
                datetime(following.year, following.month, following.day, tzinfo=zone).timestamp()
            )
            while t < end:
                wall = datetime.fromtimestamp(t, zone)
                ending = wall.hour * 60 + wall.minute + length_s // 60
                value = value_at(cups, t)
                rows.append(
                    {
                        "cups": cups,
                        "date": day.strftime("%Y/%m/%d"),
                        "time": f"{ending // 60:02d}:{ending % 60:02d}",
                        "consumptionKWh": value,
                        "obtainMethod": "Estimada" if estimated_at(t) else "Real",
                        "surplusEnergyKWh": round(value / 4, 4),
                        "generationEnergyKWh": 0.0,
                        "selfConsumptionEnergyKWh": 0.0,
                    }
                )
                t += length_s
            day = following
    return rows


def _b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@dataclass
class DatadisFake:
    """The fake's state; `fail` makes a CUPS's queries answer that HTTP status."""

    clock: FakeClock
    token_lifetime_s: float = 3_600
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Madrid"))
    calls: list[Call] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    asked: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def logins(self) -> int:
        return sum(1 for c in self.calls if c.path.endswith("/login") and c.status == 200)

    def queries(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == f"{API}/{path}"]

    def revoke_tokens(self) -> None:
        """Forget every token, as Datadis does when it restarts."""
        self.tokens.clear()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/nikola-auth/tokens/login")
        def login(
            username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""
        ) -> Response:
            now = self.clock()
            if (username, password) != (USER, PASSWORD):
                self.calls.append(Call("POST", "/nikola-auth/tokens/login", (), 401, now))
                return PlainTextResponse("Usuario o contraseña incorrectos", 401)
            expires = now + self.token_lifetime_s
            token = ".".join(
                (
                    _b64({"alg": "HS256"}),
                    _b64({"sub": username, "exp": expires}),
                    secrets.token_hex(8),
                )
            )
            self.tokens[token] = expires
            self.calls.append(Call("POST", "/nikola-auth/tokens/login", (), 200, now))
            return PlainTextResponse(token)

        @app.get(API + "/{name}")
        def query(
            name: str, request: Request, authorization: Annotated[str, Header()] = ""
        ) -> Response:
            now = self.clock()
            params = tuple(sorted(request.query_params.items()))
            token = authorization.removeprefix("Bearer ")
            if self.tokens.get(token, 0) <= now:
                self.calls.append(Call("GET", request.url.path, params, 401, now))
                return JSONResponse({"message": "Unauthorized"}, 401)
            key = (request.url.path, params)
            if key in self.asked and now < self.asked[key] + DAY_S:
                self.calls.append(Call("GET", request.url.path, params, 429, now))
                return PlainTextResponse("Consulta ya realizada en las últimas 24 horas.", 429)
            self.asked[key] = now  # failed calls count too
            status, body = self._answer(name, dict(params), now)
            self.calls.append(Call("GET", request.url.path, params, status, now))
            return JSONResponse(body, status)

        return app

    def _answer(self, name: str, params: dict[str, str], now: float) -> tuple[int, Any]:
        cups = params.get("cups", "")
        if cups in self.fail:
            return self.fail[cups], {"message": "Error interno distribuidora"}
        if name == "get-supplies-v2":
            supplies = [{**s, "distributor": "I-DE", "address": "C/ Mayor 1"} for s in SUPPLIES]
            return 200, {"supplies": supplies, "distributorError": []}
        known = {s["cups"]: s for s in SUPPLIES}
        if cups not in known:
            return 400, {"message": f"CUPS {cups} not found"}
        if name == "get-contract-detail-v2":
            contract = {
                "cups": cups,
                "distributor": "I-DE",
                "accessFare": "2.0TD",
                "contractedPowerkW": [4.6, 4.6],
                "startDate": "2022/09/13",
                "endDate": "",
                "selfConsumptionTypeCode": "41",
                "cau": cups[:-2] + "A000",
                "partitionCoefficient": 0.25,
                "installedCapacityKW": 2.5,
            }
            return 200, {"contract": [contract], "distributorError": []}
        if name != "get-consumption-data-v2":
            return 404, {"message": "Not Found"}
        today = datetime.fromtimestamp(now, UTC).date()
        first_year, first_month = (int(x) for x in params["startDate"].split("/"))
        if (today.year - first_year) * 12 + today.month - first_month > 24:
            return 400, {"message": "Solo se pueden consultar datos de los dos últimos años"}
        quarter = params.get("measurementType") == "1"
        if quarter and params.get("pointType") not in ("1", "2"):
            return 400, {"message": "Consulta cuartohoraria solo para puntos tipo 1 y 2"}
        rows = curve(
            cups, params["startDate"], params["endDate"], self.zone, 900 if quarter else 3600
        )
        return 200, {"timeCurve": rows, "distributorError": []}
