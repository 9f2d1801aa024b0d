"""Re-distillation after an upstream change: is it worth a run, and which labels does it train on.

The distill DAG runs these when the workflow's upstream Asset (dags/watch_upstream.py) fired:

1. `probe_teachers`: when the teacher changed, a cheap probe first. The recorded frontier
   teacher's old and new model_version answered some of the same texts in the accepted call
   logs; on a sample of those, the share of different answers is the disagreement (of field
   values, for a field workflow: ml/upstream.py answer_difference). Where no text was answered
   by both, the new teacher's answers are compared with the training set's labels instead. Below the workflow's `keep_current.min_disagreement` the run stops with
   "skipped: teachers agree". A changed base model always re-distils (the probe cannot tell
   what a new encoder learns), and so does a disagreement that cannot be measured.
2. `relabel_for_current_teacher`: the training set with the newest teacher's answer wherever it
   gave one (older versions' answers to the same texts dropped), so the challenger learns
   the new teacher. The base model needs nothing here: `train` reads `base_model` afresh.

Every outcome is appended to the upstream history (`<state>/upstream/<workflow>.jsonl`, event
"probe"), next to the change that caused it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from ml.config import load_settings
from ml.data import contract
from ml.data.ingest import DEFAULT_MASKER, PiiMasker
from ml.frontier.calllog import recorded_answer
from ml.upstream import (
    UpstreamStore,
    answer_difference,
    call_log_teachers,
    call_version,
    iter_ok_calls,
    masked_answer,
    raw_call_log,
    teacher_fingerprint,
)
from ml.workflows import get_workflow

SKIPPED = "teachers agree"


def probe_teachers(workflow: str, run_key: str, upstream_events: list[dict]) -> dict:
    """Whether this run should re-distil, given the extras of the upstream events that triggered it.

    Returns {"redistill": bool, "reason", "changed", "disagreement", "n_compared", ...}, and
    "skipped": "teachers agree" when it should not. No events (a dataset or cron run): re-distil.
    """
    settings = load_settings()
    wf = get_workflow(settings.workflows_file, workflow)
    store = UpstreamStore(settings.state_dir / "upstream", wf.name)
    events = [e for e in upstream_events or () if e]
    changed = sorted({s for e in events for s in e.get("changed", ())})
    result = {
        "changed": changed,
        "change_keys": [e.get("change_key") for e in events],
        "disagreement": None,
        "n_compared": 0,
        "compared_with": None,
        "min_disagreement": wf.keep_current.min_disagreement,
    }
    if not events:
        return _record(
            store, run_key, {**result, "redistill": True, "reason": "not triggered by an upstream change"}
        )
    if "teacher" in changed:
        # Several queued events make one run: from the oldest event's old teacher to the newest's new one.
        old = next(e["old"]["teacher"] for e in events if "teacher" in e.get("changed", ()))
        new = [e["new"]["teacher"] for e in events if "teacher" in e.get("changed", ())][-1]
        result.update(old_teacher=old.get("value"), new_teacher=new.get("value"))
        if wf.teacher.kind in ("call_log", "openai"):
            result.update(
                call_log_disagreement(
                    settings.data_dir / wf.name,
                    old,
                    new,
                    mask=PiiMasker.for_workflow(wf),
                    sample=wf.keep_current.probe_sample,
                    cache_path=store.cache_path,
                )
            )
    if "base_model" in changed:
        reason = "the base model changed"
        return _record(store, run_key, {**result, "redistill": True, "reason": reason})
    if result["disagreement"] is None:
        reason = (
            "no text answered by both teachers, nor by the new one and the training set: the disagreement "
            "cannot be measured"
            if wf.teacher.kind != "local_model"
            else "a local teacher changed: the probe compares recorded answers only"
        )
        return _record(store, run_key, {**result, "redistill": True, "reason": reason})
    if result["disagreement"] < wf.keep_current.min_disagreement:
        reason = (
            f"the new teacher disagrees on {result['disagreement']:.1%} of {result['n_compared']} texts, below "
            f"keep_current.min_disagreement {wf.keep_current.min_disagreement:.1%}"
        )
        return _record(store, run_key, {**result, "redistill": False, "skipped": SKIPPED, "reason": reason})
    reason = f"the new teacher disagrees on {result['disagreement']:.1%} of {result['n_compared']} texts"
    return _record(store, run_key, {**result, "redistill": True, "reason": reason})


def _record(store: UpstreamStore, run_key: str, result: dict) -> dict:
    store.append({"event": "probe", "run_key": run_key, **result})
    outcome = f"skipped: {SKIPPED}" if result.get("skipped") else "re-distilling"
    print(f"{store.workflow}: {outcome}: {result['reason']}")
    return result


def call_log_disagreement(
    data_root: Path, old: dict, new: dict, *, sample: int, cache_path: Path | None = None, mask=DEFAULT_MASKER
) -> dict:
    """The old and new recorded teachers' disagreement on texts both answered (else vs the training set).

    old / new: the teacher fingerprints of the change ({"model", "version", ...}).
    mask: the workflow's PII rule; the training set holds texts masked as ingestion stored them.
    """
    if not all(fp.get(k) is not None for fp in (old, new) for k in ("model", "version")):
        return {"disagreement": None, "n_compared": 0, "compared_with": None}  # not two recorded teachers
    pairs = call_log_teachers(data_root, cache_path)
    old_answers = answers_of(data_root, pairs, old["model"], old["version"])
    new_answers = answers_of(data_root, pairs, new["model"], new["version"])
    share, n = disagreement(old_answers, new_answers, sample=sample)
    if n:
        return {"disagreement": share, "n_compared": n, "compared_with": "old teacher"}
    share, n = disagreement(
        training_labels(data_root, exclude_version=new["version"]),
        {mask(t): masked_answer(answer, mask) for t, answer in new_answers.items()},
        sample=sample,
    )
    if n:
        return {"disagreement": share, "n_compared": n, "compared_with": "training labels"}
    return {"disagreement": None, "n_compared": 0, "compared_with": None}


def answers_of(data_root: Path, pairs: list[dict], model: str, version: str) -> dict[str, object]:
    """request_text → the answer of one recorded teacher (its label, or its JSON answer of fields;
    the later answer where it gave two)."""
    answers: dict[str, object] = {}
    for sha in dict.fromkeys(
        p["batch_sha256"] for p in pairs if p["model"] == model and p["version"] == version
    ):
        for row in iter_ok_calls(raw_call_log(data_root, {"batch_sha256": sha, "batch": sha[:16]})):
            if str(row.get("model") or "") == model and call_version(row) == version:
                answers[str(row["request_text"])] = recorded_answer(row)
    return answers


def training_labels(data_root: Path, *, exclude_version: str) -> dict[str, object]:
    """text → label (or a field workflow's answer, `values`) in the current training set, leaving
    out one teacher version's rows."""
    import pyarrow.parquet as pq

    path = Path(data_root) / "train.parquet"
    if not path.exists():
        return {}
    answer = contract.LABEL if contract.LABEL in pq.read_schema(path).names else "values"
    train = pd.read_parquet(path, columns=[contract.TEXT, answer, contract.TEACHER_VERSION])
    train = train[train[contract.TEACHER_VERSION].astype(str) != exclude_version]
    # The first row of a text is the label it had before: merging keeps the first (text, label).
    return dict(zip(train[contract.TEXT][::-1], train[answer][::-1]))


def disagreement(old: dict[str, object], new: dict[str, object], *, sample: int) -> tuple[float | None, int]:
    """Share of the answers' parts that differ on the texts in both (of texts, for labels; of
    field values, for answers of fields), on at most `sample` texts, and how many texts.

    The sample is the texts with the smallest sha256: the same data gives the same sample on
    every run and machine, with no seed to carry around.
    """
    common = sorted(set(old) & set(new), key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:sample]
    if not common:
        return None, 0
    differ, compared = (sum(n) for n in zip(*(answer_difference(old[t], new[t]) for t in common)))
    return differ / compared, len(common)


def prefer_teacher_version(train: pd.DataFrame, version: str) -> pd.DataFrame:
    """Where teacher `version` answered a text, other versions' answers to it are dropped; gold rows stay.

    The index is kept: it holds the rows' positions in the stored training set, so that the
    step that trains can select the very rows the targets were computed for.
    """
    teacher = train[contract.SOURCE] == "teacher"
    versions = train[contract.TEACHER_VERSION].astype(str)
    answered = set(train.loc[teacher & (versions == version), contract.TEXT])
    stale = teacher & (versions != version) & train[contract.TEXT].isin(answered)
    return train[~stale]


def relabel_for_current_teacher(workflow: str, train: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The training set as the current recorded teacher would label it, and what changed.

    A local teacher scores every text itself (ml/teachers.py), so its training set stays as it is.
    """
    settings = load_settings()
    wf = get_workflow(settings.workflows_file, workflow)
    info = {"teacher": None, "rows_before": len(train), "rows_after": len(train)}
    if wf.teacher.kind not in ("call_log", "openai"):
        return train, info
    store = UpstreamStore(settings.state_dir / "upstream", wf.name)
    fp = teacher_fingerprint(wf.teacher.kind, wf.teacher.model, settings.data_dir / wf.name, store.cache_path)
    if fp.value is None:
        return train, info
    relabelled = prefer_teacher_version(train, fp.detail["version"])
    return relabelled, {**info, "teacher": fp.value, "rows_after": len(relabelled)}
