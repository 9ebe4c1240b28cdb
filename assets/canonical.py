"""Canonical JSON (DESIGN.md section 4): the one encoding that is hashed and signed.

UTF-8, object keys sorted, separators `,` and `:`, no insignificant space, integers only.
Decoding is strict: input is accepted only if re-encoding it gives back the very same bytes,
so one transaction has one encoding and one id.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from assets.rejections import Code, Rejected

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def _no_float(text: str) -> Any:
    raise ValueError(f"{text} is not a whole number: amounts, powers and times are integers")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_decoder = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant)

# Deeper than any PETra message needs (a transaction is four levels deep), shallow enough that
# no encoder, walk or validator of a parsed value comes near Python's recursion limit.
MAX_DEPTH = 16
# A `\u` escape of a surrogate (D800-DFFF): only these can make a string that is not Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def canonical_json(value: Any) -> bytes:
    """Encode `value` (dicts, lists, str, int, bool, None) as canonical JSON bytes."""
    if _contains_float(value):
        raise ValueError("canonical JSON carries integers only, never floats")
    return _encoder.encode(value).encode("utf-8")


def _contains_float(value: Any) -> bool:
    """Whether a float (a subclass too, such as numpy's) is anywhere in `value`; a loop over a
    stack rather than recursion, since every transaction's encoding walks it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON that may not be canonical. Refused as `malformed`: anything but UTF-8 JSON,
    floats and NaN, a lone surrogate escape (a string that is not Unicode text), and nesting
    deeper than `max_depth` arrays and objects. Whatever an outsider sends, this returns a
    value every encoder and walk can handle, or raises `Rejected`."""
    try:
        value = _decoder.decode(raw.decode("utf-8"))
    except RecursionError:
        raise Rejected(Code.MALFORMED, f"JSON nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(Code.MALFORMED, f"not valid JSON: {exc}") from None
    # Counting brackets (at C speed) bounds the depth: only a body with many is walked.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        _check_depth(value, max_depth)
    if _SURROGATE_ESCAPE.search(raw):
        _check_unicode(value)
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    """Rejected unless `value` nests at most `max_depth` arrays and objects (no recursion)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise Rejected(Code.MALFORMED, f"JSON nested deeper than {max_depth} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _check_unicode(value: Any) -> None:
    """Rejected if a string or key of `value` holds a lone surrogate (not UTF-8 encodable)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts = [item]
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            texts = []
            stack.extend(item)
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise Rejected(
                    Code.MALFORMED, "a string holds a lone surrogate escape: it is not text"
                ) from None


def encode_parsed(value: Any) -> bytes:
    """Canonical bytes of a value that `parse_json` produced (so it holds no floats).

    orjson writes the same bytes as the canonical encoder for every value it accepts (sorted
    by code point, the same escapes; tests/test_canonical_orjson.py), several times faster;
    what it refuses (an integer beyond 64 bits, a lone surrogate) the canonical encoder
    writes or refuses as before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _encoder.encode(value).encode("utf-8")
