"""API keys (monitoring.keys): shown once and kept only as a hash, read and write grants,
revocation by key, label or listed id, and community scoping of nodes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from monitoring.keys import (
    KeyGrant,
    create_key,
    grant_of,
    list_keys,
    node_communities,
    revoke_key,
)
from monitoring.store import MonitoringStore, apikey

NOW = 1_750_000_000


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[MonitoringStore]:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    store.put_community("valle", "Valle Solar", "Europe/Madrid")
    store.put_community("monte", "Monte Verde", "Europe/Rome")
    yield store
    store.close()


def stored_rows(store: MonitoringStore) -> list[dict[str, object]]:
    with store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(apikey))]


def test_a_key_is_32_hex_characters_and_only_its_hash_is_stored(store: MonitoringStore) -> None:
    key = create_key(store, "emonhub at Ana's", "write", None, NOW)
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    rows = stored_rows(store)
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(value) for value in rows[0].values())
    assert key != create_key(store, "another", "write", None, NOW)


def test_grants_say_read_or_write_and_the_community(store: MonitoringStore) -> None:
    write = create_key(store, "gateway", "write", "valle", NOW)
    read = create_key(store, "dashboard", "read", None, NOW)
    assert grant_of(store, write, NOW) == KeyGrant("write", "valle")
    assert grant_of(store, read, NOW) == KeyGrant("read", None)
    assert grant_of(store, write, NOW).writes  # type: ignore[union-attr]
    assert not grant_of(store, read, NOW).writes  # type: ignore[union-attr]


@pytest.mark.parametrize("guess", ["", "0" * 32, "x" * 5000, "Bearer abc", "é" * 32])
def test_a_wrong_key_grants_nothing(store: MonitoringStore, guess: str) -> None:
    key = create_key(store, "gateway", "write", None, NOW)
    assert grant_of(store, guess, NOW) is None
    assert grant_of(store, key.upper(), NOW) is None  # keys are lowercase, compared exactly


def test_last_used_is_written_at_most_once_a_minute(store: MonitoringStore) -> None:
    key = create_key(store, "gateway", "write", None, NOW)
    assert list_keys(store)[0].last_used is None
    grant_of(store, key, NOW + 10)
    assert list_keys(store)[0].last_used == NOW + 10
    grant_of(store, key, NOW + 69)
    assert list_keys(store)[0].last_used == NOW + 10
    grant_of(store, key, NOW + 70)
    assert list_keys(store)[0].last_used == NOW + 70


def test_listing_shows_an_id_from_the_hash_never_the_key(store: MonitoringStore) -> None:
    key = create_key(store, "gateway", "read", "monte", NOW)
    (listed,) = list_keys(store)
    assert listed.id == hashlib.sha256(key.encode()).hexdigest()[:12]
    assert (listed.label, listed.access, listed.community_id, listed.created) == (
        "gateway",
        "read",
        "monte",
        NOW,
    )
    assert key not in repr(listed)


@pytest.mark.parametrize("how", ["key", "label", "id"])
def test_revoking_by_key_label_or_id_refuses_the_key_from_then_on(
    store: MonitoringStore, how: str
) -> None:
    key = create_key(store, "gateway", "write", None, NOW)
    kept = create_key(store, "dashboard", "read", None, NOW)
    (listed,) = [k for k in list_keys(store) if k.label == "gateway"]
    which = {"key": key, "label": "gateway", "id": listed.id}[how]
    assert revoke_key(store, which) == 1
    assert grant_of(store, key, NOW) is None
    assert grant_of(store, kept, NOW) == KeyGrant("read", None)


@pytest.mark.parametrize("which", ["nothing", "abc", "", "%", "_" * 8])
def test_revoking_what_names_no_key_says_so_and_keeps_every_key(
    store: MonitoringStore, which: str
) -> None:
    key = create_key(store, "gateway", "write", None, NOW)
    with pytest.raises(ValueError, match="no API key"):
        revoke_key(store, which)
    assert grant_of(store, key, NOW) is not None


@pytest.mark.parametrize(
    ("label", "access", "community", "says"),
    [
        ("", "write", None, "label"),
        ("x" * 201, "write", None, "label"),
        ("ok", "admin", None, "read or write"),
        ("ok", "write", "nowhere", "no community"),
    ],
)
def test_a_key_cannot_be_made_wrong(
    store: MonitoringStore, label: str, access: str, community: str | None, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        create_key(store, label, access, community, NOW)  # type: ignore[arg-type]
    assert stored_rows(store) == []


def test_a_community_key_reaches_only_its_communitys_nodes(store: MonitoringStore) -> None:
    store.set_node("ana", community_id="valle")
    store.set_node("bruno", community_id="monte")
    store.set_node("loose", label="a node of no community")
    grant = KeyGrant("write", "valle")
    communities = node_communities(store, ["ana", "bruno", "loose", "unknown"])
    assert communities == {"ana": "valle", "bruno": "monte", "loose": None}
    assert [grant.reaches(communities[n]) for n in ("ana", "bruno", "loose")] == [
        True,
        False,
        False,
    ]
    everything = KeyGrant("read", None)
    assert all(everything.reaches(c) for c in communities.values())
