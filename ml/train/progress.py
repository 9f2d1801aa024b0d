"""Training progress a person can watch: one small JSON file, replaced atomically.

`mlops run` sets MLOPS_PROGRESS_FILE for the Airflow process it starts and reads the file while
the run goes on; anything else that wants to follow a training (a notebook, a dashboard) can
read it the same way. Without the variable, report() does nothing. The file is a snapshot,
never a log: the full record is in the task log and in MLflow.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

PROGRESS_FILE_VAR = "MLOPS_PROGRESS_FILE"


def report(**fields) -> None:
    """Replace the snapshot, e.g. report(task="train_student", step=40, total_steps=760,
    samples_per_s=51.2, eta_s=410.0, val_macro_f1=0.81, epoch=1)."""
    target = os.environ.get(PROGRESS_FILE_VAR)
    if not target:
        return
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**fields, "updated_at": time.time()}, default=str), encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees half a file
    except OSError:
        pass  # progress is a courtesy: it never fails a training


def read(path: Path) -> dict | None:
    """The latest snapshot, or None when there is none (yet)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
