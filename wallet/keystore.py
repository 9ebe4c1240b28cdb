"""The wallet's encrypted keystore: one file holding the master seed and the wallet's state.

The file is JSON `{"format", "kdf": {"name", "salt", "ops", "mem"}, "sealed"}` where `sealed`
is the hex of a SecretBox (XSalsa20-Poly1305, random nonce) over the canonical JSON
`{"v": 1, "seed": hex, "data": {...}}`, keyed by Argon2id over the passphrase, as
`assets/keyfile.py` seals key files. Every write goes to a temporary file that replaces the
wallet atomically, so an interrupted write leaves the previous wallet whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from assets.canonical import canonical_json, parse_json
from assets.rejections import Rejected
from assets.signing import Keypair

FORMAT = "petra-wallet-v1"
SEED_SIZE = 32
KEY_PERSONALISATION = b"petra-wallet-k1"
_KDF = nacl.pwhash.argon2id
# Limits outside the levels this module writes are refused, so a hostile file cannot make
# opening it allocate terabytes or run for hours.
_OPS_BOUNDS = (_KDF.OPSLIMIT_INTERACTIVE, _KDF.OPSLIMIT_SENSITIVE)
_MEM_BOUNDS = (_KDF.MEMLIMIT_INTERACTIVE, _KDF.MEMLIMIT_SENSITIVE)
_LOCK_POLL_S = 0.05

KeystoreCode = Literal[
    "wrong_passphrase", "corrupted", "not_a_wallet", "exists", "missing", "locked"
]


class KdfLevel(StrEnum):
    """How hard Argon2id works to turn a passphrase into the wallet's key (libsodium's levels)."""

    INTERACTIVE = "interactive"
    MODERATE = "moderate"
    SENSITIVE = "sensitive"

    @property
    def ops(self) -> int:
        """Argon2id passes over memory."""
        return int(getattr(_KDF, f"OPSLIMIT_{self.name}"))

    @property
    def mem(self) -> int:
        """Argon2id memory, in bytes."""
        return int(getattr(_KDF, f"MEMLIMIT_{self.name}"))


class KeystoreError(Exception):
    """The keystore refused: `code` says why, `message` says what to do, in one sentence."""

    def __init__(self, code: KeystoreCode, message: str) -> None:
        super().__init__(message)
        self.code: KeystoreCode = code
        self.message = message


@dataclass
class Contents:
    """What the wallet file seals: the master seed and the wallet's state, which it never reads."""

    seed: bytes = field(repr=False)
    data: dict[str, Any]

    def key(self, index: int) -> Keypair:
        """The wallet's key number `index` (0 to 2**64 - 1), derived from the seed alone."""
        if not 0 <= index < 2**64:
            raise ValueError(f"key index {index} is outside 0 .. 2**64 - 1")
        derived = hashlib.blake2b(
            index.to_bytes(8, "big"),
            key=self.seed,
            person=KEY_PERSONALISATION,
            digest_size=SEED_SIZE,
        ).digest()
        return Keypair(derived)


@dataclass(frozen=True)
class _Kdf:
    """The Argon2id parameters of one wallet file; `ops` passes, `mem` bytes."""

    salt: bytes
    ops: int
    mem: int

    @classmethod
    def fresh(cls, ops: int, mem: int) -> _Kdf:
        return cls(nacl.utils.random(_KDF.SALTBYTES), ops, mem)

    def derive(self, passphrase: bytes) -> bytes:
        """The 32-byte SecretBox key for `passphrase`: the one slow step of opening a wallet."""
        return _KDF.kdf(
            nacl.secret.SecretBox.KEY_SIZE,
            passphrase,
            self.salt,
            opslimit=self.ops,
            memlimit=self.mem,
        )


class WalletFile:
    """An open wallet file: its path and the key its passphrase derived, kept in memory."""

    def __init__(self, path: Path, kdf: _Kdf, key: bytes) -> None:
        self.path = path
        self._kdf = kdf
        self._key = key

    @classmethod
    def create(
        cls,
        path: Path,
        passphrase: bytes,
        *,
        kdf: KdfLevel = KdfLevel.MODERATE,
        seed: bytes | None = None,
        data: dict[str, Any] | None = None,
    ) -> WalletFile:
        """A new wallet at `path` (never over an existing file); a random seed unless given.

        `data` must be JSON of integers, never floats (canonical JSON). Missing parent
        directories are created, readable by the owner only.
        """
        params = _Kdf.fresh(kdf.ops, kdf.mem)
        wallet = cls(path, params, params.derive(passphrase))
        contents = Contents(nacl.utils.random(SEED_SIZE) if seed is None else seed, data or {})
        _install_new(path, wallet._seal(contents))
        return wallet

    @classmethod
    def open(cls, path: Path, passphrase: bytes) -> WalletFile:
        """The wallet at `path`, unlocked with `passphrase` (Argon2id runs here, once)."""
        params, sealed = _parse(path, _read(path))
        wallet = cls(path, params, params.derive(passphrase))
        wallet._unseal(sealed)
        return wallet

    @classmethod
    def open_with_key(cls, path: Path, key: bytes) -> WalletFile:
        """The wallet at `path`, unlocked with the `sealing_key` an earlier opening derived
        (no Argon2id); KeystoreError `wrong_passphrase` if the file was sealed anew since."""
        params, sealed = _parse(path, _read(path))
        if len(key) != nacl.secret.SecretBox.KEY_SIZE:
            raise KeystoreError("wrong_passphrase", "that key does not open the wallet")
        wallet = cls(path, params, key)
        wallet._unseal(sealed)
        return wallet

    @property
    def sealing_key(self) -> bytes:
        """The 32-byte key Argon2id derived from the passphrase for this file's salt: what
        opens the file again without the passphrase (`open_with_key`); never to be stored."""
        return self._key

    def read(self) -> Contents:
        """The wallet's current contents, decrypted with the key derived at open."""
        params, sealed = _parse(self.path, _read(self.path))
        if params != self._kdf:
            raise KeystoreError(
                "wrong_passphrase",
                f"{self.path} was sealed anew (a new passphrase, or a restored backup) "
                "since it was opened: open it again",
            )
        return self._unseal(sealed)

    @contextlib.contextmanager
    def edit(self, wait_s: float = 10.0) -> Iterator[Contents]:
        """Fresh contents to change in place, saved when the block ends without an exception.

        Holds the wallet's lock for the whole block, waiting up to `wait_s` seconds for it.
        """
        with self._locked(wait_s):
            contents = self.read()
            yield contents
            _replace(self.path, self._seal(contents))

    def backup(self, to: Path, passphrase: bytes | None = None) -> None:
        """A copy of the wallet at `to` (never over an existing file), sealed under `passphrase`.

        With no passphrase the copy opens with the wallet's own passphrase.
        """
        contents = self.read()
        if passphrase is None:
            copy = self
        else:
            params = _Kdf.fresh(self._kdf.ops, self._kdf.mem)
            copy = WalletFile(to, params, params.derive(passphrase))
        _install_new(to, copy._seal(contents))

    @classmethod
    def restore(
        cls, source: Path, path: Path, passphrase: bytes, *, force: bool = False
    ) -> WalletFile:
        """The backup `source` installed at `path`, once it has opened with `passphrase`.

        An existing wallet at `path` is replaced only with `force`, and under its lock.
        """
        raw = _read(source)
        params, sealed = _parse(source, raw)
        key = params.derive(passphrase)
        cls(source, params, key)._unseal(sealed)  # so that a refusal names the backup
        restored = cls(path, params, key)
        if not force:
            _install_new(path, raw)
            return restored
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with restored._locked(wait_s=10.0):
            _replace(path, raw)
        return restored

    def change_passphrase(self, new: bytes, kdf: KdfLevel | None = None) -> None:
        """Re-seal the wallet under `new` with a fresh salt (and `kdf`, if given)."""
        ops, mem = (self._kdf.ops, self._kdf.mem) if kdf is None else (kdf.ops, kdf.mem)
        params = _Kdf.fresh(ops, mem)
        resealed = WalletFile(self.path, params, params.derive(new))
        with self._locked(wait_s=10.0):
            _replace(self.path, resealed._seal(self.read()))
            self._kdf, self._key = resealed._kdf, resealed._key

    def _seal(self, contents: Contents) -> bytes:
        if len(contents.seed) != SEED_SIZE:
            raise ValueError(f"a wallet seed is {SEED_SIZE} bytes, not {len(contents.seed)}")
        plain = canonical_json({"v": 1, "seed": contents.seed.hex(), "data": contents.data})
        document = {
            "format": FORMAT,
            "kdf": {
                "name": "argon2id",
                "salt": self._kdf.salt.hex(),
                "ops": self._kdf.ops,
                "mem": self._kdf.mem,
            },
            "sealed": bytes(nacl.secret.SecretBox(self._key).encrypt(plain)).hex(),
        }
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"

    def _unseal(self, sealed: bytes) -> Contents:
        try:
            plain = nacl.secret.SecretBox(self._key).decrypt(sealed)
        except nacl.exceptions.CryptoError:
            raise KeystoreError(
                "wrong_passphrase",
                "wrong passphrase, or the wallet file is damaged: try again, or restore a backup",
            ) from None
        try:
            body = parse_json(plain)
        except Rejected:
            raise _corrupted(self.path, "its sealed contents are not JSON") from None
        if not isinstance(body, dict) or body.get("v") != 1:
            raise _corrupted(self.path, "its sealed contents are not version 1")
        seed = _hex(self.path, body.get("seed"), "seed")
        if len(seed) != SEED_SIZE:
            raise _corrupted(self.path, f"its seed is not {SEED_SIZE} bytes")
        if not isinstance(body.get("data"), dict):
            raise _corrupted(self.path, "its data is not a JSON object")
        return Contents(seed, body["data"])

    @contextlib.contextmanager
    def _locked(self, wait_s: float) -> Iterator[None]:
        """The wallet's exclusive lock: an flock on `<path>.lock`, released however we leave."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise KeystoreError(
                            "locked",
                            f"another petra wallet command or the autopilot is using "
                            f"{self.path}; wait for it or stop it",
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the flock


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(
            "missing",
            f"there is no wallet at {path}: check the path (--wallet, $PETRA_WALLET), or create "
            "one with `petra wallet init`",
        ) from None


def _parse(path: Path, raw: bytes) -> tuple[_Kdf, bytes]:
    """The KDF parameters and the sealed bytes of a wallet file; checks the shape, not the seal."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _corrupted(path, "it is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeystoreError("not_a_wallet", f"{path} is not a PETra wallet file: check the path")
    kdf = document.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise _corrupted(path, "its key derivation is not argon2id")
    salt = _hex(path, kdf.get("salt"), "salt")
    if len(salt) != _KDF.SALTBYTES:
        raise _corrupted(path, f"its salt is not {_KDF.SALTBYTES} bytes")
    ops, mem = kdf.get("ops"), kdf.get("mem")
    if type(ops) is not int or not _OPS_BOUNDS[0] <= ops <= _OPS_BOUNDS[1]:
        raise _corrupted(path, f"its argon2id ops limit is outside {_OPS_BOUNDS}")
    if type(mem) is not int or not _MEM_BOUNDS[0] <= mem <= _MEM_BOUNDS[1]:
        raise _corrupted(path, f"its argon2id memory limit is outside {_MEM_BOUNDS} bytes")
    sealed = _hex(path, document.get("sealed"), "sealed")
    if len(sealed) < nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES:
        raise _corrupted(path, "its sealed contents are too short")
    return _Kdf(salt, ops, mem), sealed


def _hex(path: Path, value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise _corrupted(path, f"its {field} is missing")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _corrupted(path, f"its {field} is not hex") from None


def _corrupted(path: Path, reason: str) -> KeystoreError:
    return KeystoreError("corrupted", f"{path} is damaged ({reason}): restore a backup")


def _install_new(path: Path, raw: bytes) -> None:
    """Write `raw` at `path` atomically, refusing ("exists") if `path` already exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _temporary(path, raw) as temporary:
        try:
            os.link(temporary, path)  # unlike os.replace, never clobbers: atomic create
        except FileExistsError:
            raise KeystoreError(
                "exists", f"{path} already exists: choose another path, or move it away first"
            ) from None
    _sync_directory(path.parent)


def _replace(path: Path, raw: bytes) -> None:
    """Write `raw` over `path` atomically: readers see the old file or the new, never a mix."""
    with _temporary(path, raw) as temporary:
        os.replace(temporary, path)
    _sync_directory(path.parent)


@contextlib.contextmanager
def _temporary(path: Path, raw: bytes) -> Iterator[Path]:
    """`raw` durably written to a mode-0600 temporary file beside `path`, removed afterwards."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(raw)
            stream.flush()
            os.fsync(stream.fileno())
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
