"""API keys, emoncms-style: a read key reads feeds, a write key also posts inputs. A key is
32 lowercase hex characters shown once; the store keeps only its SHA-256, so a stolen
database holds no usable key. A key with a community reaches only that community's nodes,
and a node first seen through it joins that community."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, or_, select, update

from monitoring.store import MonitoringStore, apikey, node

READ: Literal["read"] = "read"
WRITE: Literal["write"] = "write"
Access = Literal["read", "write"]
KEY_BYTES = 16  # 32 hex characters, as emoncms's apikeys (emonhub checks the length)
LONGEST_KEY = 128  # longer is no key of ours: refused before hashing
LAST_USED_EVERY_S = 60  # a busy device must not turn every post into a write of its key
ID_CHARS = 12  # how much of the hash names a key in listings
SHORTEST_ID = 8  # a shorter prefix could name a key by accident


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a key allows: `access` "read" or "write" (write reads too); `community_id` the
    one community whose nodes it reaches, None for every node."""

    access: Access
    community_id: str | None

    @property
    def writes(self) -> bool:
        return self.access == WRITE

    def reaches(self, node_community: str | None) -> bool:
        """Whether the key reaches a node of `node_community` (None: a node of none)."""
        return self.community_id is None or node_community == self.community_id


@dataclass(frozen=True, slots=True)
class KeyListing:
    """A key as listed: `id` the start of its hash (never the key), times in unix seconds."""

    id: str
    label: str
    access: str
    community_id: str | None
    created: int
    last_used: int | None


def key_hash(key: str) -> str:
    """The SHA-256 of `key` in hex, as stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: MonitoringStore,
    label: str,
    access: Access,
    community_id: str | None,
    now: float,
) -> str:
    """A new key (32 lowercase hex characters), returned once: only its hash is stored.
    ValueError when the label is empty, the access unknown or the community missing."""
    label = label.strip()
    if not label or len(label) > 200:
        raise ValueError("a key's label is 1 to 200 characters: say what device it is for")
    if access not in (READ, WRITE):
        raise ValueError("a key's access is read or write")
    if community_id is not None and store.community(community_id) is None:
        raise ValueError(f"no community {community_id!r}: add it before giving it keys")
    key = secrets.token_hex(KEY_BYTES)
    with store.engine.begin() as conn:
        conn.execute(
            apikey.insert().values(
                key_hash=key_hash(key),
                label=label,
                access=access,
                community_id=community_id,
                created=int(now),
                last_used=None,
            )
        )
    return key


def grant_of(store: MonitoringStore, key: str, now: float) -> KeyGrant | None:
    """What `key` allows, or None for no key of ours. Looked up by its hash, so the time taken
    says nothing about how close a guess came; `last_used` (unix seconds) is written at most
    once a minute."""
    if not key or len(key) > LONGEST_KEY:
        return None
    digest = key_hash(key)
    with store.engine.connect() as conn:
        row = conn.execute(
            select(apikey.c.access, apikey.c.community_id, apikey.c.last_used).where(
                apikey.c.key_hash == digest
            )
        ).first()
    if row is None:
        return None
    access, community_id, last_used = (
        row._mapping[c] for c in ("access", "community_id", "last_used")
    )
    if last_used is None or now - last_used >= LAST_USED_EVERY_S:
        with store.engine.begin() as conn:
            conn.execute(
                update(apikey).where(apikey.c.key_hash == digest).values(last_used=int(now))
            )
    return KeyGrant(WRITE if access == WRITE else READ, community_id)


def list_keys(store: MonitoringStore) -> list[KeyListing]:
    """Every key's listing, oldest first (never the key, which is not kept)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(apikey).order_by(apikey.c.created, apikey.c.label))
        return [
            KeyListing(
                r["key_hash"][:ID_CHARS],
                r["label"],
                r["access"],
                r["community_id"],
                r["created"],
                r["last_used"],
            )
            for r in (row._mapping for row in rows)
        ]


def revoke_key(store: MonitoringStore, which: str) -> int:
    """Revoke the key `which` names: the key itself, its label (every key of that label), or
    the start of its hash as listed (at least 8 characters). How many were revoked;
    ValueError when none matches."""
    which = which.strip()
    matches = [apikey.c.key_hash == key_hash(which), apikey.c.label == which]
    if len(which) >= SHORTEST_ID and all(c in "0123456789abcdef" for c in which):
        matches.append(apikey.c.key_hash.startswith(which, autoescape=True))
    with store.engine.begin() as conn:
        revoked = conn.execute(delete(apikey).where(or_(*matches))).rowcount or 0
    if not revoked:
        raise ValueError(f"no API key is {which!r}: give its label or its id from the listing")
    return revoked


def node_communities(store: MonitoringStore, names: Iterable[str]) -> dict[str, str | None]:
    """The community of each node of `names` that exists (None: a node of no community)."""
    wanted = list(set(names))
    if not wanted:
        return {}
    with store.engine.connect() as conn:
        rows = conn.execute(select(node.c.name, node.c.community_id).where(node.c.name.in_(wanted)))
        return {row._mapping["name"]: row._mapping["community_id"] for row in rows}
