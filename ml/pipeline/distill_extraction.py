"""The distill steps of a `task: extraction` workflow (ml/pipeline/distill.py hands them over).

1. `prepare_targets`: the accepted call log (the DVC-versioned training set) curated into the
   teacher's answers (ml/tasks/extraction.py `curate`); every refused row is counted by reason
   and logged to the run's MLflow run (teacher errors apart from failed calls).
2. `train`: the token-classifier student on those answers (`extraction.train`), its settings the
   workflow's `training:` section, checkpoints and safetensors under the run folder.
3. `evaluate_and_gate`: challenger and champion on the frozen gold set: field F1 and exact
   match (macro and per field), latency per document at batch 1 by the one latency method, cost
   per 1,000 documents; the gate judges the workflow's `gate.metrics`. The served variant is the
   torch fp32 tagger (no ONNX export of the tagger yet).
4. `register_challenger`: the tagger as the pyfunc of ml/serving_extractor.py, registered by
   distill's own protocol (ml/pipeline/distill.py `_register_version`).
Approval and promotion are distill's, unchanged: they never look at the task.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ml import registry
from ml.config import Settings
from ml.costs.capture import report_device
from ml.evaluate.latency import measure_isolated
from ml.evaluate.serving import dir_size_bytes, measure_latency
from ml.pipeline import distill
from ml.pipeline.ingest_validate import store_for
from ml.tasks import extraction as ex
from ml.workflows import ConfigurationError, Workflow

TARGETS = "targets.json"
VARIANT = "torch_fp32"


def _call_log_rows(frame) -> list[dict]:
    """The training set's rows as call-log rows. ingest_validate stores the curated rows as the
    data contract names them (the document as `text`, the answer's JSON as `values`); a raw call
    log (request_text, response_json, status) is read as it is. Curating them again here is cheap
    and refuses nothing ingest accepted."""
    renames = {ex.TEXT: ex.REQUEST_TEXT, "values": ex.RESPONSE_JSON}
    frame = frame.rename(columns={a: b for a, b in renames.items() if a in frame and b not in frame})
    return frame.to_dict("records")


def _ingest_refusals(store) -> dict[str, int]:
    """{reason: rows} that ingest_validate refused and kept beside the data (refused.parquet)."""
    import pandas as pd

    path = store.root / "refused.parquet"
    if not path.exists():
        return {}
    return {
        str(k): int(v) for k, v in pd.read_parquet(path, columns=["reason"])["reason"].value_counts().items()
    }


def _teacher(wf: Workflow, rows: list[dict]) -> dict:
    versions = sorted(
        {
            str(v)
            for r in rows
            for v in (r.get("teacher_version"), r.get("model_version"))
            if isinstance(v, str) and v
        }
    )
    return {"kind": "call_log", "model": wf.teacher.model, "version": ",".join(versions) or "unknown"}


def check_workflow(wf: Workflow) -> None:
    """Settings an extraction distill run cannot honour, refused at every step before any work."""
    if wf.teacher.kind != "call_log":
        raise ConfigurationError(
            f"{wf.name}: teacher.kind {wf.teacher.kind!r}; an extraction workflow learns from the frontier's "
            "recorded answers: set teacher: {kind: call_log}."
        )
    if not isinstance(wf.training.student_layers, int) or wf.training.search is not None:
        raise ConfigurationError(
            f"{wf.name}: training.student_layers: auto and training.search choose among classifiers; an "
            "extraction workflow declares student_layers as a number (0 = all) and no search."
        )
    if tuple(wf.serving.variants) != ("auto",) and VARIANT not in wf.serving.variants:
        raise ConfigurationError(
            f"{wf.name}: serving.variants {list(wf.serving.variants)}: an extraction tagger is served as "
            f"{VARIANT} only (no ONNX export of it yet); declare serving: {{variants: [{VARIANT}]}} or auto."
        )


def prepare_targets(settings: Settings, wf: Workflow, run_key: str, probe: dict | None = None) -> dict:
    check_workflow(wf)
    store = store_for(settings, wf)
    version = store.current("train")["version"] if store.current("train") else None
    from ml.pipeline.redistill import relabel_for_current_teacher

    stored = store.load("train")
    rows = _call_log_rows(stored)
    # Where the current teacher answered a document, older teachers' answers to it are dropped
    # (as for classification); of what remains, a document answered again in a later batch is
    # trained on its latest answer (batches are appended). The index is the stored row.
    current, relabel = relabel_for_current_teacher(wf.name, stored)
    latest = {rows[i][ex.REQUEST_TEXT]: i for i in current.index}
    candidates = sorted(latest.values())
    accepted, refused = ex.curate([{**rows[i], "_row": i} for i in candidates], wf.fields)
    counts = ex.refusal_counts(refused)
    for reason, n in _ingest_refusals(store).items():  # the teacher's errors ingest set aside
        counts[reason] = counts.get(reason, 0) + n
    refused_rows = {r["_row"] for r in refused}
    kept = [i for i in candidates if i not in refused_rows]  # curate keeps the order
    if not accepted:
        raise RuntimeError(
            f"{wf.name}: none of the {len(rows)} calls in the training set has a usable answer "
            f"(refused: { {k: v for k, v in counts.items() if v} }); fix the call log and ingest it again."
        )
    teacher = _teacher(wf, rows)
    out = distill.run_dir(settings, wf, run_key) / TARGETS
    out.write_text(
        json.dumps(
            {
                "fields": list(wf.fields),
                "dataset_version": version,
                "teacher": teacher,
                "refused": counts,
                "replaced_by_a_later_answer": len(rows) - len(candidates),
                "relabel": relabel,
                "probe": probe or {},
                "targets": [{"row": i, "answer": a["answer"]} for i, a in zip(kept, accepted)],
            }
        )
    )
    teacher_errors = sum(n for k, n in counts.items() if k in ex.TEACHER_ERROR_REASONS)
    n_refused = sum(counts.values())
    print(
        f"curated {len(rows)} calls: {len(accepted)} accepted, {n_refused} refused (at ingest or now) "
        f"({teacher_errors} teacher errors): {', '.join(f'{k} {n}' for k, n in counts.items() if n) or 'none'}"
    )
    with distill._open_run(settings, wf, run_key) as run:
        distill._log_batch(
            run.info.run_id,
            metrics={
                "curation.calls": len(rows),
                "curation.accepted": len(accepted),
                "curation.refused": n_refused,
                "curation.teacher_errors": teacher_errors,
                **{f"curation.refused.{k}": n for k, n in counts.items()},
            },
        )
        if refused:
            import mlflow

            mlflow.log_dict(
                {
                    "refused": [
                        {k: r.get(k) for k in (ex.DOCUMENT_ID, ex.CALL_ID, "reason", "detail")}
                        for r in refused
                    ]
                },
                "curation_refused.json",
            )
    return {
        "targets": str(out),
        "dataset_version": version,
        "n_train": len(accepted),
        "n_refused": n_refused,
        "teacher": teacher,
    }


def train(settings: Settings, wf: Workflow, run_key: str, targets_ref: dict) -> dict:
    import mlflow

    from ml.train.student import fingerprint_model_dir, resolve_base_model

    check_workflow(wf)
    store = store_for(settings, wf)
    meta = json.loads(Path(targets_ref["targets"]).read_text())
    if store.current("train")["version"] != meta["dataset_version"]:
        raise RuntimeError(
            "the training set changed after targets were prepared; clear this run and re-run it."
        )
    rows = _call_log_rows(store.load("train"))
    documents = [rows[t["row"]][ex.REQUEST_TEXT] for t in meta["targets"]]
    answers = [t["answer"] for t in meta["targets"]]
    registry.configure(settings)  # a models:/ base model is looked up in the platform's registry
    base_dir = resolve_base_model(wf.base_model, cache_dir=settings.state_dir / "base_models")
    out_dir = distill.run_dir(settings, wf, run_key)
    device = distill._device(settings)
    with distill._open_run(settings, wf, run_key) as run:
        mlflow.log_input(
            mlflow.data.from_pandas(
                store.load("train")
                .iloc[[t["row"] for t in meta["targets"]]]
                .drop(columns=["spans"], errors="ignore"),
                name=f"{wf.name}-train",
                digest=meta["dataset_version"][:36],
                source=store.source_url(meta["dataset_version"]),
            ),
            context="training",
        )
        report_device(settings.state_dir, device)  # the cost listener prices this try by it
        result = ex.train(
            base_dir=base_dir,
            documents=documents,
            answers=answers,
            fields=meta["fields"],
            cfg=wf.training,
            out_dir=out_dir,
            stride=ex.stride_for(wf.training.max_length),
            seed=settings.seed,
            device=device,
            log=lambda m: print(m, flush=True),
        )
        base_fp = fingerprint_model_dir(base_dir)
        params = {f"training.{k}": v for k, v in vars(wf.training).items()}
        params.update(
            {
                "task": wf.task,
                "fields": json.dumps(meta["fields"]),
                "base_model": wf.base_model,
                "base_fingerprint": base_fp[:16],
                "teacher": json.dumps(meta["teacher"]),
                "dataset_version": meta["dataset_version"],
                "device": device,
                "n_train": len(documents),
                "seed": settings.seed,
                "train.n_fit": result.n_train_documents,
                "train.n_validation": result.n_validation_documents,
                "train.stride": ex.stride_for(wf.training.max_length),
            }
        )
        curves = {
            "train.epoch_loss": [(h["epoch"], h["train_loss"]) for h in result.history],
            "val.field_f1_macro": [(h["epoch"], h.get("val_field_f1_macro")) for h in result.history],
            "val.exact_match_macro": [(h["epoch"], h.get("val_exact_match_macro")) for h in result.history],
        }
        distill._log_batch(
            run.info.run_id,
            params=params,
            metrics={
                "train.seconds": result.train_seconds,
                "train.steps": result.steps,
                "train.epochs": result.epochs,
                "train.windows": result.n_windows,
                "train.best_epoch": result.best_epoch,
                "val.best_field_f1_macro": result.best_val_field_f1,
            },
            tags={"train.stop_reason": result.stop_reason},
            curves=curves,
        )
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the final weights are saved
    return {
        "run_id": run.info.run_id,
        "model_dir": str(result.model_dir),
        "base_fingerprint": base_fp,
        "dataset_version": meta["dataset_version"],
        "teacher": meta["teacher"],
        "device": device,
        "train_seconds": result.train_seconds,
        "resumed_from_step": None,
    }


def _score(settings: Settings, wf: Workflow, model_dir: Path, texts: list[str], gold: list[dict]) -> dict:
    """The named metrics of one tagger on the gold set, its throughput (documents/s) and size."""
    model, tokenizer = ex.load_tagger(model_dir)
    try:
        fields = ex.fields_of(model.config.id2label)
    except ValueError as exc:
        return {"error": str(exc)}
    if fields != list(wf.fields):
        return {"error": f"field set differs: {fields}"}
    max_length, stride = wf.training.max_length, ex.stride_for(wf.training.max_length)
    report = ex.evaluate(ex.extract(model, tokenizer, texts, fields, max_length, stride), gold, fields)
    timing = measure_latency(  # in-process throughput only: the gate's latency is measure_isolated's
        lambda docs: ex.extract(model, tokenizer, docs, fields, max_length, stride),
        texts,
        n_single=0,
        n_batches=2,
        batch_size=8,
    )
    report["throughput_calls_per_s"] = timing["throughput_calls_per_s"]
    report["size_on_disk_bytes"] = dir_size_bytes(model_dir)
    report["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    return report


def _latency_spec(wf: Workflow, model_dir: Path) -> dict:
    """How the latency process builds the tagger: one document per call, every window."""
    return {
        "factory": "ml.tasks.extraction:latency_predictor",
        "kwargs": {
            "model_dir": str(model_dir),
            "fields": list(wf.fields),
            "max_length": wf.training.max_length,
            "stride": ex.stride_for(wf.training.max_length),
        },
    }


def evaluate_and_gate(settings: Settings, wf: Workflow, run_key: str, train_ref: dict) -> dict:
    import mlflow

    check_workflow(wf)
    store = store_for(settings, wf)
    eval_df = store.load("eval")
    texts, gold = [str(t) for t in eval_df[ex.TEXT]], ex.gold_answers(eval_df, wf.fields)
    out = distill.run_dir(settings, wf, run_key)
    model_dir = Path(train_ref["model_dir"])
    challenger = _score(settings, wf, model_dir, texts, gold)
    client = registry.configure(settings)
    champ = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    champion, specs = None, {VARIANT: _latency_spec(wf, model_dir)}
    if champ is not None:
        champ_dir = registry.download_weights(wf.model_name, str(champ.version))
        champion = _score(settings, wf, champ_dir, texts, gold)
        if "error" in champion:  # another field set cannot be compared: absolute thresholds only
            print(f"champion v{champ.version} not compared: {champion['error']}")
            champion = None
        else:
            champion["served_variant"] = (champ.tags or {}).get("served_variant", VARIANT)
            specs["champion"] = _latency_spec(wf, champ_dir)
    timing = measure_isolated(specs, texts)
    timing_keys = ("latency_p50_ms", "latency_p99_ms", "wall_p99_ms", "method")
    challenger.update({k: timing[VARIANT][k] for k in timing_keys})
    if champion is not None:
        champion.update({k: timing["champion"][k] for k in timing_keys})
    served = {
        "variant": VARIANT,
        "artifact": str(model_dir),
        "quality_cost": 0.0,
        **{k: v for k, v in challenger.items() if k not in ("n_documents",)},
    }
    served["cost_per_1k_calls_usd"] = distill._serving_cost_per_1k_usd(
        settings, wf, served["throughput_calls_per_s"]
    )
    decision, frontier_per_1k = distill._decide(settings, wf, served, champion, champ)
    evaluation = {
        "task": wf.task,
        "challenger": challenger,
        "champion": champion,
        "decision": decision.to_dict(),
        "served": served,
        "variants": {VARIANT: {"latency_p99_ms": served["latency_p99_ms"], "quality_cost": 0.0}},
        "eval_version": store.current("eval")["version"],
        "frontier_cost_per_1k_calls_usd": frontier_per_1k,
    }
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    scalar = {f"eval.{k}": v for k, v in challenger.items() if isinstance(v, (int, float))}
    for metric in ex.PER_PART_METRICS:  # field names are identifiers: safe MLflow metric names
        scalar.update({f"eval.{metric}.{f}": v for f, v in challenger[metric].items()})
    scalar["eval.served.cost_per_1k_calls_usd"] = served["cost_per_1k_calls_usd"]
    with mlflow.start_run(run_id=train_ref["run_id"]):
        mlflow.log_artifact(str(out / "evaluation.json"))
    distill._log_gate(train_ref["run_id"], scalar, decision, VARIANT)
    return {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "field_f1_macro": challenger["field_f1_macro"],
        "exact_match_macro": challenger["exact_match_macro"],
        "latency_p99_ms": served["latency_p99_ms"],
        "served_variant": VARIANT,
        "champion_version": decision.champion_version,
        "evaluation": str(out / "evaluation.json"),
    }


def version_tags(gate_ref: dict, evaluation: dict) -> tuple[dict[str, str], str]:
    """The task's tags on the registered version, and its description's serving paragraph."""
    served = evaluation["served"]
    tags = {
        "task": "extraction",
        "field_f1_macro": f"{gate_ref['field_f1_macro']:.4f}",
        "exact_match_macro": f"{gate_ref['exact_match_macro']:.4f}",
        "latency_p99_ms": f"{gate_ref['latency_p99_ms']:.2f}",
        "served_variant": served["variant"],
        "served_latency_p50_ms": f"{served['latency_p50_ms']:.2f}",
        "latency_method": served["method"],
    }
    text = (
        f"Serves {served['variant']}: field F1 (macro) {served['field_f1_macro']:.4f}, exact match (macro) "
        f"{served['exact_match_macro']:.4f}, p99 {served['latency_p99_ms']:.2f} ms per document, "
        f"p50 {served['latency_p50_ms']:.2f} ms ({served['method']})."
    )
    return tags, text
