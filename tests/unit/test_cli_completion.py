"""Shell completion of `mlops` (argcomplete): the shell's request answered with the parser's own words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def complete(tmp_path: Path, line: str) -> list[str]:
    out = tmp_path / "completions.txt"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_IFS": "\n",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ml.cli"], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sorted(w.strip() for w in out.read_text().split("\n") if w.strip())


@pytest.mark.parametrize(
    "line, expected",
    [
        ("mlops data ch", ["checkout"]),
        ("mlops models ro", ["rollback"]),
        ("mlops data checkout abc --o", ["--out"]),
    ],
)
def test_completion_offers_the_parsers_words(tmp_path, line, expected):
    assert complete(tmp_path, line) == expected


def test_without_the_shells_request_the_command_runs_as_usual(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ml.cli", "data", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "checkout" in proc.stdout
