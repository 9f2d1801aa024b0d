"""`mlops` starts light: what a command needs is imported by that command, not by the parser.

Checked by what is imported (in a fresh interpreter), never by how long it takes:
benchmarks/cli_latency.py measures the time.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from ml.cli.common import heavy_imports

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "pandas", "numpy", "mlflow", "sqlalchemy", "airflow", "great_expectations")


def test_the_parser_and_the_models_commands_import_nothing_heavy():
    script = (
        "import json, sys\n"
        "import ml.cli, ml.cli.models\n"
        "ml.cli.build_parser()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_heavy_imports_give_the_collector_back_as_they_found_it():
    assert gc.isenabled()
    with heavy_imports():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heavy_imports():
            pass
        assert not gc.isenabled()  # a caller that had paused it keeps it paused
    finally:
        gc.enable()
