"""Field extraction from long documents: the teacher's JSON answers become a token classifier.

The frontier model answers each document with a JSON object {field: the string found in the
text}. This module turns those answers into a student and scores it:

1. `curate` refuses, with a named reason, every call-log row training must not see (the reasons
   are REFUSAL_REASONS; nothing is dropped silently: every row is accepted or refused);
2. `answer_spans` finds each value's character spans, and `targets_from_answers` turns them into
   BIO tags per token over overlapping windows of the document (the model reads max_length
   tokens at a time; documents are longer);
3. `build_student` is the packaged MiniLM as a token classifier, labels O + B-/I- per field;
4. `train` fine-tunes it (AdamW, warmup then linear decay, early stopping on the validation
   split's field F1, the best epoch's weights saved as safetensors);
5. `extract` reads documents window by window, averages each token's probabilities over the
   windows that saw it, decodes spans and keeps the most confident span per field;
6. `evaluate` scores answers against the truth: per-field exact match and token F1, macro over
   fields.

Every occurrence of a value is tagged, not only the first: contracts name a party in the
preamble, in clauses and in the signature block, and tagging the first mention only would
teach the model that an identical later mention, in a window that never saw the first, is not
the party. Only whole-word occurrences count ("30" is not inside "$30,000"), and an occurrence
that lies inside another field's longer value ("15" inside the date "15 March 2026") belongs to
that field. Two fields whose values still overlap are refused: the tags cannot say both.

Heavy imports (torch, transformers) happen inside the functions: the task seam reads this
module when the workflows file loads.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.data.contract import TEXT

# -- the data contract ------------------------------------------------------------------------

DOCUMENT_ID = "document_id"
DOCUMENT_COLUMNS = (DOCUMENT_ID, TEXT)  # a documents file: one row per document
# The call log's columns this task reads: the document as sent, the answer as returned.
REQUEST_TEXT = "request_text"
RESPONSE_JSON = "response_json"
STATUS = "status"
CALL_ID = "call_id"
CALL_LOG_COLUMNS = (REQUEST_TEXT, RESPONSE_JSON, STATUS)

REQUIRED_COLUMNS = DOCUMENT_COLUMNS
SERVING_INPUT = (TEXT,)
SERVING_OUTPUT = ("fields",)  # field -> {"value", "start", "end", "confidence"} or null, as JSON
# What a gate may judge (higher-is-better shares in [0, 1]), name -> the words of a gate reason.
METRICS = {
    "field_f1_macro": "field F1 (macro)",
    "exact_match_macro": "exact match (macro)",
    "per_field_f1": "field F1",
    "per_field_exact_match": "field exact match",
}
PER_PART_METRICS = ("per_field_f1", "per_field_exact_match")

MAX_DOCUMENT_BYTES = 2_000_000  # UTF-8 bytes; a longer "document" is a dump, not a contract
OUTSIDE = "O"
IGNORE_INDEX = -100  # special and padding tokens: no loss, no prediction
DEFAULT_MAX_LENGTH = 256
DEFAULT_STRIDE = 64
INFERENCE_BATCH_SIZE = 16
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

REFUSAL_REASONS = {
    "call_failed": "the call did not succeed, so there is no answer",
    "no_answer": "the call succeeded but no answer was recorded (a gold-sampled call)",
    "empty_document": "the document is empty",
    "document_too_large": f"the document is over {MAX_DOCUMENT_BYTES:,} bytes",
    "not_json": "the answer is not JSON",
    "not_an_object": "the answer is JSON but not an object of field -> value",
    "undeclared_field": "the answer has a field the workflow does not declare",
    "missing_field": 'the answer lacks a declared field (null or "" says absent)',
    "value_not_string": "a value is not a string (nor a number, nor null)",
    "value_not_in_document": "a value does not occur in the document as whole words",
    "overlapping_spans": "the values of two fields overlap in the document",
}
# Refusals that are the teacher's mistakes (the frontier report counts them); the others are
# the call's or the document's.
TEACHER_ERROR_REASONS = frozenset(REFUSAL_REASONS) - {
    "call_failed",
    "no_answer",
    "empty_document",
    "document_too_large",
}


class RefusedAnswer(ValueError):
    """One answer cannot be trained on; `reason` is a REFUSAL_REASONS key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_fields(fields: Sequence[str]) -> list[str]:
    """The declared fields, checked: a non-empty list of unique identifiers."""
    names = [str(f) for f in fields]
    bad = [n for n in names if not _FIELD_NAME.match(n)]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"fields={names}: declare one or more unique field names made of letters, digits and _ "
            f"(starting with a letter){'; not valid: ' + str(bad) if bad else ''}."
        )
    return names


def label_names(fields: Sequence[str]) -> list[str]:
    """The token classifier's labels: O, then B-<field> and I-<field> per field, in field order."""
    return [OUTSIDE] + [f"{tag}-{name}" for name in check_fields(fields) for tag in ("B", "I")]


# -- curation ---------------------------------------------------------------------------------


def _digit_continues(text: str, i: int, step: int) -> bool:
    # "30" in "30,000" or "1.5": a separator between digits continues the number.
    j = i + step
    return 0 <= i < len(text) and text[i] in ".," and 0 <= j < len(text) and text[j].isdigit()


def find_occurrences(text: str, value: str) -> list[tuple[int, int]]:
    """Character spans of `value` in `text` that start and end on word boundaries."""
    spans, start = [], text.find(value)
    while start >= 0 and value:
        end = start + len(value)
        left_ok = not value[0].isalnum() or start == 0 or not text[start - 1].isalnum()
        right_ok = not value[-1].isalnum() or end == len(text) or not text[end].isalnum()
        if value[0].isdigit():
            left_ok = left_ok and not _digit_continues(text, start - 1, -1)
        if value[-1].isdigit():
            right_ok = right_ok and not _digit_continues(text, end, 1)
        if left_ok and right_ok:
            spans.append((start, end))
        start = text.find(value, start + 1)
    return spans


def _value(raw: object, name: str) -> str | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise RefusedAnswer("value_not_string", f"field {name!r} is {type(raw).__name__} {str(raw)[:40]!r}")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # 30.0 -> "30": the digits as a contract writes them
    return raw if isinstance(raw, str) else str(raw)


def answer_spans(
    text: str, answer: Mapping[str, object], fields: Sequence[str]
) -> dict[str, list[tuple[int, int]]]:
    """{field: sorted spans of its value in text} ([] when absent); RefusedAnswer when it cannot be tagged.

    An occurrence inside another field's longer occurrence belongs to that field; any overlap
    left after that is refused (two fields would need the same tokens).
    """
    fields = check_fields(fields)
    undeclared = sorted(set(answer) - set(fields))
    if undeclared:
        raise RefusedAnswer("undeclared_field", f"{undeclared[:3]} not in the declared fields {fields}")
    missing = [f for f in fields if f not in answer]
    if missing:
        raise RefusedAnswer("missing_field", f'{missing} missing (an absent value is null or "")')
    occurrences: dict[str, list[tuple[int, int]]] = {}
    for name in fields:
        value = _value(answer[name], name)
        if value is None:
            occurrences[name] = []
            continue
        found = find_occurrences(text, value)
        if not found:
            raise RefusedAnswer(
                "value_not_in_document", f"field {name!r} value {value[:60]!r} is not in the text"
            )
        occurrences[name] = found

    def inside_longer(span, other_name) -> bool:
        return any(
            s <= span[0] and span[1] <= e and e - s > span[1] - span[0] for s, e in occurrences[other_name]
        )

    kept = {
        name: [sp for sp in spans if not any(inside_longer(sp, o) for o in fields if o != name)]
        for name, spans in occurrences.items()
    }
    for i, name in enumerate(fields):
        if occurrences[name] and not kept[name]:
            owner = next(
                o for o in fields if o != name and any(inside_longer(sp, o) for sp in occurrences[name])
            )
            raise RefusedAnswer(
                "overlapping_spans", f"field {name!r} occurs only inside field {owner!r}'s value"
            )
        for other in fields[i + 1 :]:
            clash = next(
                ((a, b) for a in kept[name] for b in kept[other] if a[0] < b[1] and b[0] < a[1]), None
            )
            if clash:
                raise RefusedAnswer(
                    "overlapping_spans",
                    f"fields {name!r} and {other!r} overlap at characters {clash[0]} and {clash[1]}",
                )
    return kept


def parse_answer(response_json: object) -> dict:
    """The answer object of one call, or RefusedAnswer (not_json, not_an_object)."""
    if isinstance(response_json, Mapping):
        return dict(response_json)
    if not isinstance(response_json, str):
        raise RefusedAnswer("not_json", f"the answer is {type(response_json).__name__}, not a JSON string")
    try:
        answer = json.loads(response_json)
    except ValueError as exc:
        raise RefusedAnswer("not_json", f"{exc.__class__.__name__} at {response_json[:30]!r}...") from None
    if not isinstance(answer, dict):
        raise RefusedAnswer("not_an_object", f"the answer is a JSON {type(answer).__name__}")
    return answer


def curate(call_log_rows: Iterable[Mapping], fields: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(accepted, refused): every call-log row lands in exactly one, in its original order.

    An accepted row is {document_id, call_id, text, answer: {field: value or None}, spans: {field:
    [(start, end), ...]}}. A refused row is the original row plus `reason` (a REFUSAL_REASONS key)
    and `detail` (which field, what value). Rows need request_text and response_json (and status,
    where the log records failed calls); document_id falls back to call_id, then to the row number.
    """
    fields = check_fields(fields)
    accepted, refused = [], []
    for number, row in enumerate(call_log_rows):
        row = dict(row)
        missing = [c for c in (REQUEST_TEXT, RESPONSE_JSON) if c not in row]
        if missing:
            raise ValueError(
                f"call-log row {number} has no column(s) {missing}; an extraction call log needs "
                f"{list(CALL_LOG_COLUMNS)} (write the document as request_text, the answer as response_json)."
            )
        text = row[REQUEST_TEXT] if isinstance(row[REQUEST_TEXT], str) else ""
        try:
            if row.get(STATUS, "ok") != "ok":
                raise RefusedAnswer("call_failed", f"status {row.get(STATUS)!r}, error {row.get('error')!r}")
            if row[RESPONSE_JSON] is None:
                raise RefusedAnswer("no_answer", "response_json is null")
            if not text.strip():
                raise RefusedAnswer("empty_document", "request_text is empty or whitespace")
            size = len(text.encode("utf-8"))
            if size > MAX_DOCUMENT_BYTES:
                raise RefusedAnswer("document_too_large", f"{size:,} bytes > {MAX_DOCUMENT_BYTES:,}")
            answer = parse_answer(row[RESPONSE_JSON])
            spans = answer_spans(text, answer, fields)
        except RefusedAnswer as refusal:
            refused.append({**row, "reason": refusal.reason, "detail": refusal.detail})
            continue
        accepted.append(
            {
                DOCUMENT_ID: str(row.get(DOCUMENT_ID) or row.get(CALL_ID) or number),
                CALL_ID: row.get(CALL_ID),
                TEXT: text,
                "answer": {f: _value(answer[f], f) for f in fields},
                "spans": spans,
            }
        )
    return accepted, refused


def refusal_counts(refused: Iterable[Mapping]) -> dict[str, int]:
    """{reason: rows} for every reason, zeros included, in REFUSAL_REASONS order."""
    counts = dict.fromkeys(REFUSAL_REASONS, 0)
    for row in refused:
        counts[row["reason"]] += 1
    return counts


# -- spans <-> BIO tags over windows ------------------------------------------------------------


@dataclass
class Windows:
    """The token windows of a list of documents: row i is window i (unpadded lists)."""

    input_ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]  # per token, characters in its document; (0, 0) special
    doc_index: list[int]  # which document each window reads
    labels: list[list[int]] | None = None  # per token, a label_names index or IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_windows(tokenizer, documents: Sequence[str], max_length: int, stride: int) -> Windows:
    """Overlapping windows of max_length tokens, each sharing `stride` tokens with the one before."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("extraction needs a fast tokenizer (offset mappings); load it with use_fast=True.")
    if not 0 <= stride < max_length - 2:
        raise ValueError(f"stride={stride} must be in [0, max_length - 2) (max_length={max_length}).")
    enc = tokenizer(
        list(documents),
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    offsets = [
        [(0, 0) if special else (int(s), int(e)) for (s, e), special in zip(offs, mask)]
        for offs, mask in zip(enc["offset_mapping"], enc["special_tokens_mask"])
    ]
    return Windows(
        input_ids=[list(ids) for ids in enc["input_ids"]],
        offsets=offsets,
        doc_index=[int(i) for i in enc["overflow_to_sample_mapping"]],
    )


def bio_labels(
    offsets: Sequence[tuple[int, int]], spans: Mapping[str, Sequence[tuple[int, int]]], fields: Sequence[str]
) -> list[int]:
    """Label ids of one window's tokens: B- on a span's first token, I- on the rest, O elsewhere."""
    names = label_names(fields)
    flat = sorted((s, e, f) for f, fs in spans.items() for s, e in fs)
    starts = [s for s, _, _ in flat]
    labels = []
    for ts, te in offsets:
        if ts == te:
            labels.append(IGNORE_INDEX)
            continue
        k = int(np.searchsorted(starts, te, side="left")) - 1  # the last span starting before the token ends
        if k >= 0 and flat[k][1] > ts:
            s, _, name = flat[k]
            labels.append(names.index(f"{'B' if ts <= s else 'I'}-{name}"))
        else:
            labels.append(0)
    return labels


def targets_from_answers(
    documents: Sequence[str],
    answers: Sequence[Mapping[str, object]],
    fields: Sequence[str],
    tokenizer,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    stride: int = DEFAULT_STRIDE,
) -> Windows:
    """The windows of every document with their BIO labels from the answers' spans.

    answers[i] is document i's {field: value or None} (curate's `answer`); a value that cannot
    be tagged raises RefusedAnswer, so pass curated answers.
    """
    if len(documents) != len(answers):
        raise ValueError(
            f"{len(documents)} documents but {len(answers)} answers; pass one answer per document."
        )
    spans = [answer_spans(text, answer, fields) for text, answer in zip(documents, answers)]
    windows = tokenize_windows(tokenizer, documents, max_length, stride)
    windows.labels = [
        bio_labels(offs, spans[d], fields) for offs, d in zip(windows.offsets, windows.doc_index)
    ]
    return windows


def merge_windows(
    windows: Windows, token_probs: Sequence[np.ndarray], n_documents: int
) -> list[tuple[list[tuple[int, int]], np.ndarray]]:
    """Per document: its tokens in text order and each token's probabilities, averaged over the
    windows that read it (a token near one window's edge is read with context by the next)."""
    by_doc: list[list[int]] = [[] for _ in range(n_documents)]
    for row, doc in enumerate(windows.doc_index):
        by_doc[doc].append(row)
    merged = []
    for rows in by_doc:
        if not rows:
            merged.append(([], np.zeros((0, 0))))
            continue
        offsets = np.concatenate(
            [np.asarray(windows.offsets[r], dtype=np.int64).reshape(-1, 2) for r in rows]
        )
        probs = np.concatenate([np.asarray(token_probs[r], dtype=np.float64) for r in rows])
        real = offsets[:, 0] < offsets[:, 1]  # special tokens have (0, 0)
        tokens, inverse = np.unique(offsets[real], axis=0, return_inverse=True)  # sorted by start, end
        sums = np.zeros((len(tokens), probs.shape[1]))
        np.add.at(sums, inverse.reshape(-1), probs[real])
        counts = np.bincount(inverse.reshape(-1), minlength=len(tokens))[:, None]
        merged.append(([(int(s), int(e)) for s, e in tokens], sums / counts))
    return merged


def decode_spans(
    tokens: Sequence[tuple[int, int]], probs: np.ndarray, fields: Sequence[str]
) -> dict[str, list[tuple[int, int, float]]]:
    """{field: [(start, end, confidence), ...]} from one document's token probabilities.

    A span opens at B-field (or at an I-field not continuing one: a lenient reading), grows over
    I-field, and its confidence is the mean probability of the tags that formed it.
    """
    names = label_names(fields)
    found: dict[str, list[tuple[int, int, float]]] = {f: [] for f in check_fields(fields)}
    current: list | None = None  # [field, start, end, [probs]]

    def close():
        if current is not None:
            found[current[0]].append((current[1], current[2], float(np.mean(current[3]))))

    for (ts, te), p in zip(tokens, probs):
        tag = names[int(np.argmax(p))]
        if tag == OUTSIDE:
            close()
            current = None
            continue
        kind, name = tag.split("-", 1)
        if kind == "I" and current is not None and current[0] == name:
            current[2] = te
            current[3].append(float(np.max(p)))
        else:
            close()
            current = [name, ts, te, [float(np.max(p))]]
    close()
    return found


def snap_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """The span widened to whole words: a tagger may tag "##widgets" and not "acme"; the values it
    learnt from were whole words (find_occurrences), so a part of a word is never the answer."""
    while 0 < start < len(text) and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while 0 < end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


# -- the student --------------------------------------------------------------------------------


def build_student(base_dir: Path, fields: Sequence[str], student_layers: int = 0):
    """(model, tokenizer): a token classifier on the base encoder, labels O + B-/I- per field."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from ml.train.student import _keep_layers, _quiet_head_init

    names = label_names(fields)
    with _quiet_head_init():
        model, info = AutoModelForTokenClassification.from_pretrained(
            Path(base_dir),
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # a base that is itself a tagger for other fields
        )
    body_missing = sorted(k for k in info["missing_keys"] if not k.startswith("classifier."))
    if body_missing:
        raise ValueError(
            f"{base_dir}: the checkpoint does not cover the encoder (missing {body_missing[:5]}); use a base "
            "encoder directory such as a BertModel saved with save_pretrained()."
        )
    if student_layers:
        _keep_layers(model, student_layers)
    tokenizer = AutoTokenizer.from_pretrained(Path(base_dir), local_files_only=True)
    return model, tokenizer


def loss(student_logits, teacher_targets, hard_targets=None, **_):
    """Token cross-entropy of (windows, tokens, labels) logits against the tags of the teacher's
    answers, (windows, tokens) label ids; IGNORE_INDEX tokens (special, padding) count for nothing.
    The tags are the teacher's answer itself, so hard_targets adds nothing and is not read."""
    import torch

    logits = student_logits.float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), teacher_targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


def _batches(windows: Windows, rows: Sequence[int], pad_id: int, with_labels: bool):
    import torch

    width = max(len(windows.input_ids[r]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(windows.input_ids[r])
        ids[i, :n] = torch.tensor(windows.input_ids[r])
        mask[i, :n] = 1
        if with_labels:
            labels[i, :n] = torch.tensor(windows.labels[r])
    return ids, mask, labels


def extract(
    model,
    tokenizer,
    documents: Sequence[str],
    fields: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
    stride: int = DEFAULT_STRIDE,
    *,
    batch_size: int = INFERENCE_BATCH_SIZE,
) -> list[dict[str, dict | None]]:
    """Per document, {field: {"value", "start", "end", "confidence"} or None}: the most confident span.

    Offsets are characters of the document; value == document[start:end], widened to whole words.
    """
    import torch

    fields = check_fields(fields)
    if not documents:
        return []
    windows = tokenize_windows(tokenizer, documents, max_length, stride)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    token_probs: list[np.ndarray] = [None] * len(windows)  # type: ignore[list-item]
    order = sorted(range(len(windows)), key=lambda r: len(windows.input_ids[r]))  # like lengths together
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask, _ = _batches(windows, rows, tokenizer.pad_token_id or 0, with_labels=False)
            probs = torch.softmax(
                model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1
            )
            for i, r in enumerate(rows):
                token_probs[r] = probs[i, : len(windows.input_ids[r])].cpu().numpy()
    model.train(was_training)
    results = []
    for text, (tokens, probs) in zip(documents, merge_windows(windows, token_probs, len(documents))):
        spans = decode_spans(tokens, probs, fields)
        answer: dict[str, dict | None] = {}
        for name in fields:
            best = max(spans[name], key=lambda s: s[2], default=None)
            if best is None:
                answer[name] = None
                continue
            start, end = snap_to_words(text, best[0], best[1])
            answer[name] = {
                "value": text[start:end],
                "start": start,
                "end": end,
                "confidence": round(best[2], 4),
            }
        results.append(answer)
    return results


# -- evaluation ----------------------------------------------------------------------------------


def _answer_value(item: object) -> str | None:
    if isinstance(item, Mapping):
        item = item.get("value")
    if item is None or item == "":
        return None
    return " ".join(str(item).split())


def _value_tokens(value: str) -> list[str]:
    return re.findall(r"[0-9a-z]+", value.lower())


def value_f1(predicted: str | None, truth: str | None) -> float:
    """Token F1 of one answer (SQuAD's): lowercase alphanumeric tokens, as multisets; both absent = 1."""
    if predicted is None or truth is None:
        return float(predicted is None and truth is None)
    pred, true = _value_tokens(predicted), _value_tokens(truth)
    common = sum(min(pred.count(t), true.count(t)) for t in set(pred))
    if not pred or not true:
        return float(pred == true)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(true)
    return 2 * precision * recall / (precision + recall)


def evaluate(
    predictions: Sequence[Mapping[str, object]], gold: Sequence[Mapping[str, object]], fields: Sequence[str]
) -> dict:
    """Named metrics over documents: per-field exact match and token F1, and their macro over fields.

    predictions[i] and gold[i] are document i's {field: value} (a string, None for absent, or
    extract's {"value": ...}). Exact match compares values with runs of whitespace collapsed;
    token F1 gives partial credit ("Acme Inc." for "Acme Widgets Inc." scores 0.8). A field
    absent in both counts as right; present in one only, as wrong.
    """
    fields = check_fields(fields)
    if len(predictions) != len(gold):
        raise ValueError(
            f"{len(predictions)} predictions but {len(gold)} gold answers; score the whole evaluation set."
        )
    per_field_f1, per_field_em = {}, {}
    for name in fields:
        pairs = [(_answer_value(p.get(name)), _answer_value(g.get(name))) for p, g in zip(predictions, gold)]
        per_field_em[name] = float(np.mean([p == g for p, g in pairs])) if pairs else 0.0
        per_field_f1[name] = float(np.mean([value_f1(p, g) for p, g in pairs])) if pairs else 0.0
    return {
        "field_f1_macro": float(np.mean(list(per_field_f1.values()))),
        "exact_match_macro": float(np.mean(list(per_field_em.values()))),
        "per_field_f1": per_field_f1,
        "per_field_exact_match": per_field_em,
        "n_documents": len(gold),
    }


# -- training ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractionTrainResult:
    model_dir: Path  # out_dir/model: the tagger and its tokenizer (save_pretrained, safetensors)
    steps: int
    epochs: float
    history: tuple  # per epoch: epoch, step, train_loss, val_field_f1_macro, val_exact_match_macro, windows
    best_epoch: int | None  # the epoch whose weights are the model (None: no validation split)
    best_val_field_f1: float | None
    stop_reason: str
    n_train_documents: int
    n_validation_documents: int
    n_windows: int  # training windows with at least one tag, plus the pool of those without
    train_seconds: float
    n_parameters: int


def train(
    *,
    base_dir: Path,
    documents: Sequence[str],
    answers: Sequence[Mapping[str, object]],
    fields: Sequence[str],
    cfg,
    out_dir: Path,
    stride: int = DEFAULT_STRIDE,
    negative_window_fraction: float = 0.3,
    seed: int = 42,
    max_steps: int | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> ExtractionTrainResult:
    """Fine-tune the tagger on curated answers; cfg is the workflow's ml.workflows.Training.

    Settings read from cfg: max_epochs, patience, validation_fraction (of documents, held out to
    choose the epoch by field F1), batch_size (windows), max_length (tokens per window),
    learning_rate, student_layers. Windows without any tag (most of a long contract) are
    sampled afresh each epoch, `negative_window_fraction` of them: all of them would drown the
    few tagged tokens in O and cost most of the compute. max_steps stops early, for tests.
    device "auto" trains on a CUDA GPU where there is one (fp32), else on the CPU.
    """
    import safetensors.torch
    import torch

    from ml.train import progress
    from ml.train.loop import (
        LOG_EVERY_STEPS,
        MAX_GRAD_NORM,
        PROGRESS_TASK,
        WARMUP_FRACTION,
        WEIGHT_DECAY,
        NonFiniteLossError,
        _save_best,
        _save_model_atomically,
    )

    fields = check_fields(fields)
    out_dir = Path(out_dir)
    if len(documents) != len(answers) or not documents:
        raise ValueError(
            f"{len(documents)} documents and {len(answers)} answers: pass one answer per document, at least one."
        )
    if not 0.0 <= negative_window_fraction <= 1.0:
        raise ValueError(f"negative_window_fraction={negative_window_fraction} must be in [0, 1].")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = build_student(base_dir, fields, cfg.student_layers)
    model.to(device)
    n_parameters = sum(p.numel() for p in model.parameters())

    n_val = int(round(cfg.validation_fraction * len(documents))) if len(documents) >= 5 else 0
    permuted = rng.permutation(len(documents))
    val_rows, train_rows = sorted(permuted[:n_val].tolist()), sorted(permuted[n_val:].tolist())
    windows = targets_from_answers(
        [documents[i] for i in train_rows],
        [answers[i] for i in train_rows],
        fields,
        tokenizer,
        max_length=cfg.max_length,
        stride=stride,
    )
    tagged = [i for i, labels in enumerate(windows.labels) if any(lab > 0 for lab in labels)]
    untagged = [i for i, labels in enumerate(windows.labels) if not any(lab > 0 for lab in labels)]
    n_untagged = math.ceil(negative_window_fraction * len(untagged))
    per_epoch = len(tagged) + n_untagged
    if per_epoch == 0:
        raise ValueError("no training windows: every answer is empty and negative_window_fraction is 0.")
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.max_epochs * steps_per_epoch))
    stop_step = total_steps if max_steps is None else min(max_steps, total_steps)
    warmup_steps = max(1, int(WARMUP_FRACTION * total_steps))

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        fused=True,  # one kernel over all parameters, as in ml/train/loop.py
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup_steps
            if step < warmup_steps
            else max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
        ),
    )
    pad_id = tokenizer.pad_token_id or 0
    ckpt_root = out_dir / "checkpoints"
    log(
        f"training on {len(train_rows)} documents ({len(tagged)} tagged windows + {n_untagged} of "
        f"{len(untagged)} untagged per epoch), validating on {len(val_rows)}; {total_steps} steps"
    )

    step, history, stop_reason, started = 0, [], "", time.perf_counter()
    model.train()
    while step < stop_step and not stop_reason:
        epoch = step // steps_per_epoch + 1
        sampled = rng.choice(untagged, size=n_untagged, replace=False).tolist() if n_untagged else []
        order = rng.permutation(tagged + sampled).tolist()
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            if step >= stop_step:
                break
            ids, mask, labels = _batches(
                windows, order[start : start + cfg.batch_size], pad_id, with_labels=True
            )
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            step_loss = loss(logits, labels.to(device))
            if not math.isfinite(step_loss.item()):
                raise NonFiniteLossError(
                    f"loss is {step_loss.item()} at step {step + 1}; lower training.learning_rate "
                    f"(now {cfg.learning_rate:g})."
                )
            optimizer.zero_grad(set_to_none=True)
            step_loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(step_loss.item())
            if step % LOG_EVERY_STEPS == 0 or step == stop_step:
                # The same snapshot as the classifier's loop: `mlops run` shows step/total, speed, ETA.
                elapsed = time.perf_counter() - started
                windows_per_s = step * cfg.batch_size / max(elapsed, 1e-9)
                eta_s = (stop_step - step) * elapsed / step
                log(
                    f"step {step}/{total_steps} loss {np.mean(losses[-LOG_EVERY_STEPS:]):.4f} "
                    f"{windows_per_s:.1f} windows/s eta {eta_s:.0f}s"
                )
                progress.report(
                    task=PROGRESS_TASK,
                    step=step,
                    total_steps=total_steps,
                    epoch=step / steps_per_epoch,
                    samples_per_s=round(windows_per_s, 1),
                    eta_s=round(eta_s),
                    val_field_f1_macro=history[-1].get("val_field_f1_macro") if history else None,
                )
        entry = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)), "windows": len(order)}
        if val_rows:
            val_docs = [documents[i] for i in val_rows]
            predicted = extract(model, tokenizer, val_docs, fields, cfg.max_length, stride)
            scores = evaluate(predicted, [answers[i] for i in val_rows], fields)
            entry["val_field_f1_macro"] = scores["field_f1_macro"]
            entry["val_exact_match_macro"] = scores["exact_match_macro"]
            model.train()
        history.append(entry)
        log(
            f"epoch {epoch}: loss {entry['train_loss']:.4f}"
            + (f", validation field F1 {entry['val_field_f1_macro']:.4f}" if val_rows else "")
        )
        if val_rows:
            best = max(history, key=lambda h: h["val_field_f1_macro"])  # ties: the earlier epoch
            if best is entry:
                _save_best(ckpt_root, model, entry)
            if cfg.patience > 0 and epoch - best["epoch"] >= cfg.patience:
                stop_reason = f"early stop: no better validation field F1 for {epoch - best['epoch']} epochs"
    if not stop_reason:
        stop_reason = (
            f"max_steps={max_steps} reached"
            if step < total_steps
            else f"max_epochs={cfg.max_epochs:g} reached"
        )

    best = max(history, key=lambda h: h["val_field_f1_macro"]) if val_rows else None
    if best is not None:
        safetensors.torch.load_model(model, ckpt_root / "best" / "model.safetensors", device=device)
    model_dir = out_dir / "model"
    _save_model_atomically(model, tokenizer, model_dir)
    return ExtractionTrainResult(
        model_dir=model_dir,
        steps=step,
        epochs=step / steps_per_epoch,
        history=tuple(history),
        best_epoch=best["epoch"] if best else None,
        best_val_field_f1=best["val_field_f1_macro"] if best else None,
        stop_reason=stop_reason,
        n_train_documents=len(train_rows),
        n_validation_documents=len(val_rows),
        n_windows=len(windows),
        train_seconds=time.perf_counter() - started,
        n_parameters=n_parameters,
    )


def load_tagger(model_dir: Path):
    """(model, tokenizer) of a trained tagger directory, for inference (safetensors only)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(
        Path(model_dir), local_files_only=True, use_safetensors=True
    )
    return model.eval(), AutoTokenizer.from_pretrained(Path(model_dir), local_files_only=True)


def latency_predictor(
    model_dir: str, fields: list[str], max_length: int = DEFAULT_MAX_LENGTH, stride: int = DEFAULT_STRIDE
):
    """A predict(texts) for ml.evaluate.latency.measure_isolated: one document per call, every window."""
    import torch

    torch.set_num_threads(1)
    model, tokenizer = load_tagger(Path(model_dir))

    def predict(texts: list[str]):
        return extract(model, tokenizer, texts, fields, max_length, stride)

    return predict


# -- distill, registry and serving ----------------------------------------------------------------


class BadDocument(ValueError):
    """A document the served model cannot read; `reason` is a REFUSAL_REASONS key (or not_a_string)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def stride_for(max_length: int) -> int:
    """Tokens two neighbouring windows share: DEFAULT_STRIDE, or a quarter of a short window."""
    return min(DEFAULT_STRIDE, max(0, max_length // 4))


def fields_of(id2label: Mapping) -> list[str]:
    """The fields a trained tagger finds, in order, from its config's id2label (O, B-f, I-f, ...)."""
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    fields = [n[2:] for n in names if n.startswith("B-")]
    if not fields or names != label_names(fields):
        raise ValueError(
            f"labels {names[:5]}... are not O + B-/I- per field; this is not an extraction tagger."
        )
    return fields


def check_documents(documents: object, *, where: str = "documents") -> list[str]:
    """The documents of a request, each a non-empty string of at most MAX_DOCUMENT_BYTES; BadDocument otherwise."""
    if not isinstance(documents, (list, tuple)):
        raise BadDocument("not_a_list", f"{where} is a {type(documents).__name__}; send a list of documents")
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise BadDocument(
                "not_a_string", f"{where}[{i}] is a {type(doc).__name__}; send the document's text"
            )
        if not doc.strip():
            raise BadDocument("empty_document", f"{where}[{i}] is empty; send a document with text")
        size = len(doc.encode("utf-8"))
        if size > MAX_DOCUMENT_BYTES:
            raise BadDocument(
                "document_too_large", f"{where}[{i}] is {size:,} bytes, over {MAX_DOCUMENT_BYTES:,}; split it"
            )
    return list(documents)


def gold_answers(frame, fields: Sequence[str]) -> list[dict]:
    """The true {field: value or None} of each row of an evaluation set: a `values` column (a mapping
    or its JSON, as ml/demo_contracts.py writes gold.jsonl), or one column per field."""
    fields = check_fields(fields)
    if "values" in frame.columns:
        rows = [json.loads(v) if isinstance(v, str) else dict(v) for v in frame["values"]]
    elif set(fields) <= set(frame.columns):
        rows = frame[fields].to_dict("records")
    else:
        raise ValueError(
            f"the evaluation set has columns {list(frame.columns)}; an extraction gold set needs text and "
            f"`values` (field -> value) or one column per field {fields}."
        )
    return [{f: _value(row.get(f), f) for f in fields} for row in rows]


def log_served_model(
    variant: str, model_dir, artifact, *, max_length: int, name: str = "model", step: int = 0
):
    """Log the tagger as the MLflow pyfunc of ml/serving_extractor.py in the active run."""
    from ml.export import log_served_extractor

    return log_served_extractor(variant, model_dir, artifact, max_length=max_length, name=name, step=step)


def score(model_dir, texts: Sequence[str], *, max_length: int = DEFAULT_MAX_LENGTH, threads: int = 0):
    """The served answer for each document (SERVING_OUTPUT), by the served code on the torch weights."""
    import pandas as pd

    from ml.serving_extractor import StudentExtractor

    served = StudentExtractor()
    served.load(model_dir, max_length=max_length, stride=stride_for(max_length), threads=threads)
    return served.predict(None, pd.DataFrame({TEXT: list(texts)}))


# -- data contract and batch gate (ingest_validate) --
#
# A dropped file is a call log (request_text, response_json[, status], as the proxy records the
# frontier's answers) or a gold file (text and `values`: {field: value or null}, or one column per
# field). `normalise` brings either to the rows curation reads; the batch gate (GX) judges those
# rows as received; `curate_batch` splits them into the accepted dataset rows and the refused
# ones, each refused row with its REFUSAL_REASONS key. A batch is quarantined only when the gate
# fails: a refused answer is a teacher error, counted and kept (DatasetStore's refused.parquet),
# not a bad batch.

VALUES = "values"  # the dataset's answer: {field: value or null} as JSON, field order (gold_answers reads it)
SOURCE, TEACHER_VERSION = "source", "teacher_version"  # as ml/data/contract.py names them
# The versioned dataset's rows (train.parquet, eval.parquet) and what makes one a duplicate.
DATASET_COLUMNS = (DOCUMENT_ID, TEXT, VALUES, SOURCE, TEACHER_VERSION)
DATASET_KEY = (TEXT, VALUES)
# The rows curation reads, as the gate judges them; the gate needs the first two.
RECEIVED_COLUMNS = (DOCUMENT_ID, TEXT, RESPONSE_JSON, STATUS, SOURCE, TEACHER_VERSION)
GATE_REQUIRED = (TEXT, RESPONSE_JSON)
TEXT_BYTES = "text_bytes"  # beside the gate's rows only: GX measures characters, the limit is bytes
REFUSED_COLUMNS = (DOCUMENT_ID, CALL_ID, TEXT, RESPONSE_JSON, STATUS, "reason", "detail")
ANSWER_COLUMNS = (VALUES, "answer")  # a gold file's answer column, by either name


def default_gate_metrics(gate) -> tuple:
    """Without gate.metrics: field F1 (macro) at least 0.6, and at most 0.02 below the champion's."""
    from ml.workflows import MetricRule

    return (MetricRule("field_f1_macro", min=0.6, max_drop=0.02, what=METRICS["field_f1_macro"]),)


def _missing(df, columns: Sequence[str], origin: str, fix: str) -> None:
    from ml.data.contract import ContractError, describe_columns

    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(f"{origin}: missing column(s) {missing}; {describe_columns(df)}. {fix}")


def _as_json(value: object) -> object:
    # A gold answer written as an object (a JSONL file's dict) becomes the JSON text a call log holds.
    if isinstance(value, Mapping):
        return json.dumps(dict(value), ensure_ascii=False)
    return value


def _cell(value: object) -> object:
    # A blank cell of a one-column-per-field file (CSV, or the export's annotator sheet) reads as NaN:
    # it means "absent", so null, never the string "nan" that no document contains.
    return None if isinstance(value, float) and math.isnan(value) else value


def normalise(df, wf, *, source: str = "gold", origin: str = "file"):
    """The rows curation reads (RECEIVED_COLUMNS), from a call log or a gold file.

    A call log has request_text and response_json (the answer, JSON text; null for a failed call)
    and optionally status, document_id or call_id, model_version; its rows are the teacher's. A gold
    file has the workflow's text_column and the answer as `values` (or `answer`: an object or its
    JSON) or one column per declared field; its rows are `source`'s. ContractError names a missing
    column and the fix.
    """
    import pandas as pd

    fields = check_fields(wf.fields)
    n = len(df)
    if REQUEST_TEXT in df.columns or RESPONSE_JSON in df.columns:
        _missing(
            df,
            (REQUEST_TEXT, RESPONSE_JSON),
            origin,
            "An extraction call log records the document as request_text and the answer as response_json.",
        )
        ids = (
            df[DOCUMENT_ID]
            if DOCUMENT_ID in df.columns
            else df.get(CALL_ID, pd.Series(range(n), index=df.index))
        )
        out = {
            DOCUMENT_ID: ids,
            TEXT: df[REQUEST_TEXT],
            RESPONSE_JSON: df[RESPONSE_JSON].map(_cell),
            STATUS: df[STATUS] if STATUS in df.columns else "ok",
            SOURCE: "teacher",
            TEACHER_VERSION: df["model_version"].astype(str) if "model_version" in df.columns else "",
        }
    else:
        answer = next((c for c in ANSWER_COLUMNS if c in df.columns), None)
        _missing(
            df,
            (wf.text_column, *([] if answer else fields)),
            origin,
            f"A gold extraction file has the text ({wf.text_column!r}, the workflow's text_column) and the "
            f"answers as `values` ({{field: value or null}}) or one column per field {fields}.",
        )
        if answer:
            answers = df[answer].map(_as_json)
        else:
            answers = pd.Series(
                [
                    json.dumps({f: _cell(row[f]) for f in fields}, ensure_ascii=False, default=str)
                    for _, row in df.iterrows()
                ],
                index=df.index,
            )
        out = {
            DOCUMENT_ID: df[DOCUMENT_ID]
            if DOCUMENT_ID in df.columns
            else pd.Series(range(n), index=df.index),
            TEXT: df[wf.text_column],
            RESPONSE_JSON: answers,
            STATUS: "ok",
            SOURCE: source,
            TEACHER_VERSION: "",
        }
    frame = pd.DataFrame(out, columns=list(RECEIVED_COLUMNS))
    frame[DOCUMENT_ID] = frame[DOCUMENT_ID].astype(str)
    return frame.reset_index(drop=True)


def expectations(wf) -> list:
    """The batch gate's Great Expectations suite, on normalise's rows with TEXT_BYTES beside them.

    Shared with classification's gate (ml/validation/suite.py, same check names and messages):
    the text exists, is a string, not null, not blank, and rarely repeated; at least min_rows rows.
    Extraction's own: the answer column exists and holds JSON text, and no document is over
    MAX_DOCUMENT_BYTES. classification's min_text_chars/max_text_chars do not apply: a contract
    is pages long.
    """
    import great_expectations.expectations as gxe

    from ml.validation.suite import CONTENT, EXISTS, STRUCTURE, WORKFLOWS_FILE, tag, text_checks

    text = text_checks(wf.validation)
    return [
        text["text_exists"],
        tag(
            gxe.ExpectColumnToExist(column=RESPONSE_JSON),
            "response_json_exists",
            EXISTS,
            what="the call log has no response_json column",
            fix="record the frontier's answer as response_json (JSON text) and re-submit",
        ),
        text["text_is_string"],
        text["text_not_null"],
        tag(
            gxe.ExpectColumnValuesToBeOfType(column=RESPONSE_JSON, type_="str"),
            "response_json_is_string",
            STRUCTURE,
            what="answers are not JSON text (a string)",
            fix="write each answer as the JSON text the frontier returned (null for a failed call), then re-submit",
        ),
        text["row_count"],
        text["text_not_blank"],
        text["text_duplicates"],
        tag(
            gxe.ExpectColumnValuesToBeBetween(column=TEXT_BYTES, max_value=MAX_DOCUMENT_BYTES),
            "text_max_bytes",
            CONTENT,
            what=f"documents are over {MAX_DOCUMENT_BYTES:,} UTF-8 bytes (sizes shown)",
            fix=f"split or drop documents over {MAX_DOCUMENT_BYTES:,} bytes (a dump, not a contract); "
            f"the limit is MAX_DOCUMENT_BYTES, not a setting in {WORKFLOWS_FILE}",
        ),
    ]


def validate_batch(df, wf, *, batch_id: str, docs_dir=None, refusals: Mapping | None = None, **_):
    """The batch gate on normalise's rows: a ValidationReport (ml/validation/suite.py), never an
    exception for bad data. `refusals` (curation's {reason: rows}) goes into its statistics: a
    refused answer is counted, never a reason to quarantine the batch. Classification's label
    arguments (labels, reference counts) do not apply and are ignored."""
    import pandas as pd

    from ml.validation import suite

    fields = check_fields(wf.fields)
    suite._check_arguments(fields, wf.validation, None, batch_id)
    sizes = (
        df[TEXT].map(lambda t: float(len(t.encode("utf-8"))) if isinstance(t, str) else np.nan)
        if TEXT in df.columns and not df.columns.duplicated().any()
        else pd.Series(np.nan, index=df.index)
    )
    frame = df.assign(**{TEXT_BYTES: sizes.astype(float)})
    run = suite.run_gate(
        frame,
        expectations(wf),
        required=GATE_REQUIRED,
        batch_id=batch_id,
        docs_dir=docs_dir,
        explain=lambda result: suite._gx_failure(result, frame, fields, wf.validation),
    )
    if isinstance(run, suite.ValidationReport):
        return run
    return run.report(batch_id, refusals=dict(refusals or {}))


def _masked_answer(value: object, masker) -> object:
    # The answer's values are masked as the text is, so that a masked value still occurs in it.
    return masker(value) if isinstance(value, str) else value


def curate_batch(wf, df, *, path: Path, sha256: str, masker=None):
    """A dropped file read (ml/data/ingest.py read_batch's `curate`): an ml.data.ingest.Batch whose
    `received` is what the gate judges, `frame` the accepted rows (DATASET_COLUMNS, deduplicated)
    and `refused` every refused row with its reason; stats count both (refusals by reason)."""
    import pandas as pd

    from ml.data.ingest import Batch, call_log_stats

    fields = check_fields(wf.fields)
    received = normalise(df, wf, source="gold", origin=path.name)
    if masker is not None:
        received[TEXT] = received[TEXT].map(lambda t: masker(t) if isinstance(t, str) else t)
        received[RESPONSE_JSON] = received[RESPONSE_JSON].map(lambda v: _masked_answer(v, masker))
    is_log = REQUEST_TEXT in df.columns
    rows = [{**row, REQUEST_TEXT: row[TEXT], "_row": i} for i, row in enumerate(received.to_dict("records"))]
    accepted, refused = curate(rows, fields)
    kept = sorted(set(range(len(rows))) - {r["_row"] for r in refused})
    frame = pd.DataFrame(
        [
            {
                DOCUMENT_ID: a[DOCUMENT_ID],
                TEXT: a[TEXT],
                VALUES: json.dumps(a["answer"], ensure_ascii=False),
                SOURCE: rows[i][SOURCE],
                TEACHER_VERSION: rows[i][TEACHER_VERSION],
            }
            for a, i in zip(accepted, kept)
        ],
        columns=list(DATASET_COLUMNS),
    )
    refused_frame = pd.DataFrame(
        [
            {
                **{c: r.get(c) for c in REFUSED_COLUMNS},
                RESPONSE_JSON: None if r.get(RESPONSE_JSON) is None else str(_as_json(r[RESPONSE_JSON])),
            }
            for r in refused
        ],
        columns=list(REFUSED_COLUMNS),
    ).astype({c: "object" for c in REFUSED_COLUMNS})
    counts = refusal_counts(refused)
    stats = (
        call_log_stats(df.assign(status=received[STATUS].to_numpy())) if is_log else {"rows_read": len(df)}
    )
    deduplicated = frame.drop_duplicates(subset=list(DATASET_KEY)).reset_index(drop=True)
    stats |= {
        "accepted": len(accepted),
        "refused": len(refused),
        "refusals": {k: v for k, v in counts.items() if v},
        "teacher_errors": sum(v for k, v in counts.items() if k in TEACHER_ERROR_REASONS),
        "duplicates_removed": len(frame) - len(deduplicated),
        "rows": len(deduplicated),
    }
    return Batch(
        path=path,
        sha256=sha256,
        kind="call_log" if is_log else "labelled",
        frame=deduplicated,
        stats=stats,
        received=received,
        columns=DATASET_COLUMNS,
        key=DATASET_KEY,
        refused=refused_frame,
    )
