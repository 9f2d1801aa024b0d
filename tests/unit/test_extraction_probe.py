"""Keeping an extraction workflow current (issue 18): a new teacher version in an accepted call log
of generated contracts is seen by the watcher, the probe compares the two teachers' field answers
(the share of field values that changed), and the training set is re-labelled with the newest
teacher's answers. The call logs go through ingest_validate's real step functions (DVC, raw/,
versions.jsonl), the watcher's and the probe's steps are those the DAGs call.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ml.demo_contracts import FIELDS, generate, read_jsonl
from ml.pipeline import redistill, watch_upstream
from ml.tasks import extraction
from ml.upstream import answer_difference, teacher_fingerprint

WF = "contracts"
WORKFLOWS = f"""
workflows:
  {WF}:
    task: extraction
    fields: [{", ".join(FIELDS)}]
    base_model: {{base}}
    teacher: {{{{kind: call_log, model: frontier-large}}}}
    validation: {{{{min_rows: 10, max_duplicate_ratio: 0.2}}}}
    keep_current: {{{{probe_sample: 500, min_disagreement: 0.05}}}}
"""
OLD, NEW = "2026-06-01", "2026-10-01"


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("billing", "billing", (0, 1)),  # labels: one part each, as before
        ("billing", "login", (1, 1)),
        ('{"a": "x", "b": "y"}', '{"a": "x", "b": "y"}', (0, 2)),
        ('{"a": "x", "b": "y"}', '{"a": "x", "b": "z"}', (1, 2)),
        ('{"a": "x", "b": null}', '{"a": "x", "b": ""}', (0, 2)),  # null and "" both say absent
        ('{"a": "30", "b": null}', '{"a": 30, "b": null}', (0, 2)),  # the same digits
        ('{"a": "x"}', '{"a": "x", "b": "y"}', (1, 2)),  # a field one teacher left out
        ('{"a": "x", "b": "y"}', '```json\n{"a": "x"}\n```', (2, 2)),  # malformed: every field differs
        ({"a": "x", "b": "y"}, '{"a": "x", "b": "z"}', (1, 2)),  # an answer already parsed
    ],
)
def test_answer_difference(old, new, expected):
    assert answer_difference(old, new) == expected


def test_disagreement_is_the_share_of_field_values_that_changed():
    old = {f"doc {i}": json.dumps({f: f"v{i}" for f in FIELDS}) for i in range(4)}
    new = dict(old) | {"doc 0": json.dumps({f: "other" if f == FIELDS[0] else "v0" for f in FIELDS})}
    assert redistill.disagreement(old, new, sample=10) == (1 / (4 * len(FIELDS)), 4)


@pytest.fixture
def platform(tmp_path, monkeypatch) -> dict:
    """A state folder with a base model directory and the teacher's first call log accepted."""
    from ml.config import load_settings
    from ml.pipeline.ingest_validate import drop_dir_for, ingest_batch, store_for
    from ml.workflows import get_workflow

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "bert"}')
    (base / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (base / "model.safetensors").write_bytes(b"weights-v1")
    (tmp_path / "workflows.yaml").write_text(WORKFLOWS.format(base=base))
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(tmp_path / "workflows.yaml"))
    settings = load_settings()
    settings.ensure_dirs()
    wf = get_workflow(settings.workflows_file, WF)
    generated = generate(tmp_path / "gen", n_documents=30, n_gold=0, seed=5, max_pages=1, workflow=WF)
    rows = [dict(r, model_version=OLD) for r in read_jsonl(generated["call_log_path"])]
    accepted, _ = extraction.curate(rows, FIELDS)
    clean = {a["call_id"] for a in accepted}  # answers curation accepts: six fields each
    drop = drop_dir_for(settings, wf)

    def accept(name: str, calls: list[dict]) -> dict:
        (drop / name).write_text("".join(json.dumps(r) + "\n" for r in calls), encoding="utf-8")
        return ingest_batch(WF, name)

    accept("june.jsonl", rows)
    return {
        "rows": [r for r in rows if r["call_id"] in clean],
        "accept": accept,
        "store": store_for(settings, wf),
        "data": settings.data_dir / WF,
    }


def new_teacher(rows: list[dict], change_every: int) -> tuple[list[dict], int]:
    """The same documents answered later by a new version; every n-th answer has one field emptied."""
    out, changed = [], 0
    for i, r in enumerate(rows):
        answer = json.loads(r["response_json"])
        if i % change_every == 0:
            name = next(f for f in FIELDS if answer[f] is not None)
            answer[name], changed = None, changed + 1  # absent: always a valid answer
        out.append(
            {
                **r,
                "call_id": r["call_id"][:-4] + "beef",
                "ts": f"2026-12-01T10:{i // 60:02d}:{i % 60:02d}Z",  # after every call of the old version
                "model_version": NEW,
                "response_json": json.dumps(answer),
            }
        )
    return out, changed


def test_a_new_teacher_version_of_an_extraction_call_log_is_seen(platform):
    fp = teacher_fingerprint("call_log", "frontier-large", platform["data"])
    assert fp.value == f"call_log:frontier-large@{OLD}" and fp.detail["calls"] > 0
    platform["accept"]("october.jsonl", new_teacher(platform["rows"], 3)[0])
    fp = teacher_fingerprint("call_log", "frontier-large", platform["data"])
    assert fp.value == f"call_log:frontier-large@{NEW}" and fp.detail["calls"] == len(platform["rows"])


@pytest.mark.parametrize("change_every, redistills", [(1, True), (len(FIELDS) * 100, False)])
def test_the_probe_compares_field_answers_and_a_new_teacher_relabels(platform, change_every, redistills):
    assert watch_upstream.check(WF, "watch/base", []) is None  # the baseline
    calls, changed = new_teacher(platform["rows"], change_every)
    platform["accept"]("october.jsonl", calls)
    event = watch_upstream.check(WF, "watch/change", [])
    assert event is not None and event["changed"] == ["teacher"]

    result = redistill.probe_teachers(WF, "distill/r1", [event])
    n = len(platform["rows"])
    assert (result["compared_with"], result["n_compared"]) == ("old teacher", n)
    assert result["disagreement"] == pytest.approx(changed / (n * len(FIELDS)))
    assert result["redistill"] is redistills
    assert (result.get("skipped") == "teachers agree") is (not redistills)

    # The distill run's training set: where the new teacher answered, its answers replace the old.
    train = platform["store"].load("train")
    relabelled, info = redistill.relabel_for_current_teacher(WF, train)
    assert info["teacher"] == f"call_log:frontier-large@{NEW}"
    answered = set(relabelled.loc[relabelled["teacher_version"] == NEW, "text"])
    stale = relabelled[(relabelled["teacher_version"] == OLD) & relabelled["text"].isin(answered)]
    assert stale.empty and len(answered) == changed  # unchanged answers were duplicates at ingest
    assert relabelled.index.isin(train.index).all()  # positions in the stored set, for train to select


def test_the_probe_falls_back_to_the_training_sets_values(platform):
    watch_upstream.check(WF, "watch/base", [])
    # The new teacher answered other copies of the documents (a new prefix): no text in common with
    # the old teacher's calls, so its answers are compared with the training set's values.
    calls, changed = new_teacher(platform["rows"], 2)
    store = platform["store"]
    train = store.load("train")
    renamed = {t: f"Copy. {t}" for t in train["text"]}
    calls = [{**c, "request_text": renamed[c["request_text"]]} for c in calls]
    platform["accept"]("october.jsonl", calls)
    train = store.load("train")
    train["text"] = train["text"].map(lambda t: renamed.get(t, t))
    train.to_parquet(store.root / "train.parquet")  # as if the old teacher had seen the copies
    result = redistill.probe_teachers(WF, "distill/r1", [watch_upstream.check(WF, "watch/change", [])])
    assert result["compared_with"] == "training labels" and result["n_compared"] == len(calls)
    assert result["disagreement"] == pytest.approx(changed / (len(calls) * len(FIELDS)))


def test_training_labels_reads_an_extraction_sets_values(platform):
    values = redistill.training_labels(platform["data"], exclude_version="none")
    train = pd.read_parquet(Path(platform["data"]) / "train.parquet")
    assert values == dict(zip(train["text"], train["values"]))
