"""Ingestion of bad input: every bad file gets a clear error and is left byte for byte as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from ml.data import contract
from ml.data.contract import ContractError
from ml.data.ingest import IngestError, PiiMasker, mask_pii, read_batch, safe_drop_path, sha256_file
from ml.workflows import Validation

LABELED = pd.DataFrame(
    {
        "text": ["my parcel is late", "refund my order please", "cannot log in at all"],
        "label": ["shipping", "billing", "login"],
    }
)


def write_csv(path: Path, df: pd.DataFrame = LABELED) -> Path:
    df.to_csv(path, index=False)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_bytes(data: bytes | str):
    """A maker that writes these bytes (or UTF-8 text) and returns the path."""

    def make(path: Path) -> Path:
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    return make


def truncated_parquet(path: Path) -> Path:
    LABELED.to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the footer (schema, row groups) is gone
    return path


# Each bad file: how to make it, the error it raises, and words the message must hold.
BAD_FILES = [
    ("empty.csv", write_bytes(b""), IngestError, "empty"),
    ("empty.jsonl", write_bytes(b""), IngestError, "empty"),
    ("header_only.csv", write_bytes("text,label\n"), IngestError, "header but no rows"),
    ("truncated.parquet", truncated_parquet, IngestError, "truncated"),
    (
        "latin1.csv",
        write_bytes("text,label\ncafé crème brûlée,billing\n".encode("latin-1")),
        IngestError,
        "not UTF-8",
    ),
    (
        "broken.jsonl",
        write_bytes('{"text": "a", "label": "b"}\n{"text": "unclosed\n'),
        IngestError,
        "cannot be parsed as jsonl",
    ),
    ("notes.txt", write_bytes("text,label\na,b\n"), IngestError, "unsupported file type '.txt'"),
    (
        "missing_label.csv",
        lambda p: write_csv(p, LABELED[["text"]]),
        ContractError,
        "missing column(s) ['label']",
    ),
    (
        "renamed.csv",
        lambda p: write_csv(p, LABELED.rename(columns={"text": "body", "label": "queue"})),
        ContractError,
        "the file has ['body', 'queue']",
    ),
]


@pytest.mark.parametrize("name, make, error, words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_raises_a_clear_error_and_is_left_as_it_was(tmp_path, name, make, error, words):
    path = make(tmp_path / name)
    before = sha256_file(path)
    with pytest.raises(error) as err:
        read_batch(path)
    message = str(err.value)
    assert words in message, message
    assert name in message  # the file is named
    assert path.is_file() and sha256_file(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written beside it


def test_the_contract_error_says_how_to_map_the_columns(tmp_path):
    path = write_csv(tmp_path / "renamed.csv", LABELED.rename(columns={"text": "body", "label": "queue"}))
    with pytest.raises(ContractError, match="--text-col/--label-col"):
        read_batch(path)
    batch = read_batch(path, text_col="body", label_col="queue")
    assert batch.frame[contract.TEXT].tolist() == LABELED["text"].tolist()
    assert batch.frame[contract.LABEL].tolist() == LABELED["label"].tolist()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_an_extra_column_is_accepted_and_dropped(tmp_path, suffix):
    df = LABELED.assign(customer_id=["c1", "c2", "c3"], priority=[1, 2, 3])
    path = tmp_path / f"extra{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        write_jsonl(path, df.to_dict("records"))
    batch = read_batch(path)
    assert list(batch.frame.columns) == list(contract.COLUMNS)
    assert batch.kind == "labelled" and batch.stats["rows"] == 3
    assert set(batch.frame[contract.SOURCE]) == {"gold"}
    assert batch.sha256 == sha256_file(path)


def _validate(frame: pd.DataFrame):
    from ml.validation.suite import validate_batch

    return validate_batch(
        frame,
        labels=["billing", "login", "shipping"],
        rules=Validation(min_rows=1, min_per_class=0),
        reference_label_counts=None,
        batch_id="dtype",
    )


def test_a_numeric_text_column_is_still_a_batch_and_the_gate_rejects_it(tmp_path):
    # The likeliest cause: --text-col names an ID column. Numbers must not become "texts".
    path = write_jsonl(tmp_path / "ids.jsonl", [{"text": 10_000 + i, "label": "billing"} for i in range(5)])
    batch = read_batch(path)
    assert batch.frame[contract.TEXT].tolist() == [10_000 + i for i in range(5)]
    report = _validate(batch.frame)
    assert not report.success
    assert [f.expectation for f in report.failures if f.column == contract.TEXT] == [
        "expect_column_values_to_be_of_type"
    ]


def test_numeric_labels_become_strings_the_gate_names_as_unknown(tmp_path):
    path = write_jsonl(
        tmp_path / "label_ids.jsonl",
        [{"text": "my parcel is late", "label": 3}, {"text": "refund my order", "label": 1}],
    )
    batch = read_batch(path)
    assert batch.frame[contract.LABEL].tolist() == ["3", "1"]
    report = _validate(batch.frame)
    assert not report.success
    assert "expect_column_values_to_be_in_set" in {f.expectation for f in report.failures}


def test_a_few_numeric_texts_among_strings_become_strings(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"text": "my parcel is late", "label": "shipping"}, {"text": 12345, "label": "billing"}],
    )
    assert read_batch(path).frame[contract.TEXT].tolist() == ["my parcel is late", "12345"]


@pytest.mark.parametrize("column", ["text", "label"])
def test_an_all_null_column_stays_null_for_the_gate_to_see(tmp_path, column):
    path = write_csv(tmp_path / "nulls.csv", LABELED.assign(**{column: [None, None, None]}))
    batch = read_batch(path)
    assert batch.frame[column].isna().all() and len(batch.frame) == 3
    report = _validate(batch.frame)
    assert f"{column}_not_null" in report.summary() or any(
        f.column == column and "null" in f.expectation for f in report.failures
    )


def test_a_single_ten_megabyte_text_is_read_and_masked(tmp_path):
    # Ordinary words, one long unbroken token (a pasted attachment) and PII at both ends: the
    # email pattern used to backtrack quadratically over such a token and hang ingestion.
    blob = "QmFzZTY0" * 250_000  # 2 MB without a space or an "@"
    words = "the parcel arrived damaged and I want a refund " * 180_000
    text = "write to ana@example.com " + blob + " " + words + " or call +1 (415) 555-0100"
    assert len(text) > 10_000_000
    path = write_csv(
        tmp_path / "huge.csv", pd.DataFrame({"text": [text, "a short one"], "label": ["billing"] * 2})
    )
    before = sha256_file(path)
    batch = read_batch(path)
    stored = batch.frame[contract.TEXT][0]
    assert stored.startswith("write to <EMAIL> QmFzZTY0") and stored.endswith("or call <PHONE>")
    assert len(stored) == len(text) - len("ana@example.com") - len("+1 (415) 555-0100") + len(
        "<EMAIL><PHONE>"
    )
    assert sha256_file(path) == before


# The drop folder ---------------------------------------------------------------------------


@pytest.fixture
def drop(tmp_path) -> Path:
    root = tmp_path / "drop"
    (root / "eval").mkdir(parents=True)
    write_csv(root / "batch.csv")
    write_csv(root / "eval" / "gold.csv")
    outside = tmp_path / "outside"
    outside.mkdir()
    write_csv(outside / "secret.csv")
    os.symlink(outside / "secret.csv", root / "link.csv")
    os.symlink(outside, root / "linked_dir")
    os.symlink(root / "batch.csv", root / "inner_link.csv")
    return root


@pytest.mark.parametrize("name", ["batch.csv", "eval/gold.csv", Path("eval") / "gold.csv", "./batch.csv"])
def test_files_inside_the_drop_folder_resolve(drop, name):
    path = safe_drop_path(drop, name)
    assert path.is_file() and path.resolve().is_relative_to(drop.resolve())


@pytest.mark.parametrize(
    "name, words",
    [
        ("../outside/secret.csv", "without '..'"),
        ("eval/../../outside/secret.csv", "without '..'"),
        ("..", "without '..'"),
        ("link.csv", "is a link or leaves the drop folder"),
        ("linked_dir/secret.csv", "is a link or leaves the drop folder"),
        ("inner_link.csv", "is a link"),  # even a link inside: the archive keeps the real bytes only
        ("absent.csv", "no such file"),
        ("eval", "no such file"),
    ],
)
def test_paths_that_leave_the_drop_folder_are_refused(drop, name, words):
    with pytest.raises(IngestError, match=words):
        safe_drop_path(drop, name)
    assert (drop.parent / "outside" / "secret.csv").is_file()


def test_an_absolute_path_is_refused_even_inside_the_drop_folder(drop):
    for name in (str(drop.parent / "outside" / "secret.csv"), str(drop / "batch.csv")):
        with pytest.raises(IngestError, match="relative to the drop folder"):
            safe_drop_path(drop, name)


# Call logs ---------------------------------------------------------------------------------


def call(text, label, status="ok", **extra) -> dict:
    return {
        "request_text": text,
        "response_label": label if status == "ok" else None,
        "model": "frontier-large",
        "model_version": "2026-06",
        "latency_ms": 800.0,
        "tokens_in": 100,
        "tokens_out": 5,
        "status": status,
        "error": None if status == "ok" else "Timeout",
        **extra,
    }


CALL_LOG = [
    call("My email is ana.lima@example.com, refund me", "billing"),
    call("Card 4111 1111 1111 1111 was declined", "billing", label_probs={"billing": 0.9, "login": 0.1}),
    call("Call me on +1 (415) 555-0100 about my parcel", "shipping"),
    call("My order 12345 never came, placed 2026-01-15", "shipping"),
    call("My order 12345 never came, placed 2026-01-15", "shipping"),  # duplicate
    call("cannot log in", None, status="timeout"),
    call("cannot log in", None, status="error"),
    call("server said no", None, status="error"),
    call("no label came back", None),  # ok status, but no answer: not a target
]


@pytest.fixture
def call_log(tmp_path) -> Path:
    return write_jsonl(tmp_path / "calls.jsonl", CALL_LOG)


def test_a_call_log_is_curated(call_log):
    before = sha256_file(call_log)
    batch = read_batch(call_log)
    assert batch.kind == "call_log"
    stats = batch.stats
    assert (stats["calls"], stats["errors"], stats["timeouts"], stats["failed_excluded"]) == (9, 2, 1, 3)
    assert stats["ok_calls"] == 6 and stats["duplicates_removed"] == 1 and stats["rows"] == 4
    assert stats["tokens_in_sum"] == 600 and stats["models"] == {"frontier-large": 6}
    assert stats["latency_p99_ms"] == pytest.approx(800.0)
    assert batch.frame[contract.TEXT].tolist() == [
        "My email is <EMAIL>, refund me",
        "Card <CARD> was declined",
        "Call me on <PHONE> about my parcel",
        "My order 12345 never came, placed 2026-01-15",
    ]
    assert set(batch.frame[contract.SOURCE]) == {"teacher"}
    assert set(batch.frame[contract.TEACHER_VERSION]) == {"2026-06"}
    assert json.loads(batch.frame[contract.TEACHER_PROBS][1]) == {"billing": 0.9, "login": 0.1}
    assert sha256_file(call_log) == before


def test_masking_can_be_turned_off_for_a_preview(call_log):
    texts = read_batch(call_log, mask=False).frame[contract.TEXT].tolist()
    assert "ana.lima@example.com" in texts[0] and "4111 1111 1111 1111" in texts[1]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("write to ana.lima+tickets@mail.example.co.uk today", "write to <EMAIL> today"),
        ("card 4111 1111 1111 1111", "card <CARD>"),
        ("card 4111-1111-1111-1111.", "card <CARD>."),
        ("call +1 (415) 555-0100 now", "call <PHONE> now"),
        ("call (212) 555-0188", "call <PHONE>"),
        ("call 415-555-0100", "call <PHONE>"),
        ("ring 07700 900123", "ring <PHONE>"),
        ("ring +44 20 7946 0958", "ring <PHONE>"),
        # Not personal data: order numbers, dates, amounts, small counts stay for the model to learn from.
        ("order 12345", "order 12345"),
        ("order #1234567 is missing", "order #1234567 is missing"),
        ("ORD-7654321", "ORD-7654321"),
        ("shipped on 2026-01-15 at 10:30", "shipped on 2026-01-15 at 10:30"),
        ("due 15/01/2026", "due 15/01/2026"),
        ("charged $129.99 twice", "charged $129.99 twice"),
        ("steps 1 2 3 4 5 6 failed", "steps 1 2 3 4 5 6 failed"),
        ("version 3.14.159", "version 3.14.159"),
    ],
)
def test_mask_pii(text, expected):
    assert mask_pii(text) == expected


def test_a_call_log_with_only_failed_calls_is_an_empty_batch(tmp_path):
    path = write_jsonl(
        tmp_path / "down.jsonl", [call("x", None, status="error"), call("y", None, status="timeout")]
    )
    batch = read_batch(path)
    assert batch.stats["rows"] == 0 and batch.stats["failed_excluded"] == 2 and len(batch.frame) == 0
    assert list(batch.frame.columns) == list(contract.COLUMNS)


def test_a_workflow_chooses_its_pii_rules_and_adds_its_own(tmp_path):
    text = "mail ana@example.com, card 4111 1111 1111 1111, order ORD-123456"
    only_email_and_orders = PiiMasker.from_rules(["email"], {"<ORDER>": r"ORD-\d{6}"})
    assert mask_pii(text, only_email_and_orders) == "mail <EMAIL>, card 4111 1111 1111 1111, order <ORDER>"
    assert mask_pii(text, PiiMasker.from_rules([])) == text
    assert mask_pii(text) == "mail <EMAIL>, card <CARD>, order ORD-123456"


def test_the_built_in_order_holds_whatever_order_the_rules_are_listed_in():
    # Listed phone-first, the phone rule would eat a card number's tail.
    assert mask_pii("card 4111 1111 1111 1111", PiiMasker.from_rules(["phone", "card"])) == "card <CARD>"


def test_read_batch_masks_with_the_given_rule(tmp_path):
    path = tmp_path / "batch.csv"
    path.write_text("text,label\nwhere is ORD-123456 mail ana@example.com,shipping\n", encoding="utf-8")
    batch = read_batch(path, masker=PiiMasker.from_rules(["email"], {"<ORDER>": r"ORD-\d{6}"}))
    assert batch.frame["text"].tolist() == ["where is <ORDER> mail <EMAIL>"]
