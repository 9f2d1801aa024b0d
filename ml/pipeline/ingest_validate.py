"""Steps of the ingest_validate DAG: find dropped batches, gate each one, version what passes.

1. `list_new_batches`: files waiting in `<state>/drop/<workflow>/` (eval/ holds gold data for
   the frozen evaluation set).
2. `ingest_batch`: read + curate (the workflow's task: ml/tasks/), run the Great Expectations
   gate; a failing batch is moved to quarantine with its report and `BatchRejected` names every
   failed expectation; a passing batch joins the DVC-versioned dataset and its raw file is
   archived, unchanged. Rows curation refused (an extraction teacher's bad answers) are kept
   beside the data with their reasons, never trained on.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from functools import partial
from pathlib import Path

from ml.config import Settings, load_settings
from ml.data import contract
from ml.data.contract import ContractError
from ml.data.ingest import SUPPORTED_SUFFIXES, IngestError, PiiMasker, read_batch, safe_drop_path
from ml.data.versioning import DatasetError, DatasetStore
from ml.tasks import task_module
from ml.validation.quarantine import quarantine, set_aside
from ml.workflows import Workflow, get_workflow


class BatchRejected(RuntimeError):
    """The batch failed the gate and is in quarantine; retrying will not change that."""


def context(workflow: str, settings: Settings | None = None) -> tuple[Settings, Workflow]:
    settings = settings or load_settings()
    settings.ensure_dirs()
    return settings, get_workflow(settings.workflows_file, workflow)


def store_for(settings: Settings, wf: Workflow) -> DatasetStore:
    return DatasetStore(settings.data_dir / wf.name, f"{settings.dvc_remote_url.rstrip('/')}/{wf.name}")


def drop_dir_for(settings: Settings, wf: Workflow) -> Path:
    path = settings.drop_dir / wf.name
    (path / "eval").mkdir(parents=True, exist_ok=True)
    return path


def batch_reader(wf: Workflow):
    """read_batch's `curate` for the workflow's task: None (classification's own), or the task's."""
    return None if wf.task == "classification" else partial(task_module(wf.task).curate_batch, wf)


def label_set(settings: Settings, wf: Workflow, fallback: list[str] | None = None) -> list[str]:
    """Declared labels, else those of the frozen evaluation set, else of the batch at hand; an
    extraction workflow's fields."""
    if wf.task != "classification":
        return list(wf.fields)
    if wf.labels:
        return sorted(wf.labels)
    store = store_for(settings, wf)
    if store.current("eval") is not None:
        return sorted(set(store.load("eval")[contract.LABEL]))
    if store.current("train") is not None:
        return sorted(set(store.load("train")[contract.LABEL]))
    return sorted(set(fallback or []))


def list_new_batches(workflow: str, echo=print) -> list[str]:
    """The batches to ingest. Entries that are not regular files (links, FIFOs) are set aside in
    quarantine, and hidden names (.partial uploads) are reported, so neither blocks the others."""
    settings, wf = context(workflow)
    root = drop_dir_for(settings, wf)
    names = []
    for p in sorted(root.rglob("*")):  # rglob does not descend into linked folders
        name = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            continue
        if p.is_symlink() or not p.is_file():
            what = f"a link to {os.readlink(p)}" if p.is_symlink() else "not a regular file"
            reason = (
                f"{name}: {what}; ingestion reads only plain files inside the drop folder. "
                "Copy the data in as a file (`mlops data import PATH`)."
            )
            qid = set_aside(p, settings.quarantine_dir / wf.name, reason=reason)
            echo(f"set aside {name} as quarantine {qid}: {reason}")
            continue
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            age_h = (time.time() - p.stat().st_mtime) / 3600
            echo(
                f"skipped {name} ({age_h:.1f} h old): a hidden name, which upload tools use while a file is "
                "still being written; rename it without the leading '.' to ingest it, or delete it."
            )
            continue
        if p.suffix.lower() not in SUPPORTED_SUFFIXES:
            echo(
                f"skipped {name}: not one of {', '.join(SUPPORTED_SUFFIXES)}; convert it or move it out of "
                f"the drop folder {root}."
            )
            continue
        names.append(name)
    # Evaluation data first: it fixes the label set and the reference the training batches meet.
    return sorted(names, key=lambda n: (not n.startswith("eval/"), n))


def _reject(settings: Settings, wf: Workflow, path: Path, report: dict, reason: str) -> None:
    qid = quarantine(path, report, settings.quarantine_dir / wf.name, reason=reason)
    raise BatchRejected(
        f"{path.name} rejected and quarantined as {qid} "
        f"(inspect: mlops data quarantine show {qid} --workflow {wf.name}).\n{reason}"
    )


def ingest_batch(workflow: str, name: str) -> dict:
    settings, wf = context(workflow)
    root = drop_dir_for(settings, wf)
    role = "eval" if name.startswith("eval/") else "train"
    try:
        path = safe_drop_path(root, name)
    except IngestError as exc:
        entry = root / name
        if entry.is_symlink() or (entry.exists() and not entry.is_file()):  # swapped in after listing
            qid = set_aside(entry, settings.quarantine_dir / wf.name, reason=str(exc))
            raise BatchRejected(f"{name} set aside as quarantine {qid}: {exc}") from None
        raise
    task = task_module(wf.task)
    try:
        batch = read_batch(
            path,
            text_col=wf.text_column,
            label_col=wf.label_column,
            masker=PiiMasker.for_workflow(wf),
            curate=batch_reader(wf),
        )
    except (IngestError, ContractError) as exc:
        _reject(settings, wf, path, {"batch_id": path.name, "success": False, "error": str(exc)}, str(exc))
    store = store_for(settings, wf)
    seen = store.accepted_batch(batch.sha256)
    if seen is not None:  # the same bytes again: accepted once, the duplicate is archived
        _archive(settings, wf, path, batch.sha256)
        return {"batch": name, "already_accepted": True, "version": seen["version"], "role": seen["role"]}
    if wf.task == "classification":
        labels = label_set(settings, wf, fallback=list(batch.frame[contract.LABEL].dropna()))
        reference = None
        if role == "train" and store.current("train") is not None:
            reference = Counter(store.load("train")[contract.LABEL])
        # reference: the drift test's baseline, and what the per-class minimum counts besides the batch.
        gate = {"labels": labels, "reference_label_counts": reference, "existing_label_counts": reference}
    else:  # curation's refusals are counted in the report; a refused answer never fails the batch
        gate = {"refusals": batch.stats.get("refusals")}
    report = task.validate_batch(
        batch.received if batch.received is not None else batch.frame,
        wf,
        **gate,
        batch_id=f"{wf.name}/{path.name}",
        docs_dir=settings.reports_dir / wf.name / "data_docs" / f"{path.stem}-{batch.sha256[:8]}",
    )
    print(report.summary())
    if not report.success:
        _reject(settings, wf, path, report.to_dict(), report.summary())
    try:
        record = store.accept(batch, role=role)
    except DatasetError as exc:
        _reject(settings, wf, path, {**report.to_dict(), "error": str(exc)}, str(exc))
    _archive(settings, wf, path, batch.sha256)
    return {
        "batch": name,
        "role": role,
        "version": record["version"],
        "rows": record["rows"],
        "batch_rows": record["batch_rows"],
        "stats": batch.stats,
        **({"refused": record["refused_rows"]} if "refused_rows" in record else {}),
        "data_docs": str(report.docs_index) if report.docs_index else None,
    }


def _archive(settings: Settings, wf: Workflow, path: Path, sha256: str) -> None:
    # Raw data is immutable: the accepted file is kept byte for byte, named by its digest.
    archive = settings.data_dir / wf.name / "raw"
    archive.mkdir(parents=True, exist_ok=True)
    os.replace(path, archive / f"{sha256[:16]}_{path.name}")


def publish_if_changed(workflow: str, run_key: str | None = None) -> dict | None:
    """The dataset event's extra when the training set changed since the last event, else None.

    The marker names the run that published: a retry of that same run publishes again, because
    Airflow records the event only when the task succeeds, and a try that died after writing the
    marker would otherwise lose the event for good.
    """
    settings, wf = context(workflow)
    store = store_for(settings, wf)
    current = store.current("train")
    marker = store.root / "published.json"
    last = json.loads(marker.read_text()) if marker.exists() else {}
    if current is None:
        return None
    if current["version"] == last.get("version") and (run_key is None or last.get("run_key") != run_key):
        return None
    event = {"workflow": wf.name, "version": current["version"], "rows": current["rows"]}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({**event, "run_key": run_key}))
    os.replace(tmp, marker)
    return event


def dataset_summary(workflow: str) -> dict:
    settings, wf = context(workflow)
    store = store_for(settings, wf)
    train, ev = store.current("train"), store.current("eval")
    return {
        "workflow": wf.name,
        "train_version": train and train["version"],
        "train_rows": train and train["rows"],
        "eval_version": ev and ev["version"],
        "eval_rows": ev and ev["rows"],
    }
