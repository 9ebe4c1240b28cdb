"""Named Ed25519 keys serialised for storage: sealed with a passphrase, or (for tests) in clear.

Sealed: Argon2id (libsodium's moderate limits) derives a key from the passphrase; XSalsa20-
Poly1305 (SecretBox) encrypts and authenticates. A wrong passphrase or a changed byte is
refused, never half-read. The file names its Argon2id limits, so they are bounded before any
work: from libsodium's interactive to its sensitive level (a tampered file could otherwise ask
for hours of work or all the memory). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import json
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from assets.signing import Keypair

FORMAT = "petra-keys-v1"
_KDF = nacl.pwhash.argon2id
OPS_RANGE = (_KDF.OPSLIMIT_INTERACTIVE, _KDF.OPSLIMIT_SENSITIVE)  # Argon2id passes
MEM_RANGE = (_KDF.MEMLIMIT_INTERACTIVE, _KDF.MEMLIMIT_SENSITIVE)  # bytes (64 MiB to 1 GiB)


class KeyFileError(Exception):
    """The key file cannot be read: wrong passphrase, damaged, or not a key file."""


def dump_keys(keys: dict[str, Keypair], passphrase: bytes | None) -> bytes:
    """Serialise named keys; sealed under `passphrase` unless it is None."""
    body = json.dumps({name: k.seed.hex() for name, k in sorted(keys.items())}).encode()
    document: dict[str, Any] = {
        "format": FORMAT,
        "public": {n: k.public_key.hex() for n, k in keys.items()},
    }
    if passphrase is None:
        document["keys"] = json.loads(body)
    else:
        salt = nacl.utils.random(_KDF.SALTBYTES)
        box = nacl.secret.SecretBox(_derive(passphrase, salt))
        document["kdf"] = {
            "name": "argon2id",
            "salt": salt.hex(),
            "ops": _KDF.OPSLIMIT_MODERATE,
            "mem": _KDF.MEMLIMIT_MODERATE,
        }
        document["sealed"] = bytes(box.encrypt(body)).hex()
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def load_keys(raw: bytes, passphrase: bytes | None) -> dict[str, Keypair]:
    """Named keys from `dump_keys` output; KeyFileError with the reason if it cannot be read."""
    try:
        document = json.loads(raw)
        if document.get("format") != FORMAT:
            raise KeyFileError(f"not a PETra key file (format is not {FORMAT})")
        if "keys" in document:
            seeds = document["keys"]
        else:
            if passphrase is None:
                raise KeyFileError(
                    "the key file is encrypted: give its passphrase in a file "
                    "(--passphrase-file) or in $PETRA_PASSPHRASE"
                )
            ops, mem, salt = _kdf_parameters(document["kdf"])
            key = _derive(passphrase, salt, ops, mem)
            seeds = json.loads(
                nacl.secret.SecretBox(key).decrypt(bytes.fromhex(document["sealed"]))
            )
        keys = {name: Keypair(bytes.fromhex(seed)) for name, seed in seeds.items()}
    except nacl.exceptions.CryptoError:
        raise KeyFileError("wrong passphrase, or the key file was changed") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"the key file is damaged ({exc})") from None
    if any(len(k.seed) != 32 for k in keys.values()):
        raise KeyFileError("the key file is damaged (a seed is not 32 bytes)")
    return keys


def _kdf_parameters(kdf: Any) -> tuple[int, int, bytes]:
    """The Argon2id limits and salt a sealed file names, once they are known to be sane."""
    if not isinstance(kdf, dict) or kdf.get("name", "argon2id") != "argon2id":
        raise KeyFileError("the key file is damaged (its kdf is not argon2id)")
    ops, mem = kdf.get("ops"), kdf.get("mem")
    for value, (low, high), what in ((ops, OPS_RANGE, "ops"), (mem, MEM_RANGE, "mem")):
        if type(value) is not int or not low <= value <= high:
            raise KeyFileError(
                f"the key file asks for Argon2id {what} = {value!r}, outside {low}..{high} "
                "(libsodium's interactive to sensitive limits): it was changed, or not made by "
                "PETra; refused before any work"
            )
    salt = kdf.get("salt")
    if not isinstance(salt, str) or len(salt) != 2 * _KDF.SALTBYTES:
        raise KeyFileError(f"the key file is damaged (its salt is not {_KDF.SALTBYTES} bytes)")
    assert isinstance(ops, int) and isinstance(mem, int)
    return ops, mem, bytes.fromhex(salt)


def _derive(
    passphrase: bytes,
    salt: bytes,
    ops: int = _KDF.OPSLIMIT_MODERATE,
    mem: int = _KDF.MEMLIMIT_MODERATE,
) -> bytes:
    return _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=ops, memlimit=mem)


def is_sealed(raw: bytes) -> bool:
    """True iff `raw` is a key file whose keys are encrypted under a passphrase."""
    try:
        document = json.loads(raw)
    except ValueError:
        return False
    return isinstance(document, dict) and "sealed" in document and "keys" not in document
