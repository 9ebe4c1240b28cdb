"""Canonical JSON (DESIGN.md section 4): the one encoding that is hashed and signed.

UTF-8, object keys sorted, separators `,` and `:`, no insignificant space, integers only.
Decoding is strict: input is accepted only if re-encoding it gives back the very same bytes,
so one transaction has one encoding and one id.
"""

from __future__ import annotations

import json
from typing import Any

from assets.rejections import Code, Rejected

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def _no_float(text: str) -> Any:
    raise ValueError(f"{text} is not a whole number: amounts, powers and times are integers")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_decoder = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant)


def canonical_json(value: Any) -> bytes:
    """Encode `value` (dicts, lists, str, int, bool, None) as canonical JSON bytes."""
    if _contains_float(value):
        raise ValueError("canonical JSON carries integers only, never floats")
    return _encoder.encode(value).encode("utf-8")


def _contains_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_contains_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_float(v) for v in value)
    return False


def parse_json(raw: bytes) -> Any:
    """Parse JSON that may not be canonical; floats and NaN are refused as `malformed`."""
    try:
        return _decoder.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejected(Code.MALFORMED, f"not valid JSON: {exc}") from None


def encode_parsed(value: Any) -> bytes:
    """Canonical bytes of a value that `parse_json` produced (so it holds no floats)."""
    return _encoder.encode(value).encode("utf-8")
