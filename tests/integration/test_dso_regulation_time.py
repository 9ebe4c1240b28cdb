"""A regulation whose time was defaulted follows the clock to the ledger: signed for the
current interval, it may reach the ledger in the next one (a slow network, a busy ledger),
which refuses it as `regulation_in_past`; the DSO node then signs it again for the interval
current then, and it lands. A time the operator gave is never moved: it stays refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.client import LedgerClient, Submitted

from .dso_harness import Dso, running_dso


class LateLedgerClient(LedgerClient):
    """A ledger client whose next `late` submissions arrive in the interval after the one
    they were sent in, as under load."""

    def __init__(self, base_url: str, dso: Dso) -> None:
        super().__init__(base_url)
        self.dso, self.late, self.sent = dso, 0, 0

    def submit(self, raw: bytes) -> Submitted:
        self.sent += 1
        if self.late:
            self.late -= 1
            sent_in = self.dso.now()
            self.dso.wait_interval(sent_in + 1)
        return super().submit(raw)


@pytest.fixture
def dso(tmp_path: Path) -> Iterator[tuple[Dso, LateLedgerClient]]:
    with running_dso(tmp_path) as node:
        late = LateLedgerClient(node.ledger_url, node)
        node.service.client = late
        try:
            yield node, late
        finally:
            late.close()


def test_a_defaulted_time_signed_again_lands_across_an_interval_boundary(
    dso: tuple[Dso, LateLedgerClient],
) -> None:
    node, late = dso
    late.late = 1
    before = node.now()
    answer = node.ok("PUT", "/tariff", json={"price_consumption": 250_000})
    assert answer["status"] == "accepted", answer
    assert answer["time"] > before  # signed again, for the interval the ledger was in
    assert late.sent == 2
    # The first signature is recorded as the ledger's refusal, the second as accepted.
    found = node.ok("GET", "/regulations")["regulations"]
    assert [(r["status"], r["code"]) for r in found[:2]] == [
        ("accepted", None),
        ("rejected", "regulation_in_past"),
    ]
    assert (
        node.ok("GET", "/tariff", params={"interval": answer["time"] + 1})["runs"][0][
            "price_consumption"
        ]
        == 250_000
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/meters", {"meter": "m1", "public_key": "ab" * 32, "max_epa": 5, "max_eca": 5}),
        ("PUT", "/limits/default", {"max_epa": 7, "max_eca": 7}),
    ],
)
def test_every_defaulted_regulation_follows_the_clock(
    dso: tuple[Dso, LateLedgerClient], method: str, path: str, body: dict[str, int | str]
) -> None:
    node, late = dso
    late.late = 2  # late twice in a row: it follows again
    answer = node.ok(method, path, json=body)
    regulation = answer["regulations"][-1] if "regulations" in answer else answer
    assert regulation["status"] == "accepted", answer
    assert late.sent == 3


def test_an_explicit_time_is_never_moved(dso: tuple[Dso, LateLedgerClient]) -> None:
    node, late = dso
    late.late = 1
    now = node.now()
    answer = node.call("PUT", "/tariff", json={"price_consumption": 260_000, "time": now})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "regulation_in_past"
    assert late.sent == 1
    assert node.ok("GET", "/regulations")["regulations"][0]["status"] == "rejected"
