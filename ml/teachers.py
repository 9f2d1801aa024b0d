"""Where the student's targets come from.

- call_log: the frontier model's recorded answers. Where the log holds probabilities (from
  logprobs) they are the soft target; otherwise the answer is a one-hot target.
- labels: the labels in the data are the targets (human-labelled files): one-hot, so training
  is plain cross-entropy (no temperature, no soft term; see ml/train/loop.py).
- local_model: a larger local Hugging Face classifier scores the texts (soft targets).
- openai: a live OpenAI-compatible API (ml/frontier/client.py) labels every training text now,
  its answer constrained to the workflow's labels by the prompt and mapped back to a label;
  where the API returns logprobs they become the soft target. It is the teacher to use when
  the frontier model changed and the recorded answers are stale, or for texts never sent.

Every teacher returns the same thing: an (N, C) probability matrix over the student's labels,
hard labels, and a description (kind, model, version) recorded with the model version.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data import contract
from ml.train.student import TeacherMismatchError


@dataclass(frozen=True)
class Targets:
    probs: np.ndarray  # (N, C), rows sum to 1
    hard: np.ndarray  # (N,) int64: gold label where the row is gold, else the teacher's argmax
    teacher: dict  # kind, model, version


def _row_probs(label: str, probs_json: str, index: dict[str, int]) -> np.ndarray:
    row = np.zeros(len(index))
    try:
        given = json.loads(probs_json) if probs_json else {}
        if not isinstance(given, dict):
            raise ValueError("not an object")
        given = {k: float(v) for k, v in given.items() if k in index}
    except (TypeError, ValueError):
        raise TeacherMismatchError(
            f"teacher_probs {probs_json[:80]!r} is not a JSON object of label: probability; "
            "fix the call log's label_probs, or leave it empty for a one-hot target."
        ) from None
    if not given:
        row[index[label]] = 1.0
        return row
    for k, v in given.items():
        row[index[k]] = v
    # The log keeps the top few labels only; spread the rest of the mass over the others.
    rest = max(0.0, 1.0 - row.sum())
    others = row == 0
    if others.any():
        row[others] = rest / others.sum()
    return row / row.sum()


def recorded_targets(df: pd.DataFrame, label_names: Sequence[str]) -> Targets:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(map(str, set(df[contract.LABEL]) - set(index)))
    if unknown:
        raise TeacherMismatchError(
            f"the recorded teacher answers labels the student does not have: {unknown}; "
            "add them to the workflow's labels or re-validate the data."
        )
    # Parquet gives None and CSV gives NaN where a row has no probabilities: both mean one-hot.
    probs = (
        np.stack(
            [
                _row_probs(lab, p if isinstance(p, str) else "", index)
                for lab, p in zip(df[contract.LABEL], df[contract.TEACHER_PROBS])
            ]
        )
        if len(df)
        else np.zeros((0, len(index)))
    )
    hard = np.array([index[lab] for lab in df[contract.LABEL]], dtype=np.int64)
    versions = sorted({v for v in df[contract.TEACHER_VERSION] if isinstance(v, str) and v})
    return Targets(probs, hard, {"kind": "call_log", "version": ",".join(versions) or "unknown"})


def label_targets(df: pd.DataFrame, label_names: Sequence[str]) -> Targets:
    """One-hot targets from the data's own labels; a label outside label_names is a mismatch."""
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(map(str, set(df[contract.LABEL]) - set(index)))
    if unknown:
        raise TeacherMismatchError(
            f"the training set has labels the workflow does not declare: {unknown[:10]}; "
            "add them to the workflow's labels or re-validate the data."
        )
    hard = np.array([index[lab] for lab in df[contract.LABEL]], dtype=np.int64)
    probs = np.zeros((len(df), len(index)))
    probs[np.arange(len(df)), hard] = 1.0
    return Targets(probs, hard, {"kind": "labels", "version": "data"})


def local_model_targets(
    df: pd.DataFrame,
    label_names: Sequence[str],
    model_dir: Path,
    *,
    max_length: int = 64,
    device: str = "cpu",
) -> Targets:
    from ml.evaluate.serving import load_classifier, predict_probs
    from ml.train.student import fingerprint_model_dir

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(
            f"teacher model {model_dir}: no config.json there; set teacher.model in the workflow "
            "to a directory written by save_pretrained() of a sequence classifier."
        )
    model, tokenizer = load_classifier(Path(model_dir), device)
    teacher_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(teacher_labels) != sorted(label_names):
        missing = sorted(set(label_names) - set(teacher_labels))
        extra = sorted(set(teacher_labels) - set(label_names))
        raise TeacherMismatchError(
            f"teacher {model_dir} labels differ from the student's: missing {missing}, extra {extra}; "
            "use a teacher trained on the workflow's labels, or change the workflow's labels."
        )
    gold = (df[contract.SOURCE] == "gold").to_numpy()
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(map(str, set(df.loc[gold, contract.LABEL]) - set(index)))
    if unknown:
        raise TeacherMismatchError(
            f"gold labels the student does not have: {unknown}; "
            "add them to the workflow's labels or re-validate the data."
        )
    raw = predict_probs(model, tokenizer, list(df[contract.TEXT]), max_length=max_length, device=device)
    order = [teacher_labels.index(name) for name in label_names]  # teacher column order → student's
    probs = raw[:, order]
    hard = probs.argmax(axis=1)
    hard[gold] = [index[lab] for lab in df.loc[gold, contract.LABEL]]
    return Targets(
        probs,
        hard.astype(np.int64),
        {
            "kind": "local_model",
            "model": str(model_dir),
            "version": fingerprint_model_dir(Path(model_dir))[:16],
        },
    )


# A live OpenAI-compatible API ----------------------------------------------------------------

OPENAI_TOP_LOGPROBS = 20  # the most alternatives the OpenAI API returns per token
# Up to this share of texts may come back unusable (a failed call, an answer outside the labels);
# they keep their recorded label as a one-hot target. More means the teacher is not answering
# the task, and labelling stops as soon as that is certain, before more calls are paid for.
OPENAI_MAX_UNUSABLE_SHARE = 0.05


class TeacherUnavailableError(RuntimeError):
    """The live teacher API failed on too many calls to label the training set."""


def openai_system_prompt(label_names: Sequence[str]) -> str:
    return (
        "Classify the user's message. Answer with exactly one of these labels and nothing else: "
        + ", ".join(label_names)
        + "."
    )


def _answer_probs(data: dict, answer: str, label_names: Sequence[str]) -> dict[str, float]:
    """{label: probability} from a chat completion's logprobs; {} when it has none.

    The answer's own probability is that of its whole token sequence. Alternatives come from
    the first token's top_logprobs: one that starts exactly one label counts for that label;
    one that starts several ("billing" for billing_refund and billing_invoice) cannot be
    split between them and is left to the spread of the remaining mass (see _row_probs).
    """
    try:
        tokens = data["choices"][0]["logprobs"]["content"]
        answer_logprob = sum(float(t["logprob"]) for t in tokens)
        alternatives = tokens[0].get("top_logprobs") or []
    except (KeyError, IndexError, TypeError, ValueError):
        return {}
    probs = {answer: math.exp(answer_logprob)}
    first = str(tokens[0].get("token", "")).strip().casefold()
    for alt in alternatives:
        token = str(alt.get("token", "")).strip().casefold()
        if not token or token == first:
            continue
        starts = [name for name in label_names if name.casefold().startswith(token)]
        if len(starts) == 1 and starts[0] != answer:
            probs[starts[0]] = probs.get(starts[0], 0.0) + math.exp(float(alt["logprob"]))
    return probs


async def _label_texts(client, texts: Sequence[str], body_for, concurrency: int, give_up_after: int) -> list:
    """One completion per text, at most `concurrency` in flight; stops early past give_up_after bad ones."""
    from ml.frontier.client import parse_label

    results: list = [None] * len(texts)
    semaphore, bad = asyncio.Semaphore(concurrency), 0
    stop = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal bad
        async with semaphore:
            if stop.is_set():
                return
            call = await client.complete(body_for(texts[i]))
            label = parse_label(call.response_text, client.labels) if call.status == "ok" else None
            results[i] = (call, label)
            if label is None:
                bad += 1
                if bad > give_up_after:
                    stop.set()

    try:
        await asyncio.gather(*(one(i) for i in range(len(texts))))
    finally:
        await client.aclose()
    return results


def openai_targets(
    df: pd.DataFrame,
    label_names: Sequence[str],
    *,
    model: str,
    base_url: str,
    api_key: str,
    concurrency: int = 8,
    timeout_s: float = 30.0,
    max_retries: int = 2,
    logprobs: bool = True,
) -> Targets:
    """Targets from a live OpenAI-compatible chat completions API; see the module docstring."""
    from ml.frontier.client import FrontierClient

    if not model:
        raise ValueError(
            "teacher.model is empty; for an openai teacher set it to the API's model name "
            "(e.g. gpt-4o-mini) in the workflows file."
        )
    label_names = [str(n) for n in label_names]
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(map(str, set(df[contract.LABEL]) - set(index)))
    if unknown:
        raise TeacherMismatchError(
            f"the training set has labels the student does not have: {unknown}; "
            "add them to the workflow's labels or re-validate the data."
        )
    client = FrontierClient(
        base_url,
        api_key,
        workflow="teacher",
        labels=label_names,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )
    system = openai_system_prompt(label_names)

    def body_for(text: str) -> dict:
        body = {
            "model": model,
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
        if logprobs:
            body.update(logprobs=True, top_logprobs=OPENAI_TOP_LOGPROBS)
        return body

    texts = list(df[contract.TEXT])
    give_up_after = int(OPENAI_MAX_UNUSABLE_SHARE * len(texts))
    results = asyncio.run(_label_texts(client, texts, body_for, concurrency, give_up_after))

    probs, hard = np.zeros((len(texts), len(label_names))), np.zeros(len(texts), dtype=np.int64)
    failed, off_label, with_logprobs = Counter(), Counter(), 0
    versions, tokens_in, tokens_out = Counter(), 0, 0
    for i, (result, recorded) in enumerate(zip(results, df[contract.LABEL])):
        call, label = result if result is not None else (None, None)
        if call is not None:
            tokens_in, tokens_out = tokens_in + call.tokens_in, tokens_out + call.tokens_out
            if call.model_version:
                versions[call.model_version] += 1
        if label is None:  # not asked (stopped early), failed, or answered outside the labels
            if call is not None and call.status != "ok":
                failed[call.error or call.status] += 1
            elif call is not None:
                off_label[(call.response_text or "").strip()[:40]] += 1
            probs[i, index[recorded]], hard[i] = 1.0, index[recorded]
            continue
        given = _answer_probs(json.loads(call.body), label, label_names) if logprobs else {}
        with_logprobs += bool(given)
        probs[i] = _row_probs(label, json.dumps(given), index)
        hard[i] = index[label]

    n_bad = sum(failed.values()) + sum(off_label.values())
    if n_bad > give_up_after or any(r is None for r in results):
        asked = sum(r is not None for r in results)
        if sum(off_label.values()) >= sum(failed.values()):
            raise TeacherMismatchError(
                f"teacher {model!r} at {base_url} answered outside the workflow's labels on {sum(off_label.values())} "
                f"of {asked} texts asked (most common: {off_label.most_common(3)}); more than "
                f"{OPENAI_MAX_UNUSABLE_SHARE:.0%} of {len(texts)} is not a teacher of this label set. Use a model "
                "that follows the label instruction, or fix the workflow's labels."
            )
        raise TeacherUnavailableError(
            f"teacher {model!r} at {base_url} failed on {sum(failed.values())} of {asked} calls "
            f"({dict(failed)}) after {max_retries} retries each; more than {OPENAI_MAX_UNUSABLE_SHARE:.0%} of "
            f"{len(texts)}. Check MLOPS_FRONTIER_BASE_URL / MLOPS_FRONTIER_API_KEY and the provider's status, "
            "then retry the task."
        )
    gold = (df[contract.SOURCE] == "gold").to_numpy() if contract.SOURCE in df else np.zeros(len(df), bool)
    hard[gold] = [index[lab] for lab in df.loc[gold, contract.LABEL]]
    return Targets(
        probs,
        hard,
        {
            "kind": "openai",
            "model": model,
            "version": versions.most_common(1)[0][0] if versions else "unknown",
            "n_calls": len(texts),
            "n_unusable": n_bad,
            "n_with_logprobs": with_logprobs,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
        },
    )


def teacher_targets(
    teacher_kind: str,
    teacher_model: str,
    df: pd.DataFrame,
    label_names: Sequence[str],
    *,
    max_length: int = 64,
    device: str = "cpu",
    base_url: str | None = None,
    api_key: str | None = None,
) -> Targets:
    """The kind's targets. An openai teacher's URL and key default to MLOPS_FRONTIER_BASE_URL / _API_KEY."""
    if teacher_kind == "call_log":
        targets = recorded_targets(df, label_names)
        return Targets(targets.probs, targets.hard, {**targets.teacher, "model": teacher_model})
    if teacher_kind == "labels":
        return label_targets(df, label_names)
    if teacher_kind == "local_model":
        return local_model_targets(df, label_names, Path(teacher_model), max_length=max_length, device=device)
    if teacher_kind == "openai":
        if base_url is None or api_key is None:
            from ml.config import load_settings

            settings = load_settings()
            base_url = settings.frontier_base_url if base_url is None else base_url
            api_key = settings.frontier_api_key if api_key is None else api_key
        return openai_targets(df, label_names, model=teacher_model, base_url=base_url, api_key=api_key)
    raise TeacherMismatchError(
        f"unknown teacher kind {teacher_kind!r}; use call_log, labels, local_model or openai."
    )
