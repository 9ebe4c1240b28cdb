"""`petra ledger demo`: the story it tells, and that it fails loudly when the ledger disagrees."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from rich.console import Console

from simulation import demo
from simulation.demo import DemoFailed, run_demo

REPO = Path(__file__).resolve().parents[1]


def told(width: int = 100) -> str:
    """The demo's output on a console that is not a terminal, as in a CI log."""
    out = io.StringIO()
    run_demo(Console(file=out, width=width))
    return out.getvalue()


def test_demo_tells_every_step_with_the_ledgers_verdicts() -> None:
    text = told()
    for step in range(1, 9):
        assert f"{step}. " in text
    assert "accepted  regulate" in text
    assert text.count("accepted  issue") == 2
    assert "accepted  transfer" in text and "the trade" in text
    assert text.count("accepted  transfer") == 3  # the trade and the two deposits
    assert "code:    double_spend" in text
    assert "is already spent" in text
    assert "code:    limit_exceeded" in text
    assert "Its signature is verified" in text
    assert "inclusion proof is verified" in text
    assert "consistency proof is verified" in text
    assert "500,000 micro-units (0.50 EUR)" in text
    assert "0.25 EUR/kWh" in text
    assert "\x1b[" not in text  # not a terminal: plain text, no colour codes


def test_demo_reads_in_eighty_columns() -> None:
    text = told(width=80)
    # Only the ledger's messages, kept whole so their ids can be searched for, run longer.
    long = [line for line in text.splitlines() if len(line.rstrip()) > 80]
    assert all(line.startswith("  message: ") for line in long), long


def test_demo_removes_its_temporary_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    told()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("constant", "value", "complaint"),
    [
        # Ana's own EPA would no longer be strictly below her MAXEPA: step 3 is rejected.
        ("SELLER_MAX_EPA_W", demo.TRADE_POWER_W, "expected it to be accepted"),
        # One more watt stays below MAXEPA: step 7 is accepted.
        ("EXTRA_EPA_W", 1, "expected the ledger to reject it with limit_exceeded"),
    ],
)
def test_demo_fails_loudly_when_an_outcome_is_not_the_expected_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, constant: str, value: int, complaint: str
) -> None:
    monkeypatch.setattr(demo, constant, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(DemoFailed, match=complaint):
        told()
    assert list(tmp_path.iterdir()) == []


def test_petra_ledger_demo_command_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from petra.cli import app; app()", "ledger", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "code:    double_spend" in done.stdout
    assert "consistency proof is verified" in done.stdout
