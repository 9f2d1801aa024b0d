"""Upstream fingerprints, the change decision, the watcher's steps and the teacher probe.

Real files throughout: model directories, accepted call logs laid out as ingestion leaves them
(versions.jsonl + raw/<sha16>_<name>), a SQLite MLflow registry for registered base models.
The watcher DAG itself runs in tests/integration/test_watch_upstream_dag.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from ml.data import contract
from ml.pipeline import redistill, watch_upstream
from ml.upstream import (
    UpstreamError,
    UpstreamStore,
    base_model_fingerprint,
    call_log_teachers,
    current_call_log_teacher,
    observe,
    teacher_fingerprint,
)

WF = "tickets"
WORKFLOWS = """
workflows:
  tickets:
    labels: [billing, login, shipping]
    base_model: {base}
    teacher: {{kind: call_log, model: frontier-large}}
    keep_current: {{probe_sample: 50, min_disagreement: 0.1}}
"""


# Fixtures: a model directory and accepted call logs ------------------------------------------


def model_dir(path: Path, weights: bytes = b"weights-v1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (path / "model.safetensors").write_bytes(weights)
    return path


def accept_call_log(data_root: Path, name: str, rows: list[dict]) -> Path:
    """Lay a call log down as ingest_validate leaves an accepted one: raw/ file + versions.jsonl line."""
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    sha = hashlib.sha256(body).hexdigest()
    (data_root / "raw").mkdir(parents=True, exist_ok=True)
    raw = data_root / "raw" / f"{sha[:16]}_{name}"
    raw.write_bytes(body)
    with open(data_root / "versions.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "role": "train",
                    "kind": "call_log",
                    "batch": name,
                    "batch_sha256": sha,
                    "version": sha[:32],
                    "rows": len(rows),
                }
            )
            + "\n"
        )
    return raw


def calls(
    version: str, answers: dict[str, str], *, model: str = "frontier-large", day: int = 1, status: str = "ok"
) -> list[dict]:
    return [
        {
            "request_text": text,
            "response_label": label,
            "model": model,
            "model_version": version,
            "status": status,
            "ts": f"2026-08-{day:02d}T10:00:{i % 60:02d}Z",
        }
        for i, (text, label) in enumerate(answers.items())
    ]


TEXTS = [f"ticket number {i} about my account" for i in range(40)]


def answers(flip_every: int | None = None) -> dict[str, str]:
    """One label per text; with flip_every, every n-th text gets another label (a disagreeing teacher)."""
    out = {}
    for i, text in enumerate(TEXTS):
        label = ("billing", "login", "shipping")[i % 3]
        if flip_every and i % flip_every == 0:
            label = "shipping" if label != "shipping" else "billing"
        out[text] = label
    return out


@pytest.fixture
def platform(tmp_path, monkeypatch) -> dict:
    """A state folder and a workflows file, as the DAG tasks see them through MLOPS_* variables."""
    base = model_dir(tmp_path / "base")
    (tmp_path / "workflows.yaml").write_text(WORKFLOWS.format(base=base))
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(tmp_path / "workflows.yaml"))
    data_root = tmp_path / "state" / "data" / WF
    accept_call_log(data_root, "v1.jsonl", calls("v1", answers()))
    return {
        "base": base,
        "data": data_root,
        "store": UpstreamStore(tmp_path / "state" / "upstream", WF),
        "workflows": tmp_path / "workflows.yaml",
    }


# The decision, as a pure function ----------------------------------------------------------


def fps(base: str | None, teacher: str | None) -> dict:
    return {"base_model": {"value": base}, "teacher": {"value": teacher}}


def ack(base, teacher, ack_id="a0") -> dict:
    return {"id": ack_id, "fingerprints": fps(base, teacher)}


@pytest.mark.parametrize(
    "acknowledged, current, emitted, outcome, changed",
    [
        (None, fps("A", "T1"), (), "baseline", ()),
        (ack("A", "T1"), fps("A", "T1"), (), "unchanged", ()),
        (ack("A", None), fps("A", "T1"), (), "unchanged", ()),  # a teacher seen for the first time
        (
            ack("A", "T1"),
            fps("A", None),
            (),
            "unchanged",
            (),
        ),  # the teacher's calls are gone: nothing to compare
        (ack("A", "T1"), fps("B", "T1"), (), "changed", ("base_model",)),
        (ack("A", "T1"), fps("A", "T2"), (), "changed", ("teacher",)),
        (ack("A", "T1"), fps("B", "T2"), (), "changed", ("base_model", "teacher")),
        (ack("A", "T1"), fps("B", "T1"), ("some-other-change",), "changed", ("base_model",)),
    ],
)
def test_observe(acknowledged, current, emitted, outcome, changed):
    obs = observe(acknowledged, current, emitted)
    assert (obs.outcome, obs.changed) == (outcome, changed)
    assert (obs.event is not None) == (outcome == "changed")
    if obs.event:
        assert obs.event["change_key"] == obs.change_key
        assert obs.event["old"]["base_model"] == acknowledged["fingerprints"]["base_model"]
        assert obs.event["new"]["base_model"] == current["base_model"]


def test_a_change_whose_key_an_event_carries_is_not_emitted_again():
    first = observe(ack("A", "T1"), fps("B", "T1"))
    again = observe(ack("A", "T1"), fps("B", "T1"), [first.change_key])
    assert again.outcome == "already_emitted" and again.event is None and again.change_key == first.change_key


def test_the_same_values_from_another_acknowledged_state_are_another_change():
    # A→B, B→A, then A→B again: the third is a real change, not a replay of the first.
    first = observe(ack("A", "T1", "baseline-1"), fps("B", "T1"))
    third = observe(ack("A", "T1", "change-2"), fps("B", "T1"), [first.change_key])
    assert third.outcome == "changed" and third.change_key != first.change_key


def test_a_source_seen_first_does_not_change_the_key():
    # Emitted A→B, then the teacher's first calls arrive before the acknowledgement: still the same change.
    first = observe(ack("A", None), fps("B", None))
    later = observe(ack("A", None), fps("B", "T1"), [first.change_key])
    assert later.outcome == "already_emitted"


# Base model fingerprints -------------------------------------------------------------------


def test_base_dir_fingerprint_follows_content_not_location(tmp_path):
    one = base_model_fingerprint(str(model_dir(tmp_path / "one")))
    copy = base_model_fingerprint(str(model_dir(tmp_path / "copy")))
    other = base_model_fingerprint(str(model_dir(tmp_path / "other", weights=b"weights-v2")))
    assert one.value == copy.value != other.value
    assert one.detail["path"] == str(tmp_path / "one")


def missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere"


def without_config(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def weights_on_a_lost_volume(tmp_path: Path) -> Path:
    path = model_dir(tmp_path / "broken")
    (path / "model.safetensors").unlink()
    (path / "model.safetensors").symlink_to(tmp_path / "unmounted" / "weights")  # dangling
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (missing, "neither"),
        (without_config, "no config.json"),
        (weights_on_a_lost_volume, "cannot read"),
    ],
)
def test_missing_or_unreadable_base_raises_a_clear_error(tmp_path, make, expected):
    spec = str(make(tmp_path))
    with pytest.raises(UpstreamError) as err:
        base_model_fingerprint(spec)
    assert spec in str(err.value) and expected in str(err.value)
    assert "base_model" in str(err.value)  # where to fix it


def test_pinned_hub_revision_is_its_own_fingerprint():
    fp = base_model_fingerprint(
        "sentence-transformers/all-MiniLM-L6-v2@c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    )
    assert fp.value == "hub:sentence-transformers/all-MiniLM-L6-v2@c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def test_registered_base_follows_its_alias(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    client.create_registered_model("base_encoder")
    v1 = client.create_model_version("base_encoder", source=str(model_dir(tmp_path / "b1")))
    v2 = client.create_model_version("base_encoder", source=str(model_dir(tmp_path / "b2", b"new")))
    client.set_registered_model_alias("base_encoder", "current", v1.version)
    before = base_model_fingerprint("models:/base_encoder@current")
    client.set_registered_model_alias("base_encoder", "current", v2.version)
    after = base_model_fingerprint("models:/base_encoder@current")
    assert (before.value, after.value) == ("mlflow:base_encoder/1", "mlflow:base_encoder/2")
    with pytest.raises(UpstreamError, match="no such model version or alias"):
        base_model_fingerprint("models:/base_encoder@nope")


# Teacher fingerprints from the accepted call logs ------------------------------------------


def test_newest_call_of_the_declared_model_is_the_teacher(tmp_path):
    root = tmp_path / "data"
    accept_call_log(root, "june.jsonl", calls("2026-06-01", answers(), day=1))
    accept_call_log(root, "sept.jsonl", calls("2026-09-01", answers(), day=20))
    # A fallback model answered during an outage, and an old log was backfilled afterwards.
    accept_call_log(root, "fallback.jsonl", calls("x-1", answers(), model="frontier-small", day=28))
    accept_call_log(root, "backfill.jsonl", calls("2026-03-01", answers(), day=2))
    fp = teacher_fingerprint("call_log", "frontier-large", root)
    assert fp.value == "call_log:frontier-large@2026-09-01"
    assert fp.detail["calls"] == len(TEXTS)


@pytest.mark.parametrize(
    "rows, expected_version",
    [
        (calls("v1", answers(), status="error"), None),  # failed calls teach nothing: no teacher yet
        (
            [{k: v for k, v in r.items() if k != "ts"} for r in calls("v2", answers())],
            "v2",
        ),  # no ts: order accepted
    ],
)
def test_teacher_edge_cases(tmp_path, rows, expected_version):
    root = tmp_path / "data"
    accept_call_log(
        root, "first.jsonl", [{k: v for k, v in r.items() if k != "ts"} for r in calls("v0", answers())]
    )
    accept_call_log(root, "second.jsonl", rows)
    current = current_call_log_teacher(call_log_teachers(root), "frontier-large")
    assert current["version"] == (expected_version or "v0")


def test_no_call_log_yet_is_no_teacher_fingerprint_not_an_error(tmp_path):
    fp = teacher_fingerprint("call_log", "frontier-large", tmp_path / "empty")
    assert fp.value is None and "no accepted call" in fp.detail["note"]


def test_missing_or_damaged_call_log_raises_a_clear_error(tmp_path):
    root = tmp_path / "data"
    raw = accept_call_log(root, "calls.jsonl", calls("v1", answers()))
    raw.write_text(raw.read_text() + "{not json\n")
    with pytest.raises(UpstreamError, match="line 41 is not JSON.*restore"):
        teacher_fingerprint("call_log", "frontier-large", root)
    raw.unlink()
    with pytest.raises(UpstreamError, match="calls.jsonl.*is missing.*ingest_validate"):
        teacher_fingerprint("call_log", "frontier-large", root)


def test_each_accepted_log_is_read_once(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache.json"
    raw = accept_call_log(root, "calls.jsonl", calls("v1", answers()))
    first = teacher_fingerprint("call_log", "frontier-large", root, cache)
    raw.unlink()  # archived files never change, so the cached summary stands in for it
    assert teacher_fingerprint("call_log", "frontier-large", root, cache).value == first.value


# The watcher's steps (what the DAG's tasks call) ---------------------------------------------


def test_check_baseline_then_unchanged_then_one_change(platform):
    assert watch_upstream.check(WF, "watch/run1", []) is None  # the baseline
    assert watch_upstream.check(WF, "watch/run2", []) is None  # nothing moved
    model_dir(platform["base"], weights=b"weights-v2")
    event = watch_upstream.check(WF, "watch/run3", [])
    assert event["changed"] == ["base_model"]
    assert event["old"]["base_model"]["value"] != event["new"]["base_model"]["value"]
    assert event["new"]["teacher"]["value"] == "call_log:frontier-large@v1"
    assert watch_upstream.acknowledge(WF, "watch/run3", event)["acknowledged"] is True
    assert watch_upstream.acknowledge(WF, "watch/run3", event)["note"] == "already acknowledged"  # a retry
    assert watch_upstream.check(WF, "watch/run4", [event["change_key"]]) is None
    events = [h["event"] for h in platform["store"].history() if h["event"] != "acknowledged"]
    assert events == ["baseline", "unchanged", "changed", "unchanged"]


def test_a_lost_acknowledgement_never_emits_twice(platform):
    watch_upstream.check(WF, "watch/run1", [])
    accept_call_log(platform["data"], "v2.jsonl", calls("v2", answers(), day=9))
    event = watch_upstream.check(WF, "watch/run2", [])
    # The try crashed before Airflow recorded the event: the retry finds no event and emits the same change.
    retry = watch_upstream.check(WF, "watch/run2", [])
    assert retry["change_key"] == event["change_key"]
    # It succeeded, then acknowledge_change never ran: the next run finds the key in the asset's events.
    assert watch_upstream.check(WF, "watch/run3", ["older-key", event["change_key"]]) is None
    acknowledged = platform["store"].acknowledged()
    assert acknowledged["id"] == event["change_key"]
    assert acknowledged["fingerprints"]["teacher"]["value"] == "call_log:frontier-large@v2"
    assert watch_upstream.check(WF, "watch/run4", []) is None  # and it stays quiet


def test_a_stale_acknowledgement_never_moves_the_state_back(platform):
    watch_upstream.check(WF, "watch/run1", [])
    model_dir(platform["base"], weights=b"weights-v2")
    stale = watch_upstream.check(WF, "watch/run2", [])
    watch_upstream.check(WF, "watch/run3", [stale["change_key"]])  # acknowledged by the next run
    model_dir(platform["base"], weights=b"weights-v3")
    newer = watch_upstream.check(WF, "watch/run4", [stale["change_key"]])
    watch_upstream.acknowledge(WF, "watch/run4", newer)
    assert watch_upstream.acknowledge(WF, "watch/run2", stale)["acknowledged"] is False  # late, superseded
    assert platform["store"].acknowledged()["id"] == newer["change_key"]


def test_a_missing_base_fails_the_check_and_records_nothing(platform):
    watch_upstream.check(WF, "watch/run1", [])
    before = platform["store"].history()
    platform["workflows"].write_text(WORKFLOWS.format(base=platform["base"].parent / "gone"))
    with pytest.raises(UpstreamError, match="gone"):
        watch_upstream.check(WF, "watch/run2", [])
    assert platform["store"].history() == before


# The teacher probe and the relabelling -----------------------------------------------------


@pytest.mark.parametrize(
    "old, new, sample, expected",
    [
        ({"a": "x", "b": "y"}, {"a": "x", "b": "y"}, 10, (0.0, 2)),
        ({"a": "x", "b": "y"}, {"a": "x", "b": "z"}, 10, (0.5, 2)),
        ({"a": "x", "b": "y"}, {"c": "x"}, 10, (None, 0)),
        ({t: "x" for t in "abcdefgh"}, {t: "y" for t in "abcdefgh"}, 3, (1.0, 3)),
    ],
)
def test_disagreement(old, new, sample, expected):
    assert redistill.disagreement(old, new, sample=sample) == expected


def change_event(platform, base_changed: bool = False) -> dict:
    """Run the watcher's check after a new teacher version arrived, as the DAG would."""
    if base_changed:
        model_dir(platform["base"], weights=b"weights-v2")
    event = watch_upstream.check(WF, "watch/change", [])
    assert event is not None
    return event


@pytest.mark.parametrize(
    "flip_every, base_changed, redistills",
    [
        (None, False, False),  # the new teacher answers every text as the old one did: skipped
        (2, False, True),  # half of them differently: re-distil
        (None, True, True),  # teachers agree but the base moved: re-distil anyway
    ],
)
def test_probe_teachers(platform, flip_every, base_changed, redistills):
    watch_upstream.check(WF, "watch/base", [])
    accept_call_log(platform["data"], "v2.jsonl", calls("v2", answers(flip_every), day=9))
    event = change_event(platform, base_changed)
    result = redistill.probe_teachers(WF, "distill/r1", [event])
    assert result["redistill"] is redistills
    assert result["n_compared"] == len(TEXTS) and result["compared_with"] == "old teacher"
    assert (result.get("skipped") == "teachers agree") is (not redistills)
    assert platform["store"].history("probe")[-1]["redistill"] is redistills


def test_probe_falls_back_to_the_training_labels(platform):
    watch_upstream.check(WF, "watch/base", [])
    fresh = {f"a brand new ticket {i}": "login" for i in range(10)}
    accept_call_log(platform["data"], "v2.jsonl", calls("v2", fresh, day=9))
    pd.DataFrame(
        {
            contract.TEXT: list(fresh),
            contract.LABEL: ["login"] * 9 + ["billing"],
            contract.SOURCE: "teacher",
            contract.TEACHER_VERSION: "v1",
            contract.TEACHER_PROBS: "",
        }
    ).to_parquet(platform["data"] / "train.parquet")
    result = redistill.probe_teachers(WF, "distill/r1", [watch_upstream.check(WF, "watch/change", [])])
    assert (result["compared_with"], result["n_compared"], result["disagreement"]) == (
        "training labels",
        10,
        0.1,
    )
    assert result["redistill"] is True  # 10% is not below min_disagreement 0.1


def test_probe_without_an_upstream_event_redistils(platform):
    result = redistill.probe_teachers(WF, "distill/r1", [])
    assert result["redistill"] is True and result["changed"] == []


def test_the_newest_teacher_relabels_what_it_answered():
    train = pd.DataFrame(
        {
            contract.TEXT: ["a", "a", "b", "c", "c"],
            contract.LABEL: ["x", "y", "x", "x", "z"],
            contract.SOURCE: ["teacher", "teacher", "teacher", "gold", "teacher"],
            contract.TEACHER_VERSION: ["v1", "v2", "v1", "", "v2"],
            contract.TEACHER_PROBS: "",
        }
    )
    out = redistill.prefer_teacher_version(train, "v2")
    # a: v1's answer gives way to v2's; b: only v1 answered, kept; c: gold stays next to v2.
    assert list(zip(out[contract.TEXT], out[contract.LABEL])) == [
        ("a", "y"),
        ("b", "x"),
        ("c", "x"),
        ("c", "z"),
    ]
    assert list(out.index) == [1, 2, 3, 4]  # positions in the stored training set, for train() to select


def test_relabel_for_current_teacher_reads_the_call_logs(platform):
    accept_call_log(platform["data"], "v2.jsonl", calls("v2", {TEXTS[0]: "shipping"}, day=9))
    train = pd.DataFrame(
        {
            contract.TEXT: [TEXTS[0], TEXTS[0]],
            contract.LABEL: ["billing", "shipping"],
            contract.SOURCE: "teacher",
            contract.TEACHER_VERSION: ["v1", "v2"],
            contract.TEACHER_PROBS: "",
        }
    )
    out, info = redistill.relabel_for_current_teacher(WF, train)
    assert list(out[contract.LABEL]) == ["shipping"]
    assert info == {"teacher": "call_log:frontier-large@v2", "rows_before": 2, "rows_after": 1}


def test_keep_current_settings_are_validated(tmp_path):
    from ml.workflows import WorkflowError, load_workflows

    path = tmp_path / "w.yaml"
    path.write_text("workflows:\n  t1:\n    keep_current: {min_disagreement: 2}\n")
    with pytest.raises(WorkflowError, match="keep_current.min_disagreement"):
        load_workflows(path)
    path.write_text("workflows:\n  t1:\n    keep_current: {probe_sample: 20}\n")
    assert load_workflows(path)["t1"].keep_current.probe_sample == 20
