"""Running `petra bench ...` as a user does, for the bench tests: one JSON object on standard
output, its rates positive numbers (never a speed threshold: the figures depend on the
machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
BENCH_TIMEOUT_S = 300


def bench_json(*args: str) -> dict[str, Any]:
    """The one JSON object `petra bench ARGS --json` prints; fails the test otherwise."""
    done = subprocess.run(
        [*PETRA, "bench", *args, "--json"],
        capture_output=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


def assert_positive(result: dict[str, Any], measures: Iterable[str]) -> None:
    """Each of `measures` is a number above 0."""
    for measure in measures:
        value = result[measure]
        assert isinstance(value, int | float) and not isinstance(value, bool), measure
        assert value > 0, measure
