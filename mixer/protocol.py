"""CoinShuffle (Ruffing, Moreno-Sanchez, Kate, ESORICS 2014) as a pure, message-driven state
machine per peer, with its blame phase (DESIGN.md section 8).

N peers, each holding one input of the same asset (the pool's denomination), each wanting it
paid to a fresh output address nobody can link to its input, build one `transfer` of the N
inputs to the N outputs in an order nobody chose. A `Session` is one run of the protocol: its
peers in the order fixed by a hash over all inputs. Every message is signed by the sender's
input key (`Message`), so whatever a peer said can be held against it.

1. **announce** (broadcast): each peer's ephemeral Curve25519 public key `ek`.
2. **shuffle** (to the next peer only): peer 0 seals its output address for peers N-1, ...,
   1 (the outermost layer for peer 1) and sends the list `[onion]` to peer 1; peer i strips
   its layer from each of the i ciphertexts it got, adds its own onion (layers N-1 ... i+1),
   shuffles the i+1 ciphertexts with a cryptographic RNG and passes them on.
3. **final** (broadcast): peer N-1 strips the last layer, adds its own address, shuffles and
   broadcasts the N output addresses.
4. **confirm** (broadcast): every peer whose output is in the final list confirms the digest
   of the session, every `ek` and the list: the equivocation check.
5. **sign** (broadcast): with N equal digests, everyone builds the same unsigned transfer
   (inputs in peer order, outputs in the final order), checks it and signs its own input.
   N valid signatures make the transfer whole (`Done`); the client submits it.

**Blame.** A peer that finds a bad ciphertext, a duplicate, its output missing, a different
digest, a bad signature, or any peer's second version of a message broadcasts **blame** with
what it received as evidence, and every peer answers a blame with its own. While the shuffle
is not yet agreed (no N equal digests), a blame reveals the peer's ephemeral secret key, so
everyone can replay the shuffle layer by layer and find the peer whose step was wrong (the
outputs of that run are abandoned: honest peers take fresh ones next run). Once it is agreed,
nobody reveals a key: what can go wrong then (a bad signature) is evident from signed messages
alone, and revealing keys then would link outputs to inputs of a transfer that may still land.
`verdict` is a pure function of the blames, so every honest peer (and the coordinator) names
the same culprits, each with its reason; the others run again without them. A peer silent
past the coordinator's timeout (`Peer.silent`) and an input found spent on the ledger
(`Peer.inputs_spent`) are excluded the same way, on evidence outside the messages.

No honest peer is ever named: it signs one version of each message, its steps replay
correctly, and it blames only what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import nacl.exceptions
import nacl.public
import orjson

from assets import Asset, Keypair, Outpoint, Output, Rejected, Signature, Transfer, canonical_json
from assets.canonical import parse_json
from assets.codec import asset_to_wire, txid
from assets.signing import signing_message, verify

MESSAGE_TYPE = "mixer-message"  # the signing domain of protocol messages
ADDRESS_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEAL_OVERHEAD = 48  # bytes a sealed box adds per layer (an ephemeral key and a MAC)
MAX_PEERS = 256
MAX_EVIDENCE = 8 * MAX_PEERS  # messages one blame may carry


class Kind(StrEnum):
    ANNOUNCE = "announce"
    SHUFFLE = "shuffle"
    FINAL = "final"
    CONFIRM = "confirm"
    SIGN = "sign"
    BLAME = "blame"


# Kinds whose signature a peer may leave unchecked until it acts against them: a confirm or a
# signature that agrees with everyone else's harms nobody if forged by the relay, and a peer
# checks one before it blames with it (or gives it as evidence). Every peer sends one of each,
# so this spares 2N of the ~3N checks a peer makes in a run.
LAZY = frozenset({"confirm", "sign"})


class Phase(StrEnum):
    ANNOUNCE = "announce"
    SHUFFLE = "shuffle"
    CONFIRM = "confirm"
    SIGN = "sign"
    BLAME = "blame"
    DONE = "done"


class BadMessage(Exception):
    """A message that is not a protocol message of this session; the reason says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------- the session


@dataclass(frozen=True, slots=True)
class Input:
    """One peer's input: the outpoint it spends and its owner's key, which signs for it."""

    outpoint: Outpoint
    owner: bytes

    def to_wire(self) -> dict[str, Any]:
        return {
            "tx": self.outpoint.txid.hex(),
            "index": self.outpoint.index,
            "owner": self.owner.hex(),
        }


def peer_order(inputs: Iterable[Input]) -> tuple[Input, ...]:
    """The inputs in the order no peer chose: by SHA-256 of all inputs and then each one."""
    found = list(inputs)
    everyone = hashlib.sha256(b"".join(sorted(_input_bytes(i) for i in found))).digest()
    return tuple(sorted(found, key=lambda i: hashlib.sha256(everyone + _input_bytes(i)).digest()))


def _input_bytes(item: Input) -> bytes:
    return item.outpoint.txid + item.outpoint.index.to_bytes(4, "big") + item.owner


@dataclass(frozen=True, slots=True)
class Session:
    """One run of the protocol in pool `pool`: its peers, in `peer_order`."""

    chain: bytes
    pool: str
    run: int
    asset: Asset
    peers: tuple[Input, ...]
    id: bytes = field(init=False)

    def __post_init__(self) -> None:
        if not 2 <= len(self.peers) <= MAX_PEERS:
            raise ValueError(f"a session has 2 to {MAX_PEERS} peers, not {len(self.peers)}")
        if len({p.owner for p in self.peers}) != len(self.peers):
            raise ValueError("two inputs of a session belong to one owner")
        if len({p.outpoint for p in self.peers}) != len(self.peers):
            raise ValueError("an input is in the session twice")
        if tuple(self.peers) != peer_order(self.peers):
            raise ValueError("the peers are not in peer order")
        wire = {
            "chain": self.chain.hex(),
            "pool": self.pool,
            "run": self.run,
            "asset": asset_to_wire(self.asset),
            "peers": [p.to_wire() for p in self.peers],
        }
        object.__setattr__(self, "id", hashlib.sha256(canonical_json(wire)).digest())

    @classmethod
    def of(
        cls, chain: bytes, pool: str, run: int, asset: Asset, inputs: Iterable[Input]
    ) -> Session:
        return cls(chain, pool, run, asset, peer_order(inputs))

    @property
    def size(self) -> int:
        return len(self.peers)

    def index_of(self, owner: bytes) -> int:
        for index, peer in enumerate(self.peers):
            if peer.owner == owner:
                return index
        raise ValueError("not a peer of this session")

    def without(self, culprits: Iterable[int]) -> Session:
        """The next run: the same pool without the culprits (an error if fewer than 2 stay)."""
        excluded = set(culprits)
        staying = [p for n, p in enumerate(self.peers) if n not in excluded]
        return Session.of(self.chain, self.pool, self.run + 1, self.asset, staying)

    def transfer(self, outputs: Sequence[bytes]) -> Transfer:
        """The unsigned transfer of this session's inputs to `outputs`, in that order."""
        return Transfer(
            self.chain,
            tuple(p.outpoint for p in self.peers),
            tuple(Output(self.asset, address) for address in outputs),
        )

    def digest(self, eks: Sequence[bytes], outputs: Sequence[bytes]) -> bytes:
        """What each peer confirms: the session, every announced key and the final list."""
        return hashlib.sha256(self.id + b"".join(eks) + b"".join(outputs)).digest()


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Message:
    """One signed protocol message: `body` is the kind's own fields (JSON values)."""

    session: bytes
    sender: int
    kind: Kind
    body: Mapping[str, Any]
    signature: bytes = b""

    def unsigned_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "session": self.session.hex(),
            "sender": self.sender,
            "kind": str(self.kind),
            "body": dict(self.body),
        }

    def to_wire(self) -> dict[str, Any]:
        return {**self.unsigned_wire(), "signature": self.signature.hex()}

    def encode(self) -> bytes:
        return _canonical(self.to_wire(), self.kind)

    def signed_bytes(self) -> bytes:
        return signing_message(
            MESSAGE_TYPE, hashlib.sha256(_canonical(self.unsigned_wire(), self.kind)).digest()
        )


def _canonical(wire: dict[str, Any], kind: Kind) -> bytes:
    """`canonical_json(wire)` of a message of `kind`. orjson with sorted keys writes the same
    bytes for strings, integers, lists, objects and null (tests/test_mixer_encoding.py), which
    is all a message but a blame holds (`_check_body`); a blame's evidence may hold anything
    (a float, which canonical JSON refuses), so it takes the canonical encoder, as does an
    integer beyond 64 bits, which orjson refuses."""
    if kind is not Kind.BLAME:
        with contextlib.suppress(TypeError):
            return orjson.dumps(wire, option=orjson.OPT_SORT_KEYS)
    return canonical_json(wire)


def sign_message(
    session: Session, sender: int, kind: Kind, body: Mapping[str, Any], key: Keypair
) -> Message:
    unsigned = Message(session.id, sender, kind, body)
    return Message(session.id, sender, kind, body, key.sign(unsigned.signed_bytes()))


def decode_message(
    raw: bytes | Mapping[str, Any], session: Session, *, check_signature: bool = True
) -> Message:
    """The message in `raw` (canonical JSON, or its parsed object) if it is a well-formed
    message of `session` signed by its sender's input key; BadMessage naming why not. With
    `check_signature` False the signature is left for `Peer.receive(..., checked=False)` to
    check when it matters (see `LAZY`)."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            wire: Any = parse_json(bytes(raw))
        except Rejected as exc:
            raise BadMessage(f"not JSON: {exc.message}") from None
    else:
        wire = raw
    if not isinstance(wire, Mapping) or set(wire) != {
        "v",
        "session",
        "sender",
        "kind",
        "body",
        "signature",
    }:
        raise BadMessage("a message has exactly v, session, sender, kind, body, signature")
    if wire["v"] != 1 or wire["session"] != session.id.hex():
        raise BadMessage("the message is not of this session")
    sender = wire["sender"]
    if isinstance(sender, bool) or not isinstance(sender, int) or not 0 <= sender < session.size:
        raise BadMessage(f"sender must be a peer index below {session.size}")
    try:
        kind = Kind(wire["kind"])
    except ValueError:
        raise BadMessage(f"kind must be one of {', '.join(Kind)}") from None
    body = wire["body"]
    if not isinstance(body, Mapping):
        raise BadMessage("body must be an object")
    _check_body(kind, body, session)
    message = Message(
        session.id, sender, kind, dict(body), _hex(wire["signature"], SIGNATURE_BYTES, "signature")
    )
    if check_signature and not signed_by_sender(message, session):
        raise BadMessage(f"the signature is not peer {sender}'s")
    return message


def signed_by_sender(message: Message, session: Session) -> bool:
    """Whether `message` carries its sender's signature (`session` names the sender's key)."""
    return verify(session.peers[message.sender].owner, message.signed_bytes(), message.signature)


def _check_body(kind: Kind, body: Mapping[str, Any], session: Session) -> None:
    fields = {
        Kind.ANNOUNCE: {"ek"},
        Kind.SHUFFLE: {"ciphertexts"},
        Kind.FINAL: {"outputs"},
        Kind.CONFIRM: {"digest"},
        Kind.SIGN: {"signature"},
        Kind.BLAME: {"reason", "dk", "evidence", "cause"},
    }[kind]
    if set(body) != fields:
        raise BadMessage(f"a {kind} message's body has exactly {', '.join(sorted(fields))}")
    if kind is Kind.ANNOUNCE:
        _hex(body["ek"], KEY_BYTES, "ek")
    elif kind is Kind.SHUFFLE:
        _hex_list(body["ciphertexts"], session.size, None, "ciphertexts")
    elif kind is Kind.FINAL:
        _hex_list(body["outputs"], session.size, ADDRESS_BYTES, "outputs")
    elif kind is Kind.CONFIRM:
        _hex(body["digest"], 32, "digest")
    elif kind is Kind.SIGN:
        _hex(body["signature"], SIGNATURE_BYTES, "signature")
    else:
        if not isinstance(body["reason"], str) or len(body["reason"]) > 500:
            raise BadMessage("reason must be a string of at most 500 characters")
        if body["dk"] is not None:
            _hex(body["dk"], KEY_BYTES, "dk")
        if body["cause"] is not None:
            _hex(body["cause"], 32, "cause")
        evidence = body["evidence"]
        if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
            raise BadMessage(f"evidence must be a list of at most {MAX_EVIDENCE} messages")


def _hex(value: Any, size: int | None, what: str) -> bytes:
    if not isinstance(value, str) or value != value.lower():
        raise BadMessage(f"{what} must be lowercase hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BadMessage(f"{what} must be lowercase hex") from None
    if size is not None and len(raw) != size:
        raise BadMessage(f"{what} must be {size} bytes")
    return raw


def _hex_list(value: Any, most: int, size: int | None, what: str) -> list[bytes]:
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise BadMessage(f"{what} must be a list of 1 to {most} items")
    return [_hex(item, size, f"{what}[{n}]") for n, item in enumerate(value)]


def _bytes_list(message: Message, name: str) -> list[bytes]:
    return [bytes.fromhex(item) for item in message.body[name]]


# ----------------------------------------------------------------------------- onions


def seal(address: bytes, eks: Sequence[bytes]) -> bytes:
    """`address` sealed for each key of `eks` in turn: the last key's layer is outermost."""
    ciphertext = address
    for ek in eks:
        ciphertext = nacl.public.SealedBox(nacl.public.PublicKey(ek)).encrypt(ciphertext)
    return ciphertext


def peel(ciphertext: bytes, dk: bytes) -> bytes | None:
    """One layer off `ciphertext` with secret key `dk`; None if it is not sealed for it."""
    return peel_all([ciphertext], dk)[0]


def peel_all(ciphertexts: Sequence[bytes], dk: bytes) -> list[bytes | None]:
    """`peel` of each of `ciphertexts`, deriving the key pair of `dk` once for all of them."""
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(dk))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return [None] * len(ciphertexts)
    opened: list[bytes | None] = []
    for ciphertext in ciphertexts:
        try:
            opened.append(box.decrypt(ciphertext))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            opened.append(None)
    return opened


# ----------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Done:
    """The transfer, signed by every peer."""

    transfer: Transfer


@dataclass(frozen=True, slots=True)
class Blamed:
    """The run failed; `culprits` (peer index -> reason) are excluded from the next."""

    culprits: Mapping[int, str]


Outcome = Done | Blamed


# ----------------------------------------------------------------------------- the peer


class Peer:
    """One peer of `session`: the owner of input `key`, who wants its coin at `output`.

    Feed it every message of the session it receives (`receive`, decoded and checked by
    `decode_message`); send what `start` and `receive` return. `outcome` is None until the
    run ends. `rng` shuffles (a cryptographic one unless a test gives its own).
    """

    def __init__(
        self,
        session: Session,
        key: Keypair,
        output: bytes,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if len(output) != ADDRESS_BYTES:
            raise ValueError("an output address is 32 bytes")
        self.session = session
        self.key = key
        self.index = session.index_of(key.public_key)
        self.output = output
        self.rng = rng or random.SystemRandom()
        self._ephemeral = nacl.public.PrivateKey.generate()
        self.ek = bytes(self._ephemeral.public_key)
        self.phase = Phase.ANNOUNCE
        self.outcome: Outcome | None = None
        self.problem: str | None = None  # why this peer blamed, if it did
        self._received: dict[tuple[int, Kind], list[Message]] = {}
        self._eks: dict[int, bytes] = {}
        self._outputs: list[bytes] | None = None
        self._unsigned: Transfer | None = None
        self._to_sign = b""  # what each peer signs: the unsigned transfer's signing message
        self._signatures: dict[int, bytes] = {}
        self._confirms: dict[int, bytes] = {}
        self._blames: dict[int, Message] = {}
        self._agreed = False
        self._unchecked: set[bytes] = set()  # ids of messages taken with their signature unchecked
        self._onion: bytes | None = None  # `output` sealed for the later peers, made once

    # -- the messages this peer sends

    def _own(self, kind: Kind, body: Mapping[str, Any]) -> list[Message]:
        """Sign a message, take it as received (so it is in the evidence and acted on), and
        return it with whatever it leads to."""
        message = sign_message(self.session, self.index, kind, body, self.key)
        return [message, *self.receive(message)]

    def start(self) -> list[Message]:
        """The announcement: this run's ephemeral key, signed by the input key."""
        return self._own(Kind.ANNOUNCE, {"ek": self.ek.hex()})

    # -- what it receives

    def receive(self, message: Message, *, checked: bool = True) -> list[Message]:
        """Take one message of the session; what to send in answer. `checked`: whether its
        signature was checked (`decode_message`); only kinds in `LAZY` may come unchecked,
        and their signature is checked before anything is held against their sender."""
        if self.outcome is not None or message.session != self.session.id:
            return []
        if not checked and str(message.kind) not in LAZY:
            raise ValueError(f"a {message.kind} message must come with its signature checked")
        versions = self._received.setdefault((message.sender, message.kind), [])
        if message in versions:
            return []
        versions.append(message)
        if not checked:
            self._unchecked.add(message_id(message))
        if message.kind is Kind.BLAME:
            return self._on_blame(message)
        if self.phase is Phase.BLAME and not (message.kind is Kind.SIGN and self._agreed):
            return []  # but a transfer every peer signed is whole, whoever blamed since
        if len(versions) > 1:
            for version in list(versions):
                self._authentic(version)
            if len(versions) > 1:
                return self._blame(
                    f"peer {message.sender} sent two different {message.kind} messages"
                )
            if versions[0] != message:
                return []  # this one was forged on the way; the sender's own was taken
            # else the one taken before was forged: act on the sender's own, in its place
        handler = {
            Kind.ANNOUNCE: self._on_announce,
            Kind.SHUFFLE: self._on_shuffle,
            Kind.FINAL: self._on_final,
            Kind.CONFIRM: self._on_confirm,
            Kind.SIGN: self._on_sign,
        }[message.kind]
        return handler(message)

    def _on_announce(self, message: Message) -> list[Message]:
        self._eks[message.sender] = bytes.fromhex(message.body["ek"])
        if len(self._eks) < self.session.size or self.phase is not Phase.ANNOUNCE:
            return []
        self.phase = Phase.SHUFFLE
        if self.index == 0:
            return self._shuffle([])
        waiting = self._received.get((self.index - 1, Kind.SHUFFLE))
        if waiting:
            return self._take_shuffle(waiting[0])
        self.onion()  # sealed while the earlier peers shuffle, not in this peer's own turn
        return []

    def _on_shuffle(self, message: Message) -> list[Message]:
        if message.sender != self.index - 1 or self.phase is not Phase.SHUFFLE:
            return []  # not ours to act on, or kept until every key is known
        return self._take_shuffle(message)

    def _take_shuffle(self, message: Message) -> list[Message]:
        ciphertexts = _bytes_list(message, "ciphertexts")
        if len(ciphertexts) != self.index:
            return self._blame(
                f"peer {message.sender} passed {len(ciphertexts)} ciphertexts, not {self.index}"
            )
        if len(set(ciphertexts)) != len(ciphertexts):
            return self._blame(f"peer {message.sender} passed a ciphertext twice")
        peeled = peel_all(ciphertexts, bytes(self._ephemeral))
        opened = [p for p in peeled if p is not None]
        if len(opened) != len(peeled):
            return self._blame("a ciphertext I got does not open with my key")
        return self._shuffle(opened)

    def onion(self) -> bytes:
        """This peer's output sealed for peers N-1, ..., index+1 (the outermost layer for the
        next peer), made once every key is announced and kept for its step of the shuffle."""
        if self._onion is None:
            later = [self._eks[n] for n in range(self.index + 1, self.session.size)][::-1]
            self._onion = seal(self.output, later)
        return self._onion

    def _shuffle(self, peeled: list[bytes]) -> list[Message]:
        items = [*peeled, self.onion()]
        if len(set(items)) != len(items):
            return self._blame("two of the ciphertexts I peeled are the same")
        self.rng.shuffle(items)
        if self.index < self.session.size - 1:
            return self._own(Kind.SHUFFLE, {"ciphertexts": [c.hex() for c in items]})
        if any(len(item) != ADDRESS_BYTES for item in items):
            return self._blame("a ciphertext I peeled last is not an address")
        return self._own(Kind.FINAL, {"outputs": [a.hex() for a in items]})

    def _on_final(self, message: Message) -> list[Message]:
        if message.sender != self.session.size - 1:
            return []
        if len(self._eks) < self.session.size:
            return self._blame("the final list came before every announcement")
        outputs = _bytes_list(message, "outputs")
        if len(outputs) != self.session.size or len(set(outputs)) != len(outputs):
            return self._blame("the final list does not hold as many distinct outputs as peers")
        if self.output not in outputs:
            return self._blame("my output is missing from the final list")
        self._outputs = outputs
        self._unsigned = self.session.transfer(outputs)
        self._to_sign = signing_message("transfer", txid(self._unsigned))
        self.phase = Phase.CONFIRM
        eks = [self._eks[n] for n in range(self.session.size)]
        return self._own(Kind.CONFIRM, {"digest": self.session.digest(eks, outputs).hex()})

    def _on_confirm(self, message: Message) -> list[Message]:
        self._confirms[message.sender] = bytes.fromhex(message.body["digest"])
        mine = self._confirms.get(self.index)
        if mine is None or len(self._confirms) < self.session.size:
            return []
        for n in sorted(n for n, d in self._confirms.items() if d != mine):
            if not self._authentic(self._received[(n, Kind.CONFIRM)][0]):
                del self._confirms[n]  # forged on the way: wait for the peer's own
        differ = sorted(n for n, d in self._confirms.items() if d != mine)
        if differ:
            return self._blame(f"peers {differ} confirmed another transcript")
        if len(self._confirms) < self.session.size:
            return []
        self._agreed = True
        self.phase = Phase.SIGN
        assert self._unsigned is not None
        signature = self.key.sign(self._to_sign)
        out = self._own(Kind.SIGN, {"signature": signature.hex()})
        for (_, kind), versions in list(self._received.items()):
            if kind is Kind.SIGN and self.outcome is None and self.phase is Phase.SIGN:
                out.extend(self._on_sign(versions[0]))  # those that came before agreement
        return out

    def _on_sign(self, message: Message) -> list[Message]:
        if not self._agreed or self._unsigned is None or message.sender in self._signatures:
            return []  # kept until the transcript is agreed
        signature = bytes.fromhex(message.body["signature"])
        owner = self.session.peers[message.sender].owner
        if not verify(owner, self._to_sign, signature):
            if not self._authentic(message):
                return []  # forged on the way, not the peer's: wait for its own
            return self._blame(f"peer {message.sender}'s signature of the transfer does not verify")
        self._signatures[message.sender] = signature
        if len(self._signatures) == self.session.size:
            signatures = tuple(
                Signature(self.session.peers[n].owner, self._signatures[n])
                for n in range(self.session.size)
            )
            unsigned = self._unsigned
            self.phase = Phase.DONE
            self.outcome = Done(
                Transfer(unsigned.chain, unsigned.inputs, unsigned.outputs, signatures)
            )
        return []

    # -- blame

    def _blame(self, reason: str, cause: Message | None = None) -> list[Message]:
        """Start (or, with `cause`, answer) the blame phase: reveal the ephemeral key unless
        the transcript was agreed, and give everything received as evidence."""
        if self.phase is Phase.BLAME:
            return []
        self.phase = Phase.BLAME
        self.problem = reason
        taken = [m for ms in self._received.values() for m in ms if m.kind is not Kind.BLAME]
        evidence = [m.to_wire() for m in taken if self._authentic(m)]
        body = {
            "reason": reason,
            "dk": None if self._agreed else bytes(self._ephemeral).hex(),
            "evidence": evidence,
            "cause": None if cause is None else message_id(cause).hex(),
        }
        return self._own(Kind.BLAME, body)

    def _on_blame(self, message: Message) -> list[Message]:
        out: list[Message] = []
        if self.phase is not Phase.BLAME:
            out = self._blame(f"answering peer {message.sender}'s blame", message)
        # The first blame of each peer counts: the coordinator relays blames to everyone in one
        # order, so every peer judges the same N blames whatever a cheat sends later.
        self._blames.setdefault(message.sender, message)
        if len(self._blames) == self.session.size and self.outcome is None:
            self.outcome = Blamed(verdict(self.session, list(self._blames.values())))
        return out

    def silent(self, peers: Iterable[int]) -> None:
        """The coordinator's word that `peers` said nothing past the timeout: they go."""
        if self.outcome is None:
            self.outcome = Blamed({n: "silent past the timeout" for n in peers})

    def inputs_spent(self, peers: Iterable[int]) -> None:
        """The ledger's word that the inputs of `peers` are spent elsewhere: they go."""
        if not isinstance(self.outcome, Done) or peers:
            self.outcome = Blamed({n: "spent its input elsewhere (double spend)" for n in peers})

    def _authentic(self, message: Message) -> bool:
        """Whether a message taken is its sender's: one taken unchecked is checked now, and
        forgotten if forged (it came from the relay, not from its sender)."""
        key = message_id(message)
        if key not in self._unchecked:
            return True
        self._unchecked.discard(key)
        if signed_by_sender(message, self.session):
            return True
        self._received[(message.sender, message.kind)].remove(message)
        return False

    def received(self) -> list[Message]:
        """Every message taken, its own included, each version once."""
        return [m for ms in self._received.values() for m in ms]


def message_id(message: Message) -> bytes:
    """The SHA-256 of a message's encoding: how an answering blame names its cause."""
    return hashlib.sha256(message.encode()).digest()


# ----------------------------------------------------------------------------- the verdict


def verdict(session: Session, blames: Sequence[Message]) -> dict[int, str]:
    """The culprits of a run that ended in blame, with the reason for each, from the peers'
    blame messages alone (so everyone holding them names the same). Empty only if there is
    nothing to blame anyone for (no blame message was of a real problem)."""
    by_sender = {b.sender: b for b in blames if b.kind is Kind.BLAME}
    culprits: dict[int, str] = {}
    evidence = _evidence(session, by_sender.values(), culprits)
    # 1. Equivocation: two versions of one message, each signed by its sender.
    versions: dict[tuple[int, Kind], dict[bytes, Message]] = {}
    for message in evidence:
        versions.setdefault((message.sender, message.kind), {})[message_id(message)] = message
    for (sender, kind), found in sorted(versions.items()):
        if len(found) > 1:
            culprits.setdefault(sender, f"signed two different {kind} messages")
    if culprits:
        return culprits
    one = {key: next(iter(found.values())) for key, found in versions.items()}
    eks = {n: bytes.fromhex(m.body["ek"]) for (n, kind), m in one.items() if kind is Kind.ANNOUNCE}
    confirms = {n: m.body["digest"] for (n, kind), m in one.items() if kind is Kind.CONFIRM}
    final = one.get((session.size - 1, Kind.FINAL))
    outputs = _bytes_list(final, "outputs") if final is not None else None
    agreed = (
        outputs is not None
        and len(eks) == session.size
        and len(confirms) == session.size
        and set(confirms.values())
        == {session.digest([eks[n] for n in range(session.size)], outputs).hex()}
    )
    if agreed:
        assert outputs is not None
        _check_signatures(session, outputs, one, culprits)
    else:
        _replay(session, by_sender, eks, one, outputs, culprits)
        if not culprits and outputs is not None and len(eks) == session.size:
            expected = session.digest([eks[n] for n in range(session.size)], outputs).hex()
            for n, digest in sorted(confirms.items()):
                if digest != expected:
                    culprits[n] = "confirmed a transcript that is not the one everyone saw"
    if not culprits:
        # Nothing was wrong: whoever started the blame disrupted the run for nothing. A blame
        # answers another only if it names that blame's id, which it cannot before it exists.
        ids = {message_id(b): n for n, b in by_sender.items()}
        for n, blame in sorted(by_sender.items()):
            cause = blame.body["cause"]
            if cause is None or ids.get(bytes.fromhex(cause), n) == n:
                culprits[n] = f"blamed without cause ({blame.body['reason']})"
    return culprits


def _evidence(
    session: Session, blames: Iterable[Message], culprits: dict[int, str]
) -> list[Message]:
    """Every non-blame message the blames carry, each checked; a blame carrying a message that
    is not a valid signed message of the session has its sender named."""
    found: list[Message] = []
    for blame in blames:
        for wire in blame.body["evidence"]:
            try:
                message = decode_message(wire, session)
            except BadMessage as bad:
                culprits.setdefault(
                    blame.sender, f"gave evidence that is not a message ({bad.reason})"
                )
                continue
            if message.kind is not Kind.BLAME:
                found.append(message)
    return found


def _check_signatures(
    session: Session,
    outputs: list[bytes],
    one: Mapping[tuple[int, Kind], Message],
    culprits: dict[int, str],
) -> None:
    message = signing_message("transfer", txid(session.transfer(outputs)))
    for n in range(session.size):
        sign = one.get((n, Kind.SIGN))
        if sign is not None and not verify(
            session.peers[n].owner, message, bytes.fromhex(sign.body["signature"])
        ):
            culprits[n] = "signed the transfer with a signature that does not verify"


def _replay(
    session: Session,
    blames: Mapping[int, Message],
    eks: Mapping[int, bytes],
    one: Mapping[tuple[int, Kind], Message],
    outputs: list[bytes] | None,
    culprits: dict[int, str],
) -> None:
    """Replay the shuffle with the revealed keys, naming every peer whose step is wrong, the
    creator of a ciphertext that does not open (the replay stops there) and makers of
    copies."""
    size = session.size
    dks: dict[int, bytes] = {}
    for n in range(size):
        blame = blames.get(n)
        if blame is None:
            continue  # silent in blame: the coordinator's timeout names it
        revealed = blame.body["dk"]
        if revealed is None:
            culprits[n] = "did not reveal its ephemeral key while the shuffle was in question"
            continue
        dk = bytes.fromhex(revealed)
        if n in eks and bytes(nacl.public.PrivateKey(dk).public_key) != eks[n]:
            culprits[n] = "revealed a key that is not the one it announced"
            continue
        dks[n] = dk
    if culprits or len(eks) < size:
        if not culprits and len(eks) < size:
            for n in range(size):
                if n not in eks and n in blames:
                    culprits[n] = "blamed without announcing its key"
        return
    # Each element of each list, with the peer who created it. A wrong step names its peer
    # and the replay goes on from what that peer sent, so every wrong step is named.
    previous: list[tuple[bytes, int]] = []
    for i in range(size):
        if i not in dks and i > 0:
            return  # a silent peer: nothing more can be replayed
        peeled: list[tuple[bytes, int]] = []
        opening = peel_all([ciphertext for ciphertext, _ in previous], dks[i]) if previous else []
        for (_, creator), opened in zip(previous, opening, strict=True):
            if opened is None:
                culprits.setdefault(creator, f"made a ciphertext that peer {i} cannot open")
                return
            peeled.append((opened, creator))
        if _copies(peeled, culprits) and i == size - 1:
            return
        if i == size - 1:
            for value, creator in peeled:
                if len(value) != ADDRESS_BYTES:
                    culprits.setdefault(creator, "made an onion that does not hold an address")
        kind = Kind.SHUFFLE if i < size - 1 else Kind.FINAL
        message = one.get((i, kind))
        if message is None:
            # The shuffle stopped here (a blame or a silence), unless a later peer went on
            # without this step: an honest one has it, and gives it as evidence.
            for k in range(i + 1, size):
                if (k, Kind.SHUFFLE if k < size - 1 else Kind.FINAL) in one:
                    culprits.setdefault(k, f"went on with the shuffle without peer {i}'s step")
                    break
            return
        sent = _bytes_list(message, "ciphertexts" if kind is Kind.SHUFFLE else "outputs")
        unpeeled = Counter(value for value, _ in peeled)
        remaining = Counter(sent)
        remaining.subtract(unpeeled)
        dropped = any(count < 0 for count in remaining.values())
        new = [value for value, count in remaining.items() for _ in range(max(count, 0))]
        if dropped or len(sent) != i + 1 or len(new) != 1 or len(set(sent)) != len(sent):
            what = "the final list" if kind is Kind.FINAL else "its shuffle"
            culprits.setdefault(i, f"dropped, replaced or repeated a ciphertext in {what}")
        if kind is Kind.FINAL:
            return
        creators = dict(peeled)
        previous = [(value, i if value in new else creators.get(value, i)) for value in sent]


def _copies(peeled: list[tuple[bytes, int]], culprits: dict[int, str]) -> bool:
    """Name the makers of copies among `peeled`: in a group of equal values, every creator
    but the lowest. Nobody can copy what a later peer makes (it does not exist yet when the
    earlier one acts), so the lowest is the original and an honest peer is never named."""
    groups: dict[bytes, list[int]] = {}
    for value, creator in peeled:
        groups.setdefault(value, []).append(creator)
    found = False
    for creators in groups.values():
        for creator in sorted(creators)[1:]:
            culprits.setdefault(creator, "copied another peer's onion or output")
            found = True
    return found


def owed(session: Session, messages: Iterable[Message]) -> frozenset[int]:
    """The peers the protocol waits for, given every message of the session relayed so far
    (the coordinator's view): whom a timeout names as silent. Empty once every peer's valid
    signature of the transfer is in (only the ledger decides then), or before anything is owed."""
    relayed = list(messages)
    said: dict[Kind, set[int]] = {kind: set() for kind in Kind}
    for message in relayed:
        said[message.kind].add(message.sender)
    everyone = set(range(session.size))
    if said[Kind.SIGN] == everyone and whole_transfer(session, relayed) is not None:
        return frozenset()
    if said[Kind.BLAME]:
        return frozenset(everyone - said[Kind.BLAME])
    if said[Kind.ANNOUNCE] != everyone:
        return frozenset(everyone - said[Kind.ANNOUNCE])
    for i in range(session.size - 1):
        if i not in said[Kind.SHUFFLE]:
            return frozenset({i})
    if session.size - 1 not in said[Kind.FINAL]:
        return frozenset({session.size - 1})
    if said[Kind.CONFIRM] != everyone:
        return frozenset(everyone - said[Kind.CONFIRM])
    return frozenset(everyone - said[Kind.SIGN])


def whole_transfer(session: Session, messages: Iterable[Message]) -> Transfer | None:
    """The transfer of a final list among `messages` with a valid signature by every peer
    among them; None while a signature is missing or signs something else."""
    relayed = list(messages)
    signs = [m for m in relayed if m.kind is Kind.SIGN]
    if {m.sender for m in signs} != set(range(session.size)):
        return None
    for final in relayed:
        if final.kind is not Kind.FINAL or final.sender != session.size - 1:
            continue
        outputs = _bytes_list(final, "outputs")
        if len(set(outputs)) != session.size:
            continue
        unsigned = session.transfer(outputs)
        to_sign = signing_message("transfer", txid(unsigned))
        valid: dict[int, bytes] = {}
        for sign in signs:
            signature = bytes.fromhex(sign.body["signature"])
            owner = session.peers[sign.sender].owner
            if sign.sender not in valid and verify(owner, to_sign, signature):
                valid[sign.sender] = signature
        if len(valid) == session.size:
            signatures = tuple(Signature(p.owner, valid[n]) for n, p in enumerate(session.peers))
            return Transfer(unsigned.chain, unsigned.inputs, unsigned.outputs, signatures)
    return None
