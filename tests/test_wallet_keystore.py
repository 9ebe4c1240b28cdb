"""The wallet keystore: sealing, refusals with their codes, the edit lock, atomic writes."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wallet.keystore import (
    FORMAT,
    Contents,
    KdfLevel,
    KeystoreError,
    WalletFile,
)

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = b"correct horse battery staple"
FAST = KdfLevel.INTERACTIVE
SEED = bytes(range(32))


def make(path: Path, data: dict[str, Any] | None = None, seed: bytes = SEED) -> WalletFile:
    return WalletFile.create(path, PASSPHRASE, kdf=FAST, seed=seed, data=data)


def refused(code: str, call: Any, *args: Any) -> KeystoreError:
    """The KeystoreError `call(*args)` raises, checked to carry `code` and a one-line message."""
    with pytest.raises(KeystoreError) as caught:
        call(*args)
    error = caught.value
    assert error.code == code
    assert str(error) == error.message
    assert "\n" not in error.message and "Traceback" not in error.message
    assert ": " in error.message or "; " in error.message  # what happened, then what to do
    assert (error.__cause__ is None and error.__suppress_context__) or error.__context__ is None
    return error


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def rewrite(path: Path, change: Any) -> None:
    document = json.loads(path.read_bytes())
    change(document)
    path.write_text(json.dumps(document))


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------------- round trip


def test_create_open_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    created = make(path, {"owner": 0, "coins": {"a": [1, 2]}})
    opened = WalletFile.open(path, PASSPHRASE)
    for wallet in (created, opened):
        assert wallet.read() == Contents(SEED, {"owner": 0, "coins": {"a": [1, 2]}})
    document = json.loads(path.read_bytes())
    assert document["format"] == FORMAT
    assert document["kdf"]["name"] == "argon2id"
    assert (document["kdf"]["ops"], document["kdf"]["mem"]) == (FAST.ops, FAST.mem)


def test_a_new_wallet_has_a_random_seed_and_empty_data(tmp_path: Path) -> None:
    first = WalletFile.create(tmp_path / "a.json", PASSPHRASE, kdf=FAST).read()
    second = WalletFile.create(tmp_path / "b.json", PASSPHRASE, kdf=FAST).read()
    assert len(first.seed) == 32 and first.seed != second.seed
    assert first.data == {}


def test_keys_are_deterministic_per_index_and_distinct(tmp_path: Path) -> None:
    contents = Contents(SEED, {})
    assert contents.key(7).public_key == Contents(SEED, {"other": 1}).key(7).public_key
    publics = {contents.key(i).public_key for i in range(20)}
    assert len(publics) == 20
    other_seed = Contents(bytes(32), {})
    assert all(other_seed.key(i).public_key not in publics for i in range(20))
    assert contents.key(0).seed != SEED  # the master seed is never a key itself
    with pytest.raises(ValueError):
        contents.key(-1)


def test_key_derivation_is_the_specified_blake2b() -> None:
    import hashlib

    from assets.signing import Keypair

    expected = hashlib.blake2b(
        (5).to_bytes(8, "big"), key=SEED, person=b"petra-wallet-k1", digest_size=32
    ).digest()
    assert Contents(SEED, {}).key(5) == Keypair(expected)


def test_the_file_is_private_and_holds_nothing_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"label": "grandmother's rooftop"})
    with wallet.edit() as contents:
        contents.data["label"] = "the barn roof"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    for secret in (SEED, SEED.hex().encode(), b"barn roof", b"label"):
        assert secret not in raw


def test_create_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    path.write_text("precious")
    refused("exists", make, path)
    assert path.read_text() == "precious"
    assert temporaries(tmp_path) == []


# --------------------------------------------------------------------------- refusals


def test_a_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    make(path)
    error = refused("wrong_passphrase", WalletFile.open, path, b"wrong")
    assert error.message == (
        "wrong passphrase, or the wallet file is damaged: try again, or restore a backup"
    )


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    refused("missing", WalletFile.open, tmp_path / "nowhere.json", PASSPHRASE)


def flip_hex_digit(text: str, at: int) -> str:
    return text[:at] + ("1" if text[at] == "0" else "0") + text[at + 1 :]


@pytest.mark.parametrize(
    ("code", "change"),
    [
        # SecretBox cannot tell a changed ciphertext from a wrong key: both are the passphrase's
        ("wrong_passphrase", lambda d: d.update(sealed=flip_hex_digit(d["sealed"], 100))),
        ("wrong_passphrase", lambda d: d.update(sealed=flip_hex_digit(d["sealed"], 3))),
        ("wrong_passphrase", lambda d: d["kdf"].update(salt=flip_hex_digit(d["kdf"]["salt"], 0))),
        ("corrupted", lambda d: d.update(sealed="zz" + d["sealed"][2:])),
        ("corrupted", lambda d: d.update(sealed=d["sealed"][:60])),
        ("corrupted", lambda d: d.pop("sealed")),
        ("corrupted", lambda d: d.pop("kdf")),
        ("corrupted", lambda d: d["kdf"].update(name="scrypt")),
        ("corrupted", lambda d: d["kdf"].update(salt=d["kdf"]["salt"][:-2])),
        ("corrupted", lambda d: d["kdf"].update(mem=2**42)),
        # limits just past the bounds, so that accepting them fails fast rather than hangs
        ("corrupted", lambda d: d["kdf"].update(ops=KdfLevel.SENSITIVE.ops + 1)),
        ("corrupted", lambda d: d["kdf"].update(mem=KdfLevel.INTERACTIVE.mem // 2)),
        ("corrupted", lambda d: d["kdf"].update(ops=0)),
        ("corrupted", lambda d: d["kdf"].update(ops="3")),
        ("corrupted", lambda d: d["kdf"].update(mem=True)),
        ("not_a_wallet", lambda d: d.update(format="petra-keys-v1")),
        ("not_a_wallet", lambda d: d.pop("format")),
    ],
)
def test_a_damaged_file_is_refused_with_its_code(tmp_path: Path, code: str, change: Any) -> None:
    path = tmp_path / "wallet.json"
    make(path)
    rewrite(path, change)
    refused(code, WalletFile.open, path, PASSPHRASE)


@pytest.mark.parametrize(
    ("code", "raw"),
    [
        ("corrupted", None),  # truncated: filled in by the test
        ("corrupted", b"\xff\xfe binary"),
        ("corrupted", b"not json at all"),
        ("corrupted", b""),
        ("not_a_wallet", b"[1, 2, 3]"),
        ("not_a_wallet", b'{"hello": "world"}'),
    ],
)
def test_a_file_that_is_not_a_wallet_is_refused(
    tmp_path: Path, code: str, raw: bytes | None
) -> None:
    path = tmp_path / "wallet.json"
    make(path)
    path.write_bytes(path.read_bytes()[:-40] if raw is None else raw)
    refused(code, WalletFile.open, path, PASSPHRASE)


def test_a_file_damaged_after_open_is_refused_by_read(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path)
    rewrite(path, lambda d: d.update(sealed=flip_hex_digit(d["sealed"], 100)))
    refused("wrong_passphrase", wallet.read)
    path.unlink()
    refused("missing", wallet.read)


# --------------------------------------------------------------------------- edit


def test_edit_saves_when_the_block_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 0})
    with wallet.edit() as contents:
        contents.data["n"] = 1
        contents.data["coins"] = ["c1"]
    assert WalletFile.open(path, PASSPHRASE).read() == Contents(SEED, {"n": 1, "coins": ["c1"]})


def test_edit_writes_nothing_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 0})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="refused by the ledger"), wallet.edit() as contents:
        contents.data["n"] = 1
        raise RuntimeError("refused by the ledger")
    assert path.read_bytes() == before
    assert wallet.read().data == {"n": 0}
    with wallet.edit(wait_s=0) as contents:  # and the lock was released
        contents.data["n"] = 2
    assert wallet.read().data == {"n": 2}


def test_every_save_has_a_fresh_nonce_and_keeps_the_salt(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 0})
    documents = []
    for _ in range(2):
        with wallet.edit():
            pass  # the same contents, saved again
        documents.append(json.loads(path.read_bytes()))
    first, second = documents
    assert first["kdf"] == second["kdf"]
    nonce_hex = 2 * 24
    assert first["sealed"][:nonce_hex] != second["sealed"][:nonce_hex]
    assert first["sealed"] != second["sealed"]


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from wallet.keystore import WalletFile
wallet = WalletFile.open(Path(sys.argv[1]), sys.argv[2].encode())
with wallet.edit() as contents:
    contents.data["holder"] = True
    print("held", flush=True)
    time.sleep(60)
"""


def test_edit_waits_for_another_process_then_refuses_locked(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 0})
    holder = spawn(HOLD_THE_LOCK, str(path), PASSPHRASE.decode())
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        error = refused("locked", lambda: wallet.edit(wait_s=0.5).__enter__())
        waited = time.monotonic() - started
        assert 0.5 <= waited < 3
        assert error.message == (
            f"another petra wallet command or the autopilot is using {path}; wait for it or stop it"
        )
        assert wallet.read().data == {"n": 0}  # reading needs no lock
    finally:
        holder.kill()
        holder.wait()
    with wallet.edit(wait_s=5) as contents:  # a killed holder's lock is gone with it
        contents.data["n"] = 1
    assert wallet.read().data == {"n": 1}


# --------------------------------------------------------------------------- interrupted writes


def test_a_save_that_fails_before_replace_keeps_the_old_wallet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 0})

    def power_cut(*_: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"), wallet.edit() as contents:
        contents.data["n"] = 1
    monkeypatch.undo()
    assert WalletFile.open(path, PASSPHRASE).read().data == {"n": 0}
    assert temporaries(tmp_path) == []


def test_a_save_that_fails_while_writing_keeps_the_old_wallet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 0})

    def disk_full(_: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="no space"), wallet.edit() as contents:
        contents.data["n"] = 1
    monkeypatch.undo()
    assert WalletFile.open(path, PASSPHRASE).read().data == {"n": 0}
    assert temporaries(tmp_path) == []


EDIT_FOREVER = """
import sys
from pathlib import Path
from wallet.keystore import WalletFile
wallet = WalletFile.open(Path(sys.argv[1]), sys.argv[2].encode())
print("open", flush=True)
while True:
    with wallet.edit() as contents:
        n = contents.data["n"] + 1
        contents.data = {"n": n, "padding": str(n) * 20000}
"""


def complete(data: dict[str, Any]) -> bool:
    """True iff `data` is one whole state written by EDIT_FOREVER (or the initial one)."""
    return bool(data["padding"] == (str(data["n"]) * 20000 if data["n"] else ""))


def test_a_wallet_killed_mid_save_still_opens_with_a_complete_state(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    reader = make(path, {"n": 0, "padding": ""})
    chance = random.Random(20240611)
    last = 0
    for _ in range(8):
        editor = spawn(EDIT_FOREVER, str(path), PASSPHRASE.decode())
        assert editor.stdout is not None and editor.stdout.readline() == "open\n"
        kill_at = time.monotonic() + chance.uniform(0.05, 0.4)
        while time.monotonic() < kill_at:  # meanwhile a reader only ever sees whole states
            assert complete(reader.read().data)
        editor.send_signal(signal.SIGKILL)
        editor.wait()
        data = WalletFile.open(path, PASSPHRASE).read().data
        assert complete(data)
        assert data["n"] >= last
        last = data["n"]
    assert last > 8  # the editor did save, many times, between kills


# --------------------------------------------------------------------------- backup and restore


def test_a_backup_under_a_new_passphrase_opens_with_it(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json", {"n": 3})
    backup = tmp_path / "backups" / "wallet.bak"
    wallet.backup(backup, b"backup passphrase")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert WalletFile.open(backup, b"backup passphrase").read() == Contents(SEED, {"n": 3})
    refused("wrong_passphrase", WalletFile.open, backup, PASSPHRASE)
    backup_salt = json.loads(backup.read_bytes())["kdf"]["salt"]
    assert backup_salt != json.loads(wallet.path.read_bytes())["kdf"]["salt"]


def test_a_backup_by_default_opens_with_the_same_passphrase(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json", {"n": 3})
    wallet.backup(tmp_path / "wallet.bak")
    assert WalletFile.open(tmp_path / "wallet.bak", PASSPHRASE).read() == wallet.read()


def test_a_backup_never_overwrites(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json")
    (tmp_path / "wallet.bak").write_text("older backup")
    refused("exists", wallet.backup, tmp_path / "wallet.bak")
    assert (tmp_path / "wallet.bak").read_text() == "older backup"


def test_restore_checks_the_backup_before_touching_the_wallet(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json", {"n": 1})
    wallet.backup(tmp_path / "wallet.bak", b"backup passphrase")
    with wallet.edit() as contents:
        contents.data["n"] = 2
    before = wallet.path.read_bytes()
    refused(
        "wrong_passphrase",
        lambda: WalletFile.restore(tmp_path / "wallet.bak", wallet.path, PASSPHRASE, force=True),
    )
    rewrite(tmp_path / "wallet.bak", lambda d: d.update(sealed="zz"))
    refused(
        "corrupted",
        lambda: WalletFile.restore(
            tmp_path / "wallet.bak", wallet.path, b"backup passphrase", force=True
        ),
    )
    assert wallet.path.read_bytes() == before


def test_restore_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json", {"n": 1})
    wallet.backup(tmp_path / "wallet.bak")
    with wallet.edit() as contents:
        contents.data["n"] = 2
    refused("exists", WalletFile.restore, tmp_path / "wallet.bak", wallet.path, PASSPHRASE)
    assert wallet.read().data == {"n": 2}
    restored = WalletFile.restore(tmp_path / "wallet.bak", wallet.path, PASSPHRASE, force=True)
    assert restored.read().data == {"n": 1}
    assert WalletFile.open(wallet.path, PASSPHRASE).read().data == {"n": 1}
    assert stat.S_IMODE(wallet.path.stat().st_mode) == 0o600
    assert temporaries(tmp_path) == []


def test_restore_installs_a_wallet_where_there_was_none(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json", {"n": 1})
    wallet.backup(tmp_path / "wallet.bak", b"backup passphrase")
    for target, force in ((tmp_path / "new" / "wallet.json", False), (tmp_path / "x" / "w", True)):
        restored = WalletFile.restore(
            tmp_path / "wallet.bak", target, b"backup passphrase", force=force
        )
        assert restored.path == target
        assert WalletFile.open(target, b"backup passphrase").read() == Contents(SEED, {"n": 1})


def test_the_seed_never_shows_in_a_repr() -> None:
    assert SEED.hex() not in repr(Contents(SEED, {})) and str(SEED) not in repr(Contents(SEED, {}))


# --------------------------------------------------------------------------- passphrase


def test_change_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path, {"n": 5})
    old_salt = json.loads(path.read_bytes())["kdf"]["salt"]
    wallet.change_passphrase(b"new passphrase")
    refused("wrong_passphrase", WalletFile.open, path, PASSPHRASE)
    assert WalletFile.open(path, b"new passphrase").read() == Contents(SEED, {"n": 5})
    assert json.loads(path.read_bytes())["kdf"]["salt"] != old_salt
    assert wallet.read().data == {"n": 5}  # the open wallet follows its new key
    with wallet.edit() as contents:
        contents.data["n"] = 6
    assert WalletFile.open(path, b"new passphrase").read().data == {"n": 6}


def test_change_passphrase_can_change_the_kdf_level(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    wallet = make(path)
    wallet.change_passphrase(b"new passphrase", KdfLevel.MODERATE)
    kdf = json.loads(path.read_bytes())["kdf"]
    assert (kdf["ops"], kdf["mem"]) == (KdfLevel.MODERATE.ops, KdfLevel.MODERATE.mem)
    assert WalletFile.open(path, b"new passphrase").read().seed == SEED


def test_another_process_changing_the_passphrase_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    stale = make(path)
    WalletFile.open(path, PASSPHRASE).change_passphrase(b"new passphrase")
    error = refused("wrong_passphrase", stale.read)
    assert "open it again" in error.message


# --------------------------------------------------------------------------- any data


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), inner, max_size=4)
    ),
    max_leaves=20,
)


def test_any_json_data_round_trips_exactly(tmp_path: Path) -> None:
    wallet = make(tmp_path / "wallet.json")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(st.text(), JSON_VALUES, max_size=5))
    def round_trip(data: dict[str, Any]) -> None:
        with wallet.edit() as contents:
            contents.data = data
        read = wallet.read().data
        assert read == data
        assert json.dumps(read, sort_keys=True) == json.dumps(data, sort_keys=True)  # True != 1

    round_trip()
    assert WalletFile.open(wallet.path, PASSPHRASE).read().seed == SEED
