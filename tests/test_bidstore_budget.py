"""The bid store's request budgets: per connection, per address (not loopback), service-wide,
the in-flight bound, and the API's 429 and 503 answers for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from bidstore.api import create_app
from bidstore.budget import (
    Budget,
    InFlight,
    OverBudget,
    Rate,
    RequestBudgets,
    TokenBuckets,
    is_loopback,
)
from bidstore.service import BidStore, Limits
from ledger.client import LedgerClient
from simulation.scenario import Scenario

AMPLE = Rate(1000.0, 1000)
REMOTE = "203.0.113.5"  # TEST-NET-3: a client address that is not loopback


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budgets(
    clock: Clock,
    connection: Rate = AMPLE,
    address: Rate = AMPLE,
    service: Rate = AMPLE,
    capacity: int = 100,
) -> RequestBudgets:
    return RequestBudgets(
        clock, connection=connection, address=address, service=service, capacity=capacity
    )


def test_each_connection_has_its_own_budget() -> None:
    budget = budgets(Clock(), connection=Rate(1.0, 2))
    assert budget.charge(("127.0.0.1", 40000)) is None
    assert budget.charge(("127.0.0.1", 40000)) is None
    assert budget.charge(("127.0.0.1", 40000)) == OverBudget(Budget.CONNECTION, 1.0)
    assert budget.charge(("127.0.0.1", 40001)) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_connections_are_not_charged_per_address(host: str) -> None:
    budget = budgets(Clock(), address=Rate(1.0, 1))
    assert all(budget.charge((host, port)) is None for port in range(40000, 40010))


def test_an_address_shares_its_budget_across_its_connections() -> None:
    budget = budgets(Clock(), address=Rate(1.0, 2))
    assert budget.charge((REMOTE, 1)) is None
    assert budget.charge((REMOTE, 2)) is None
    assert budget.charge((REMOTE, 3)) == OverBudget(Budget.ADDRESS, 1.0)
    assert budget.charge(("203.0.113.6", 1)) is None


def test_the_service_budget_caps_every_connection_together() -> None:
    budget = budgets(Clock(), service=Rate(1.0, 3))
    for port in range(3):
        assert budget.charge(("127.0.0.1", port)) is None
    assert budget.charge(("127.0.0.1", 3)) == OverBudget(Budget.SERVICE, 1.0)
    assert budget.charge((REMOTE, 3)) == OverBudget(Budget.SERVICE, 1.0)


def test_a_refused_request_is_charged_to_no_budget() -> None:
    budget = budgets(Clock(), connection=Rate(1.0, 1), service=Rate(1.0, 2))
    assert budget.charge(("127.0.0.1", 1)) is None
    for _ in range(5):
        assert budget.charge(("127.0.0.1", 1)) == OverBudget(Budget.CONNECTION, 1.0)
    assert budget.charge(("127.0.0.1", 2)) is None
    assert budget.charge(("127.0.0.1", 3)) == OverBudget(Budget.SERVICE, 1.0)


def test_the_refusal_names_the_budget_that_waits_longest() -> None:
    budget = budgets(Clock(), connection=Rate(1.0, 1), service=Rate(0.1, 1))
    assert budget.charge((REMOTE, 1)) is None
    refusal = budget.charge((REMOTE, 1))
    assert refusal is not None and refusal.budget is Budget.SERVICE
    assert refusal.wait_s == pytest.approx(10.0)


def test_budgets_refill_at_their_rate_up_to_their_burst() -> None:
    clock = Clock()
    budget = budgets(clock, connection=Rate(2.0, 3))
    client = ("127.0.0.1", 1)
    for _ in range(3):
        assert budget.charge(client) is None
    refusal = budget.charge(client)
    assert refusal == OverBudget(Budget.CONNECTION, 0.5)
    clock.now += refusal.wait_s
    assert budget.charge(client) is None
    assert budget.charge(client) is not None
    clock.now += 3600
    assert [budget.charge(client) is None for _ in range(4)] == [True] * 3 + [False]  # a burst


def test_a_request_for_several_things_costs_as_many() -> None:
    clock = Clock()
    budget = budgets(clock, connection=Rate(1.0, 100), service=Rate(1.0, 150))
    assert budget.most == 100
    assert budget.charge(("127.0.0.1", 1), 100) is None
    assert budget.charge(("127.0.0.1", 1)) == OverBudget(Budget.CONNECTION, 1.0)
    assert budget.charge(("127.0.0.1", 2), 60) == OverBudget(Budget.SERVICE, 10.0)
    assert budget.charge(("127.0.0.1", 2), 50) is None
    with pytest.raises(ValueError):
        budget.charge(("127.0.0.1", 3), 101)  # more than any bucket holds: never affordable


def test_a_clock_stepped_back_takes_no_tokens() -> None:
    clock = Clock()
    budget = budgets(clock, connection=Rate(1.0, 2))
    assert budget.charge(("127.0.0.1", 1)) is None
    clock.now -= 100
    assert budget.charge(("127.0.0.1", 1)) is None


def test_full_buckets_are_forgotten() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(Rate(1.0, 2))
    buckets.spend("a", 0.0)
    buckets.spend("b", 1.0)
    assert buckets.wait("c", 1.5) == 0 and len(buckets) == 2  # a has 1.5 tokens of 2
    assert buckets.wait("c", 2.5) == 0 and len(buckets) == 1  # a is full again
    assert buckets.wait("c", 3.5) == 0 and len(buckets) == 0


def test_the_number_of_buckets_is_capped_forgetting_the_least_recently_used() -> None:
    buckets: TokenBuckets[int] = TokenBuckets(Rate(0.001, 1), capacity=3)
    for key in range(10):
        buckets.spend(key, 0.0)
        assert len(buckets) <= 3
    assert [buckets.wait(key, 0.0) > 0 for key in range(10)] == [False] * 7 + [True] * 3
    budget = budgets(Clock(), connection=Rate(0.001, 1), capacity=2)
    assert budget.charge(("127.0.0.1", 1)) is None
    assert budget.charge(("127.0.0.1", 2)) is None
    assert budget.charge(("127.0.0.1", 1)) is not None
    assert budget.charge(("127.0.0.1", 3)) is None  # the third connection forgets the first
    assert budget.charge(("127.0.0.1", 1)) is None


def test_an_unknown_client_is_one_connection() -> None:
    budget = budgets(Clock(), connection=Rate(1.0, 1))
    assert budget.charge(None) is None
    assert budget.charge(None) == OverBudget(Budget.CONNECTION, 1.0)


def test_in_flight_requests_are_bounded() -> None:
    in_flight = InFlight(2)
    assert in_flight.enter() and in_flight.enter()
    assert not in_flight.enter()
    in_flight.leave()
    assert in_flight.enter()
    assert not in_flight.enter()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("::2", False),
        ("::ffff:10.0.0.1", False),
        ("localhost", False),
        ("testclient", False),
        ("", False),
    ],
)
def test_loopback_is_127_0_0_0_8_and_colon_colon_1(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("per_s", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_rate_is_positive(per_s: float, burst: int) -> None:
    with pytest.raises(ValueError):
        Rate(per_s, burst)


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
def ledger() -> Iterator[LedgerClient]:
    """A client of no ledger: the routes used here never ask it."""
    with LedgerClient("http://127.0.0.1:9", retries=0) as client:
        yield client


def app_with(ledger: LedgerClient, limits: Limits) -> FastAPI:
    clock = Clock()
    store = BidStore(ledger, Scenario().genesis, limits=limits, clock=clock, wall_clock=clock)
    return create_app(store, run=False)


async def statuses(app: FastAPI, clients: list[tuple[str, int]]) -> list[httpx.Response]:
    """GET /v1/book once from each of `clients` (host, port), in order."""
    answers = []
    for client in clients:
        transport = httpx.ASGITransport(app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
            answers.append(await http.get("/v1/book"))
    return answers


def assert_rate_limited(answer: httpx.Response, whose: str) -> None:
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["code"] == "rate_limited" and whose in error["message"], error
    assert int(answer.headers["retry-after"]) >= 1


def test_the_api_limits_each_connection(ledger: LedgerClient) -> None:
    app = app_with(ledger, Limits(requests_per_s=0.001, burst=2))
    one, two = ("127.0.0.1", 40000), ("127.0.0.1", 40001)
    answers = asyncio.run(statuses(app, [one, one, one, two, two, two]))
    assert [answer.status_code for answer in answers] == [200, 200, 429, 200, 200, 429]
    assert_rate_limited(answers[2], "this connection")
    assert answers[2].headers["retry-after"] == "1000"


def test_the_api_limits_a_remote_address_over_its_connections(ledger: LedgerClient) -> None:
    app = app_with(ledger, Limits(address_requests_per_s=0.001, address_burst=3))
    remote = [(REMOTE, port) for port in range(40000, 40004)]
    local = [("127.0.0.1", port) for port in range(40000, 40004)]
    answers = asyncio.run(statuses(app, remote + local))
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429] + [200] * 4
    assert_rate_limited(answers[3], "this address")


def test_the_api_limits_the_service(ledger: LedgerClient) -> None:
    app = app_with(ledger, Limits(service_requests_per_s=0.001, service_burst=3))
    answers = asyncio.run(statuses(app, [("127.0.0.1", port) for port in range(4)]))
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert_rate_limited(answers[3], "the service")


def test_the_api_charges_a_count_of_challenges_as_that_many_requests(
    ledger: LedgerClient,
) -> None:
    """Issue 14: `count` was free, so one request took 100 challenges on a budget of one."""
    app = app_with(ledger, Limits(requests_per_s=0.001, burst=100))

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
            return [
                await http.post("/v1/challenges", params={"count": 60}),
                await http.post("/v1/challenges", params={"count": 40}),
                await http.post("/v1/challenges"),
            ]

    taken, rest, refused = asyncio.run(scenario())
    assert (taken.status_code, len(taken.json()["challenges"])) == (201, 60), taken.text
    assert (rest.status_code, len(rest.json()["challenges"])) == (201, 40), rest.text
    assert_rate_limited(refused, "this connection")


def test_the_api_refuses_a_count_beyond_a_burst_that_could_never_pay_it(
    ledger: LedgerClient,
) -> None:
    app = app_with(ledger, Limits(burst=10))
    answers = asyncio.run(challenge_counts(app, [11, 10]))
    assert answers[0].status_code == 400 and answers[0].json()["error"]["code"] == "bad_request"
    assert "at most 10" in answers[0].json()["error"]["message"]
    assert answers[1].status_code == 201, answers[1].text


async def challenge_counts(app: FastAPI, counts: list[int]) -> list[httpx.Response]:
    """POST /v1/challenges?count=N for each N, each on a connection of its own."""
    answers = []
    for port, count in enumerate(counts, 40000):
        transport = httpx.ASGITransport(app, client=("127.0.0.1", port))
        async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
            answers.append(await http.post("/v1/challenges", params={"count": count}))
    return answers


def test_the_api_answers_busy_beyond_its_in_flight_bound(ledger: LedgerClient) -> None:
    app = app_with(ledger, Limits(max_in_flight=1))

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        started, release = asyncio.Event(), asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            started.set()
            await release.wait()
            yield b"{}"

        transport = httpx.ASGITransport(app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://store") as http:
            held = asyncio.create_task(http.post("/v1/orders", content=slow_body()))
            await started.wait()  # the order's body is being read: the request is in flight
            busy = await http.get("/v1/book")
            release.set()
            done = await held
            after = await http.get("/v1/book")
        return busy, done, after

    busy, done, after = asyncio.run(scenario())
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "busy" and busy.headers["retry-after"] == "1"
    assert done.status_code == 400 and done.json()["error"]["code"] == "malformed", done.text
    assert after.status_code == 200
