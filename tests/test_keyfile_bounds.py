"""`assets.keyfile`: a sealed key file names its Argon2id limits; they are bounded (libsodium's
interactive to sensitive levels) and checked before any work, so a tampered file can neither
hang the process nor exhaust its memory."""

from __future__ import annotations

import json
import time
from typing import Any

import nacl.pwhash
import pytest

from assets import Keypair
from assets.keyfile import MEM_RANGE, OPS_RANGE, KeyFileError, dump_keys, load_keys

PASSPHRASE = b"correct horse battery staple"
_KDF = nacl.pwhash.argon2id


@pytest.fixture(scope="module")
def sealed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(dump_keys({"k": Keypair(bytes(32))}, PASSPHRASE))
    return document


def tampered(document: dict[str, Any], **kdf: Any) -> bytes:
    return json.dumps({**document, "kdf": {**document["kdf"], **kdf}}).encode()


def test_the_bounds_are_libsodiums_interactive_to_sensitive_levels() -> None:
    assert OPS_RANGE == (_KDF.OPSLIMIT_INTERACTIVE, _KDF.OPSLIMIT_SENSITIVE)
    assert MEM_RANGE == (_KDF.MEMLIMIT_INTERACTIVE, _KDF.MEMLIMIT_SENSITIVE)


@pytest.mark.parametrize(
    "kdf",
    [
        {"ops": 2**32 - 1},  # hours of work
        {"mem": 2**42},  # 4 TiB
        {"mem": _KDF.MEMLIMIT_SENSITIVE + 1},
        {"ops": _KDF.OPSLIMIT_SENSITIVE + 1},
        {"ops": 1},  # below the interactive minimum: a weak seal
        {"mem": 8192},
        {"ops": True},
        {"ops": 3.0},
        {"mem": "268435456"},
        {"mem": None},
        {"ops": -1},
    ],
    ids=repr,
)
def test_limits_out_of_bounds_are_refused_before_any_work(
    sealed: dict[str, Any], kdf: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*_: Any, **__: Any) -> bytes:
        raise AssertionError("Argon2id ran on a tampered key file")

    monkeypatch.setattr(_KDF, "kdf", no_work)
    started = time.monotonic()
    with pytest.raises(KeyFileError) as refused:
        load_keys(tampered(sealed, **kdf), PASSPHRASE)
    assert time.monotonic() - started < 1
    message = str(refused.value)
    assert "outside" in message and "refused before any work" in message, message


@pytest.mark.parametrize("kdf", [{"salt": "00"}, {"salt": 7}, {"name": "scrypt"}], ids=repr)
def test_a_damaged_kdf_is_refused_before_any_work(
    sealed: dict[str, Any], kdf: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_KDF, "kdf", lambda *_, **__: pytest.fail("Argon2id ran"))
    with pytest.raises(KeyFileError, match="damaged"):
        load_keys(tampered(sealed, **kdf), PASSPHRASE)


def test_a_file_within_the_bounds_still_opens(sealed: dict[str, Any]) -> None:
    keys = load_keys(json.dumps(sealed).encode(), PASSPHRASE)
    assert keys["k"].seed == bytes(32)
    interactive = tampered(sealed, ops=OPS_RANGE[0], mem=MEM_RANGE[0])
    with pytest.raises(KeyFileError, match="wrong passphrase"):  # other limits, other key
        load_keys(interactive, PASSPHRASE)
