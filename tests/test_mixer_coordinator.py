"""`mixer.coordinator.Coordinator` with a fake ledger and a manual clock, driving real
`mixer.protocol.Peer`s through its relay the way wallets do: honest pools land, silent,
cheating and double-spending peers are excluded, refused joins name the right code, and each
peer receives only what the contract says it receives."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from assets import (
    Code,
    Fa,
    Keypair,
    Outpoint,
    Output,
    Rejected,
    Transfer,
    decode_transaction,
    signing_message,
    verify,
)
from assets.codec import asset_from_wire, asset_to_wire
from ledger.client import LedgerRejected, LedgerUnavailable, Submitted
from mixer.auth import join_message
from mixer.coordinator import Coordinator, MixerError, parse_forming
from mixer.protocol import (
    Input,
    Kind,
    Message,
    Peer,
    Session,
    decode_message,
    peer_order,
    sign_message,
)

CHAIN = bytes(range(32))
COIN = Fa(1_000_000)
NOW = 1_767_225_600.0
TIMEOUT_S = 10.0
START_S = 30.0


# ----------------------------------------------------------------------------- the fakes


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeLedger:
    """The ledger calls the coordinator makes, over a dict of outputs; transfers are checked
    for known, unspent inputs and a valid signature by each input's owner."""

    def __init__(self) -> None:
        self.outputs: dict[Outpoint, tuple[Output, str | None]] = {}
        self.transactions: dict[bytes, int] = {}  # txid -> height
        self.landed: list[Transfer] = []
        self.height = 0
        self.unavailable = False
        self.refuse: Code | None = None

    def fund(self, owner: bytes, asset: Any = COIN) -> Outpoint:
        outpoint = Outpoint(os.urandom(32), 0)
        self.outputs[outpoint] = (Output(asset, owner), None)
        return outpoint

    def spend(self, outpoint: Outpoint) -> None:
        self.outputs[outpoint] = (self.outputs[outpoint][0], "f" * 64)

    def _wire(self, outpoint: Outpoint, output: Output, spent_by: str | None) -> dict[str, Any]:
        return {
            "tx": outpoint.txid.hex(),
            "index": outpoint.index,
            "address": output.address.hex(),
            "asset": asset_to_wire(output.asset),
            "seq": 1,
            "spent_by": spent_by,
        }

    def output(self, txid: bytes, index: int) -> dict[str, Any] | None:
        if self.unavailable:
            raise LedgerUnavailable("down")
        found = self.outputs.get(Outpoint(txid, index))
        return None if found is None else self._wire(Outpoint(txid, index), *found)

    def unspent(self, address: bytes) -> list[dict[str, Any]]:
        return [
            self._wire(o, out, None)
            for o, (out, spent_by) in self.outputs.items()
            if out.address == address and spent_by is None
        ]

    def transaction(self, txid: bytes) -> dict[str, Any] | None:
        height = self.transactions.get(txid)
        return None if height is None else {"txid": txid.hex(), "height": height}

    def submit(self, raw: bytes) -> Submitted:
        if self.unavailable:
            raise LedgerUnavailable("down")
        try:
            decoded = decode_transaction(raw)
        except Rejected as exc:
            raise LedgerRejected(exc.code, exc.message, exc.txid) from None
        tx = decoded.tx
        assert isinstance(tx, Transfer)
        if self.refuse is not None:
            raise LedgerRejected(self.refuse, "refused", decoded.txid)
        if decoded.txid in self.transactions:
            raise LedgerRejected(Code.DUPLICATE, "already", decoded.txid)
        for outpoint in tx.inputs:
            if outpoint not in self.outputs:
                raise LedgerRejected(Code.UNKNOWN_INPUT, "unknown", decoded.txid)
            if self.outputs[outpoint][1] is not None:
                raise LedgerRejected(Code.DOUBLE_SPEND, "spent", decoded.txid)
        owners = sorted(self.outputs[o][0].address for o in tx.inputs)  # the wire's order
        message = signing_message("transfer", decoded.txid)
        if [s.public_key for s in tx.signatures] != owners or not all(
            verify(s.public_key, message, s.signature) for s in tx.signatures
        ):
            raise LedgerRejected(Code.BAD_SIGNATURE, "signatures", decoded.txid)
        for outpoint in tx.inputs:
            self.spend(outpoint)
        for index, output in enumerate(tx.outputs):
            self.outputs[Outpoint(decoded.txid, index)] = (output, None)
        self.height += 1
        self.transactions[decoded.txid] = self.height
        self.landed.append(tx)
        return Submitted(decoded.txid, len(self.transactions), self.height)


# ----------------------------------------------------------------------------- wallets


def join_body(key: Keypair, outpoint: Outpoint, at: float = NOW, asset: Any = COIN) -> Any:
    request: dict[str, Any] = {
        "v": 1,
        "asset": asset_to_wire(asset),
        "input": Input(outpoint, key.public_key).to_wire(),
        "at": int(at),
    }
    return {**request, "signature": key.sign(join_message(request)).hex()}


@dataclass
class Wallet:
    """A peer's wallet as the client drives it: joins, follows its events, answers."""

    key: Keypair
    outpoint: Outpoint
    silent: bool = False
    tamper: Callable[[Message, Session, Keypair], Message] | None = None
    pool: str = ""
    after: int = 0
    peer: Peer | None = None
    outputs: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)

    @property
    def input(self) -> Input:
        return Input(self.outpoint, self.key.public_key)

    def handle(self, event: dict[str, Any], pool: str) -> list[Message]:
        if event["type"] == "start":
            inputs = [
                Input(Outpoint(bytes.fromhex(p["tx"]), p["index"]), bytes.fromhex(p["owner"]))
                for p in event["peers"]
            ]
            if self.input not in inputs:
                self.peer = None
                return []
            session = Session.of(
                bytes.fromhex(event["chain"]),
                pool,
                event["run"],
                asset_from_wire(event["asset"]),
                inputs,
            )
            assert session.id.hex() == event["session"]
            self.outputs.append(os.urandom(32))
            self.peer = Peer(session, self.key, self.outputs[-1])
            return self.peer.start()
        if event["type"] == "message" and self.peer is not None:
            return self.peer.receive(decode_message(event["message"], self.peer.session))
        return []


def make_wallets(ledger: FakeLedger, count: int) -> list[Wallet]:
    wallets = []
    for _ in range(count):
        key = Keypair.generate()
        wallets.append(Wallet(key, ledger.fund(key.public_key)))
    return wallets


def join_all(coordinator: Coordinator, wallets: Iterable[Wallet]) -> str:
    pools = set()
    for wallet in wallets:
        wallet.pool = coordinator.join(join_body(wallet.key, wallet.outpoint))["pool"]
        pools.add(wallet.pool)
    (pool,) = pools
    return pool


def pump(coordinator: Coordinator, wallets: list[Wallet]) -> None:
    """Deliver every wallet its events and post its answers until nobody has anything new."""
    progress = True
    while progress:
        progress = False
        for wallet in wallets:
            answer = coordinator.events(wallet.pool, wallet.key.public_key, wallet.after)
            wallet.after = answer["next"]
            for event in answer["events"]:
                progress = True
                wallet.events.append(event)
                if wallet.silent:
                    continue
                for message in wallet.handle(event, wallet.pool):
                    assert wallet.peer is not None
                    if wallet.tamper is not None:
                        message = wallet.tamper(message, wallet.peer.session, wallet.key)
                    wallet.sent.append(message)
                    try:
                        coordinator.post(wallet.pool, {"message": message.to_wire(), "to": None})
                    except MixerError as exc:  # the run ended while the wallet was reading
                        assert exc.code == "stale_run", exc.message


def types(wallet: Wallet) -> list[str]:
    return [e["type"] for e in wallet.events]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


def coordinator_of(ledger: FakeLedger, clock: Clock, **settings: Any) -> Coordinator:
    options: dict[str, Any] = {
        "min_peers": 3,
        "max_peers": 50,
        "start_s": START_S,
        "timeout_s": TIMEOUT_S,
        "forget_s": 120.0,
        "clock": clock,
    }
    return Coordinator(ledger, CHAIN, **{**options, **settings})


def landed_event(wallet: Wallet) -> dict[str, Any]:
    (event,) = [e for e in wallet.events if e["type"] == "landed"]
    return event


# ----------------------------------------------------------------------------- honest pools


@pytest.mark.parametrize("size", [2, 3, 10])
def test_honest_peers_land_one_transfer_paying_each_its_fresh_output(
    ledger: FakeLedger, clock: Clock, size: int
) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=size)
    wallets = make_wallets(ledger, size)
    pool = join_all(coordinator, wallets)  # the last join fills the pool: it starts at once
    pump(coordinator, wallets)

    (transfer,) = ledger.landed
    assert set(transfer.inputs) == {w.outpoint for w in wallets}
    assert sorted(o.address for o in transfer.outputs) == sorted(w.outputs[0] for w in wallets)
    assert all(o.asset == COIN for o in transfer.outputs)
    for wallet in wallets:
        assert types(wallet)[0] == "start"
        assert types(wallet)[-1] == "landed"
        assert landed_event(wallet)["height"] == 1
        assert wallet.peer is not None and wallet.peer.outcome is not None
    state = coordinator.pool_state(pool)
    assert state == {
        "pool": pool,
        "state": "landed",
        "peers": size,
        "run": 1,
        "phase": "done",
        "asset": asset_to_wire(COIN),
    }


def test_shuffle_messages_reach_only_the_next_peer_and_the_rest_reach_everyone(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=4)
    wallets = make_wallets(ledger, 4)
    join_all(coordinator, wallets)
    pump(coordinator, wallets)
    order = [i.owner for i in peer_order(w.input for w in wallets)]
    for wallet in wallets:
        index = order.index(wallet.key.public_key)
        got = [e["message"] for e in wallet.events if e["type"] == "message"]
        shuffles = [m["sender"] for m in got if m["kind"] == "shuffle"]
        assert shuffles == ([index - 1] if index > 0 else [])
        for kind in ("announce", "confirm", "sign"):
            assert sorted(m["sender"] for m in got if m["kind"] == kind) == [0, 1, 2, 3]
        assert [m["sender"] for m in got if m["kind"] == "final"] == [3]


def test_a_message_to_some_peers_reaches_only_them_and_is_owed_to_the_rest(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    pool = join_all(coordinator, wallets)
    start = coordinator.events(pool, wallets[0].key.public_key, 0)["events"][0]
    for wallet in wallets:
        wallet.handle(start, pool)
    sender = wallets[0].peer
    assert sender is not None
    announce = sender.start()[0]
    body = {"message": announce.to_wire(), "to": [(sender.index + 1) % 3]}
    seq = coordinator.post(pool, body)
    reached = [w for w in wallets if coordinator.events(pool, w.key.public_key, 1)["events"]]
    target = sender.session.peers[(sender.index + 1) % 3].owner
    assert [w.key.public_key for w in reached] == [target]
    assert coordinator.post(pool, body) == seq  # the same message to the same peers: once
    clock.now += TIMEOUT_S
    coordinator.tick()
    events = coordinator.events(pool, wallets[1].key.public_key, 0)["events"]
    timeout = [e for e in events if e["type"] == "timeout"]
    assert timeout and timeout[0]["silent"] == [0, 1, 2]  # nobody's announce reached everyone

    # Said to everyone, the same message is heard: the next step is owed by the others only.
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    pool = join_all(coordinator, wallets)
    start = coordinator.events(pool, wallets[0].key.public_key, 0)["events"][0]
    for wallet in wallets:
        wallet.handle(start, pool)
    assert wallets[0].peer is not None
    announce = wallets[0].peer.start()[0]
    first = coordinator.post(pool, {"message": announce.to_wire(), "to": [announce.sender]})
    again = coordinator.post(pool, {"message": announce.to_wire(), "to": None})
    assert again > first
    clock.now += TIMEOUT_S
    coordinator.tick()
    events = coordinator.events(pool, wallets[1].key.public_key, 0)["events"]
    (timeout,) = [e for e in events if e["type"] == "timeout"]
    assert announce.sender not in timeout["silent"] and len(timeout["silent"]) == 2


# ----------------------------------------------------------------------------- exclusions


def test_a_silent_peer_is_named_in_a_timeout_and_the_rest_land_in_the_next_run(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=4)
    wallets = make_wallets(ledger, 4)
    wallets[2].silent = True
    pool = join_all(coordinator, wallets)
    pump(coordinator, wallets)
    first = coordinator.pool_state(pool)
    assert (first["run"], first["phase"]) == (1, "announce")
    clock.now += TIMEOUT_S - 1
    coordinator.tick()
    assert "timeout" not in types(wallets[0])
    pump(coordinator, wallets)
    assert "timeout" not in types(wallets[0])

    clock.now += 1
    coordinator.tick()
    pump(coordinator, wallets)
    silent_index = [i.owner for i in peer_order(w.input for w in wallets)].index(
        wallets[2].key.public_key
    )
    (timeout,) = [e for e in wallets[0].events if e["type"] == "timeout"]
    assert timeout == {"seq": timeout["seq"], "type": "timeout", "run": 1, "silent": [silent_index]}
    starts = [e for e in wallets[0].events if e["type"] == "start"]
    assert [s["run"] for s in starts] == [1, 2]
    assert len(starts[1]["peers"]) == 3
    assert wallets[2].key.public_key.hex() not in {p["owner"] for p in starts[1]["peers"]}
    (transfer,) = ledger.landed
    assert set(transfer.inputs) == {w.outpoint for w in wallets} - {wallets[2].outpoint}
    assert types(wallets[2])[-1] == "landed"  # an excluded peer still hears how the pool ended
    assert coordinator.pool_state(pool)["run"] == 2


def test_too_few_peers_left_after_a_timeout_fail_the_pool(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    wallets[0].silent = wallets[1].silent = True
    pool = join_all(coordinator, wallets)
    pump(coordinator, wallets)
    clock.now += TIMEOUT_S
    coordinator.tick()
    pump(coordinator, wallets)
    assert types(wallets[2])[-2:] == ["timeout", "failed"]
    assert coordinator.pool_state(pool)["state"] == "failed"


def shuffle_replaced(message: Message, session: Session, key: Keypair) -> Message:
    """A cheat: the peer's shuffle passes on random ciphertexts, signed as its own."""
    if message.kind is not Kind.SHUFFLE:
        return message
    fake = [os.urandom(len(bytes.fromhex(c))).hex() for c in message.body["ciphertexts"]]
    return sign_message(session, message.sender, Kind.SHUFFLE, {"ciphertexts": fake}, key)


def test_a_cheating_shuffler_is_named_by_the_verdict_and_the_rest_land(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=4)
    wallets = make_wallets(ledger, 4)
    first = peer_order(w.input for w in wallets)[0]
    (cheat,) = [w for w in wallets if w.input == first]
    cheat.tamper = shuffle_replaced
    join_all(coordinator, wallets)
    pump(coordinator, wallets)
    honest = [w for w in wallets if w is not cheat]
    starts = [e for e in honest[0].events if e["type"] == "start"]
    assert [s["run"] for s in starts] == [1, 2]
    assert cheat.key.public_key.hex() not in {p["owner"] for p in starts[1]["peers"]}
    assert "timeout" not in types(honest[0])
    (transfer,) = ledger.landed
    assert set(transfer.inputs) == {w.outpoint for w in honest}


def test_a_peer_whose_input_is_spent_elsewhere_is_named_and_the_rest_land(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=4)
    wallets = make_wallets(ledger, 4)
    join_all(coordinator, wallets)
    ledger.spend(wallets[1].outpoint)  # after joining: the peer spent it elsewhere
    pump(coordinator, wallets)
    index = [i.owner for i in peer_order(w.input for w in wallets)].index(wallets[1].key.public_key)
    (spent,) = [e for e in wallets[0].events if e["type"] == "spent"]
    assert (spent["run"], spent["peers"]) == (1, [index])
    (transfer,) = ledger.landed
    assert wallets[1].outpoint not in transfer.inputs and len(transfer.inputs) == 3


def test_a_transfer_a_peer_submitted_first_lands_with_the_ledgers_height(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=2)
    wallets = make_wallets(ledger, 2)
    join_all(coordinator, wallets)
    submit = ledger.submit

    def peer_first(raw: bytes) -> Submitted:
        submit(raw)
        return submit(raw)  # the coordinator's own submission: a duplicate

    ledger.submit = peer_first  # type: ignore[method-assign]
    pump(coordinator, wallets)
    assert landed_event(wallets[0])["height"] == 1
    assert len(ledger.landed) == 1


def test_a_ledger_refusal_other_than_a_spent_input_fails_the_pool_with_its_code(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=2)
    wallets = make_wallets(ledger, 2)
    pool = join_all(coordinator, wallets)
    ledger.refuse = Code.LIMIT_EXCEEDED
    pump(coordinator, wallets)
    (failed,) = [e for e in wallets[0].events if e["type"] == "failed"]
    assert "limit_exceeded" in failed["reason"]
    assert coordinator.pool_state(pool)["state"] == "failed"


def test_a_transfer_is_submitted_again_while_the_ledger_is_unavailable(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=2)
    wallets = make_wallets(ledger, 2)
    join_all(coordinator, wallets)
    ledger.unavailable = True
    pump(coordinator, wallets)
    assert "landed" not in types(wallets[0])
    ledger.unavailable = False
    clock.now += 1
    coordinator.tick()
    pump(coordinator, wallets)
    assert landed_event(wallets[0])["run"] == 1


# ----------------------------------------------------------------------------- joining


def test_a_pool_starts_at_its_deadline_with_enough_peers_and_fails_with_too_few(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock)
    wallets = make_wallets(ledger, 2)
    answer = coordinator.join(join_body(wallets[0].key, wallets[0].outpoint))
    assert answer["peers"] == 1 and answer["starts_by"] == NOW + START_S
    second = coordinator.join(join_body(wallets[1].key, wallets[1].outpoint))
    assert (second["pool"], second["peers"]) == (answer["pool"], 2)
    pool = answer["pool"]
    assert coordinator.pool_state(pool) == {
        "pool": pool,
        "state": "forming",
        "peers": 2,
        "run": 0,
        "phase": None,
        "asset": asset_to_wire(COIN),
    }
    clock.now += START_S - 1
    coordinator.tick()
    assert coordinator.pool_state(pool)["state"] == "forming"
    clock.now += 1
    coordinator.tick()
    events = coordinator.events(pool, wallets[0].key.public_key, 0)["events"]
    assert [e["type"] for e in events] == ["failed"]
    assert "2 of the 3" in events[0]["reason"]
    assert coordinator.pool_state(pool)["state"] == "failed"
    # An ended pool frees its inputs: they may join the next one.
    again = coordinator.join(join_body(wallets[0].key, wallets[0].outpoint, at=clock.now))
    assert again["pool"] != pool

    three = make_wallets(ledger, 3)
    ready = join_all(coordinator, three)
    clock.now += START_S
    coordinator.tick()
    assert coordinator.pool_state(ready)["state"] == "running"


def test_pools_are_per_denomination(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock)
    small, large = Keypair.generate(), Keypair.generate()
    a = coordinator.join(join_body(small, ledger.fund(small.public_key)))
    big = Fa(2_000_000)
    b = coordinator.join(join_body(large, ledger.fund(large.public_key, big), asset=big))
    assert a["pool"] != b["pool"]


def test_forming_counts_the_peers_waiting_per_denomination_and_names_no_pool(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock)
    settings = {"min_peers": 3, "max_peers": 50, "start_s": START_S}
    assert coordinator.forming() == {**settings, "pools": []}
    big = Fa(2_000_000)
    for wallet in make_wallets(ledger, 2):
        coordinator.join(join_body(wallet.key, wallet.outpoint))
    large = Keypair.generate()
    coordinator.join(join_body(large, ledger.fund(large.public_key, big), asset=big))
    waiting = {
        canonical(p["asset"]): (p["peers"], p["starts_by"]) for p in coordinator.forming()["pools"]
    }
    assert waiting == {
        canonical(asset_to_wire(COIN)): (2, NOW + START_S),
        canonical(asset_to_wire(big)): (1, NOW + START_S),
    }
    assert coordinator.forming("EPA")["pools"] == []
    assert len(coordinator.forming("FA")["pools"]) == 2
    assert parse_forming({}) is None and parse_forming({"kind": "ECA"}) == "ECA"
    for query in ({"kind": "fa"}, {"kind": "FA", "peer": "x"}):
        with pytest.raises(MixerError) as caught:
            parse_forming(query)
        assert (caught.value.status, caught.value.code) == (400, "malformed")
    clock.now += START_S
    coordinator.tick()  # both pools end (too few): nothing forms
    assert coordinator.forming() == {**settings, "pools": []}


def canonical(wire: dict[str, Any]) -> str:
    return str(sorted(wire.items()))


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("bad_signature", 401, "bad_signature"),
        ("stale", 401, "stale_request"),
        ("future", 401, "stale_request"),
        ("spent", 422, "not_unspent"),
        ("unknown", 422, "not_unspent"),
        ("other_owner", 422, "not_unspent"),
        ("other_asset", 422, "not_unspent"),
        ("same_owner", 409, "already_joined"),
        ("same_input", 409, "already_joined"),
        ("replayed", 409, "already_joined"),
        ("ledger_down", 503, "ledger_unavailable"),
        ("not_an_object", 400, "malformed"),
        ("extra_field", 400, "malformed"),
        ("bad_hex", 400, "malformed"),
        ("bool_index", 400, "malformed"),
        ("bad_asset", 400, "malformed"),
    ],
)
def test_a_refused_join_names_why(
    ledger: FakeLedger, clock: Clock, case: str, status: int, code: str
) -> None:
    coordinator = coordinator_of(ledger, clock)
    key = Keypair.generate()
    outpoint = ledger.fund(key.public_key)
    body = join_body(key, outpoint)
    if case == "bad_signature":
        body["signature"] = Keypair.generate().sign(b"x").hex()
    elif case == "stale":
        body = join_body(key, outpoint, at=NOW - 61)
    elif case == "future":
        body = join_body(key, outpoint, at=NOW + 61)
    elif case == "spent":
        ledger.spend(outpoint)
    elif case == "unknown":
        body = join_body(key, Outpoint(os.urandom(32), 0))
    elif case == "other_owner":
        body = join_body(key, ledger.fund(Keypair.generate().public_key))
    elif case == "other_asset":
        body = join_body(key, ledger.fund(key.public_key, Fa(5)))
    elif case == "same_owner":
        coordinator.join(join_body(key, ledger.fund(key.public_key), at=NOW - 1))
    elif case in ("same_input", "replayed"):
        coordinator.join(join_body(key, outpoint, at=NOW - 1) if case == "same_input" else body)
        if case == "replayed":  # once its pool ended, the same signed request is still refused
            clock.now += START_S
            coordinator.tick()
    elif case == "ledger_down":
        ledger.unavailable = True
    elif case == "not_an_object":
        body = [body]
    elif case == "extra_field":
        body["pool"] = "x"
    elif case == "bad_hex":
        body["input"]["tx"] = body["input"]["tx"].upper()
    elif case == "bool_index":
        body["input"]["index"] = False
    elif case == "bad_asset":
        body["asset"] = {"kind": "FA", "amount": 0}
    with pytest.raises(MixerError) as refused:
        coordinator.join(body)
    assert (refused.value.status, refused.value.code) == (status, code)


# ----------------------------------------------------------------------------- messages


def test_messages_of_an_earlier_run_or_an_ended_pool_are_stale(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    wallets[0].silent = True
    pool = join_all(coordinator, wallets)
    pump(coordinator, wallets)
    old = wallets[1].sent[0]
    clock.now += TIMEOUT_S
    coordinator.tick()
    with pytest.raises(MixerError) as stale:
        coordinator.post(pool, {"message": old.to_wire(), "to": None})
    assert (stale.value.status, stale.value.code) == (409, "stale_run")
    pump(coordinator, wallets)
    assert types(wallets[1])[-1] == "landed"
    with pytest.raises(MixerError) as ended:
        coordinator.post(pool, {"message": wallets[1].sent[-1].to_wire(), "to": None})
    assert (ended.value.status, ended.value.code) == (409, "stale_run")


def test_refused_messages(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    pool = join_all(coordinator, wallets)
    start = coordinator.events(pool, wallets[0].key.public_key, 0)["events"][0]
    wallets[0].handle(start, pool)
    assert wallets[0].peer is not None
    announce = wallets[0].peer.start()[0].to_wire()

    def refused(wire: Any, pool_id: str = pool) -> tuple[int, str]:
        with pytest.raises(MixerError) as caught:
            coordinator.post(pool_id, wire)
        return caught.value.status, caught.value.code

    forged = {**announce, "signature": "00" * 64}
    assert refused({"message": forged, "to": None}) == (400, "bad_message")
    assert refused({"message": {**announce, "sender": 7}}) == (400, "bad_message")
    assert refused({"message": announce, "to": [3]}) == (400, "malformed")
    assert refused({"message": announce, "to": [True]}) == (400, "malformed")
    assert refused({"message": announce, "to": None, "x": 1}) == (400, "malformed")
    assert refused({"message": "hi"}) == (400, "malformed")
    assert refused([announce]) == (400, "malformed")
    assert refused({"message": announce}, "nosuchpool") == (404, "not_found")
    assert coordinator.post(pool, {"message": announce}) >= 1

    loner = Keypair.generate()
    forming = coordinator.join(join_body(loner, ledger.fund(loner.public_key)))["pool"]
    assert refused({"message": announce}, forming) == (409, "stale_run")


def test_a_peer_sends_at_most_two_versions_of_a_message(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    pool = join_all(coordinator, wallets)
    start = coordinator.events(pool, wallets[0].key.public_key, 0)["events"][0]
    wallets[0].handle(start, pool)
    peer = wallets[0].peer
    assert peer is not None
    for n in range(3):
        body = {"ek": bytes([n]).hex() * 32}
        message = sign_message(peer.session, peer.index, Kind.ANNOUNCE, body, wallets[0].key)
        if n < 2:
            coordinator.post(pool, {"message": message.to_wire()})
        else:
            with pytest.raises(MixerError) as third:
                coordinator.post(pool, {"message": message.to_wire()})
            assert third.value.code == "bad_message"


# ----------------------------------------------------------------------------- following


def test_events_refuse_strangers_and_unknown_pools(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock)
    key = Keypair.generate()
    pool = coordinator.join(join_body(key, ledger.fund(key.public_key)))["pool"]
    with pytest.raises(MixerError) as stranger:
        coordinator.events(pool, Keypair.generate().public_key, 0)
    assert (stranger.value.status, stranger.value.code) == (403, "not_a_peer")
    with pytest.raises(MixerError) as unknown:
        coordinator.events("nope", key.public_key, 0)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(MixerError):
        coordinator.pool_state("nope")
    assert coordinator.events(pool, key.public_key, 0) == {"events": [], "next": 0}


def test_ended_pools_are_forgotten(ledger: FakeLedger, clock: Clock) -> None:
    coordinator = coordinator_of(ledger, clock, min_peers=2, max_peers=2)
    wallets = make_wallets(ledger, 2)
    pool = join_all(coordinator, wallets)
    pump(coordinator, wallets)
    assert coordinator.pool_state(pool)["state"] == "landed"
    clock.now += 119
    coordinator.tick()
    assert coordinator.pool_state(pool)["state"] == "landed"
    clock.now += 1
    coordinator.tick()
    with pytest.raises(MixerError) as gone:
        coordinator.pool_state(pool)
    assert gone.value.code == "not_found"


def test_settings_are_checked(ledger: FakeLedger) -> None:
    for least, most in ((1, 50), (5, 4), (3, 257)):
        with pytest.raises(ValueError):
            Coordinator(ledger, CHAIN, min_peers=least, max_peers=most)


def test_a_lingering_poll_is_woken_by_the_last_message_of_its_kind_only(
    ledger: FakeLedger, clock: Clock
) -> None:
    coordinator = coordinator_of(ledger, clock, max_peers=3)
    wallets = make_wallets(ledger, 3)
    pool = join_all(coordinator, wallets)
    wakes = {"lingering": 0, "waiting": 0}
    owner = wallets[0].key.public_key
    lingering = lambda: wakes.update(lingering=wakes["lingering"] + 1)  # noqa: E731
    waiting = lambda: wakes.update(waiting=wakes["waiting"] + 1)  # noqa: E731
    coordinator._pools[pool].watchers.update({lingering: owner, waiting: owner})
    coordinator.linger(pool, lingering)
    announces = []
    for wallet in wallets:
        (start,) = coordinator.events(pool, wallet.key.public_key, 0)["events"]
        announces += wallet.handle(start, pool)
    for n, announce in enumerate(announces, start=1):
        coordinator.post(pool, {"message": announce.to_wire(), "to": None})
        assert wakes == {"lingering": n // len(wallets), "waiting": n}
