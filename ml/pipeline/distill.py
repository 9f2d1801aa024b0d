"""Steps of the distill DAG: teacher targets → student → evaluation + gate → registry.

1. `prepare_targets`: the teacher's probabilities for the current training set (a file in the
   run folder; XCom carries its path).
2. `train`: fine-tune the student on the distillation loss, in an MLflow run that a retry
   re-opens (checkpoints make the retry resume, not restart).
3. `evaluate_and_gate`: challenger and champion on the same frozen evaluation set: quality of
   each serving variant (torch fp32, ONNX fp32/int8, bf16 on CUDA), their p99 latency at batch 1
   measured apart from the host's load (ml/evaluate/latency.py); the fastest within
   `serving.max_quality_cost` is the served variant, and the gate (quality, latency, cost per
   1,000 calls) judges it.
4. `register_challenger`: log the served variant (models-from-code pyfunc), register one
   version per DAG run (idempotent), tag its lineage, point @challenger at it.
5. `await_approval`: with `approval: manual`, one look at the model owner's decision per poke of
   the DAG's waiting task; automatic approval passes at once.
6. `promote`: move @champion (compare-and-set) when the gate passed and the version is approved.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ml import registry
from ml.config import Settings
from ml.costs.capture import report_device
from ml.data import contract
from ml.evaluate import confusion
from ml.evaluate.gate import decide
from ml.evaluate.latency import measure_isolated
from ml.evaluate.metrics import metric_key, per_class_metrics
from ml.evaluate.serving import (
    candidate_variants,
    choose_served_variant,
    dir_size_bytes,
    load_classifier,
    measure_latency,
    measure_serving,
    predict_probs,
)
from ml.export import ExportError, quantize_int8, state_dict_bytes
from ml.pipeline.ingest_validate import context, label_set, store_for
from ml.tasks import task_module
from ml.workflows import Workflow


def _extraction():
    """The steps of a `task: extraction` workflow (ml/pipeline/distill_extraction.py)."""
    from ml.pipeline import distill_extraction

    return distill_extraction


def run_dir(settings: Settings, wf: Workflow, run_key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_key)
    path = settings.runs_dir / wf.name / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def _device(settings: Settings) -> str:
    import torch

    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device


def git_sha(settings: Settings) -> str:
    if settings.git_sha:
        return settings.git_sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.project_dir, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prepare_targets(workflow: str, run_key: str, probe: dict | None = None) -> dict:
    from ml.pipeline.redistill import relabel_for_current_teacher
    from ml.teachers import teacher_targets

    settings, wf = context(workflow)
    if wf.task == "extraction":
        return _extraction().prepare_targets(settings, wf, run_key, probe)
    store = store_for(settings, wf)
    # Where a newer teacher answered the same texts, its answers replace the older ones.
    train, relabel = relabel_for_current_teacher(wf.name, store.load("train"))
    labels = label_set(settings, wf)
    targets = teacher_targets(
        wf.teacher.kind,
        wf.teacher.model,
        train,
        labels,
        max_length=wf.training.max_length,
        device=_device(settings),
    )
    out = run_dir(settings, wf, run_key) / "targets.npz"
    np.savez(out, probs=targets.probs, hard=targets.hard, rows=train.index.to_numpy())
    version = store.current("train")["version"]
    (out.parent / "targets.json").write_text(
        json.dumps(
            {
                "labels": labels,
                "teacher": targets.teacher,
                "dataset_version": version,
                "relabel": relabel,
                "probe": probe or {},
            }
        )
    )
    return {
        "targets": str(out),
        "dataset_version": version,
        "n_train": len(train),
        "teacher": targets.teacher,
    }


def _open_run(settings: Settings, wf: Workflow, run_key: str):
    """The MLflow run of this DAG run: created once, re-opened by a retry."""
    import mlflow

    client = registry.configure(settings)
    exp_id = registry.ensure_experiment(settings, wf.name)
    found = client.search_runs([exp_id], f"tags.airflow_run_key = '{run_key}'", max_results=1)
    if found:
        return mlflow.start_run(run_id=found[0].info.run_id, log_system_metrics=True)
    return mlflow.start_run(
        experiment_id=exp_id,
        run_name=run_key.split("/")[-1],
        log_system_metrics=True,
        tags={"airflow_run_key": run_key, "workflow": wf.name},
    )


def train(workflow: str, run_key: str, targets_ref: dict) -> dict:
    import mlflow

    from ml.train.select import train_selected
    from ml.train.student import fingerprint_model_dir, resolve_base_model

    settings, wf = context(workflow)
    if wf.task == "extraction":
        return _extraction().train(settings, wf, run_key, targets_ref)
    store = store_for(settings, wf)
    meta = json.loads(Path(targets_ref["targets"]).with_suffix(".json").read_text())
    data = np.load(targets_ref["targets"])
    train_df = store.load("train").iloc[data["rows"]]  # the rows the targets were computed for
    if store.current("train")["version"] != meta["dataset_version"]:
        raise RuntimeError(
            "the training set changed after targets were prepared; clear this run and re-run it."
        )
    registry.configure(settings)  # a models:/ base model is looked up in the platform's registry
    base_dir = resolve_base_model(wf.base_model, cache_dir=settings.state_dir / "base_models")
    out_dir = run_dir(settings, wf, run_key)
    # Checkpoints are keyed by the training inputs (data, targets, settings, base model, seed),
    # not by the DAG run: a new run of the same inputs after a kill resumes where it stopped.
    checkpoint_root = settings.runs_dir / wf.name / "checkpoints"
    with _open_run(settings, wf, run_key) as run:
        dataset = mlflow.data.from_pandas(
            train_df,
            name=f"{wf.name}-train",
            digest=meta["dataset_version"][:36],
            source=store.source_url(meta["dataset_version"]),
        )
        mlflow.log_input(dataset, context="training")
        report_device(settings.state_dir, _device(settings))  # the cost listener prices this try by it
        selection = train_selected(
            base_dir=base_dir,
            texts=list(train_df[contract.TEXT]),
            teacher_probs=data["probs"],
            hard_labels=data["hard"],
            label_names=meta["labels"],
            cfg=wf.training,
            out_dir=out_dir,
            latency_sla_p99_ms=wf.latency_sla_p99_ms,
            device=_device(settings),
            seed=settings.seed,
            threads=settings.torch_threads,
            log=lambda m: print(m, flush=True),
            checkpoint_root=checkpoint_root,
        )
        result = selection.result  # student_layers: auto and training.search choose among trainings
        chosen_params, chosen_tags, chosen_curves = selection.mlflow_fields()
        base_fp = fingerprint_model_dir(base_dir)
        params = {f"training.{k}": v for k, v in vars(wf.training).items()}
        params.update(
            {
                "base_model": wf.base_model,
                "base_fingerprint": base_fp[:16],
                "teacher": json.dumps(meta["teacher"]),
                "dataset_version": meta["dataset_version"],
                "device": result.device,
                "dtype": str(result.dtype),
                "n_train": len(train_df),
                "seed": settings.seed,
                "train.n_fit": result.n_train,
                "train.n_validation": result.n_validation,
                **chosen_params,
            }
        )
        curves = {
            f"val.{name}": [(h["epoch"], h[f"val_{name}"]) for h in result.history]
            for name in ("macro_f1", "accuracy", "never_predicted")
        }
        curves["train.epoch_loss"] = [(h["epoch"], h["train_loss"]) for h in result.history]
        curves["train.lr"] = [(h["epoch"], h["lr"]) for h in result.history]
        curves.update(chosen_curves)
        _log_batch(
            run.info.run_id,
            params=params,
            metrics={
                "train.final_loss": result.final_loss,
                "train.samples_per_s": result.samples_per_s,
                "train.seconds": result.train_seconds,
                "train.steps": result.steps,
                "train.epochs": result.epochs,
                "train.best_epoch": result.best_epoch,
                "val.best_macro_f1": result.best_val_macro_f1,
            },
            tags={
                "train.stop_reason": result.stop_reason,
                "train.resumed_from_step": str(result.resumed_from_step),
                **chosen_tags,
            },
            curves=curves,
        )
        mlflow.log_dict({metric_key(label): label for label in meta["labels"]}, "label_metric_names.json")
        if selection.record:
            mlflow.log_dict(selection.record, "training_selection.json")
    # The final weights are saved; checkpoints (hundreds of MB each) only served a resume.
    shutil.rmtree(result.checkpoint_dir, ignore_errors=True)
    return {
        "run_id": run.info.run_id,
        "model_dir": str(result.model_dir),
        "base_fingerprint": base_fp,
        "dataset_version": meta["dataset_version"],
        "teacher": meta["teacher"],
        "device": result.device,
        "train_seconds": result.train_seconds,
        "resumed_from_step": result.resumed_from_step,
    }


def _log_batch(
    run_id: str,
    params: dict | None = None,
    metrics: dict | None = None,
    tags: dict | None = None,
    curves: dict[str, list[tuple[int, float]]] | None = None,
):
    """One request per group rather than one per value (the registry may be a remote server).
    curves: {metric: [(step, value), ...]}, e.g. validation macro-F1 per epoch."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client = registry.MlflowClient()
    existing = client.get_run(run_id).data.params
    params = [Param(k, str(v)[:6000]) for k, v in (params or {}).items() if k not in existing]
    metric_list = [
        Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None and np.isfinite(v)
    ]
    metric_list += [
        Metric(k, float(v), now, int(step))
        for k, points in (curves or {}).items()
        for step, v in points
        if v is not None and np.isfinite(v)
    ]
    client.log_batch(
        run_id, metrics=metric_list, params=params, tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()]
    )


def _frontier_cost_per_call_usd(settings: Settings, wf: Workflow) -> float | None:
    """The frontier's cost per call exactly as the cost report prices it (ml.costs.unit_costs)."""
    from ml.costs.pricebook import PriceBook
    from ml.pipeline.cost_report import frontier_side

    frontier = frontier_side(
        settings, wf, PriceBook.load(settings.price_book_file), datetime.now(timezone.utc)
    )
    return None if frontier is None else float(frontier.cost_per_call_usd)


def _serving_cost_per_1k_usd(settings: Settings, wf: Workflow, throughput_calls_per_s: float) -> float:
    """The student's cost per 1,000 calls at the declared volume, from the one cost model (the
    always-on replicas included), as the break-even report prices the same version."""
    from ml.costs import unit_costs
    from ml.costs.pricebook import PriceBook

    book = PriceBook.load(settings.price_book_file)
    per_call = unit_costs.student_cost_per_call_usd(
        wf, book, throughput_calls_per_s, datetime.now(timezone.utc).date()
    )
    return float(per_call * 1000)


def _score(
    settings: Settings, wf: Workflow, model_dir: Path, texts, y, labels, export_dir: Path | None = None
) -> dict:
    device = _device(settings)
    model, tokenizer = load_classifier(model_dir, device)
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_labels != list(labels):
        return {"error": f"label set differs: {model_labels}"}
    probs = predict_probs(model, tokenizer, texts, max_length=wf.training.max_length, device=device)
    report = task_module(wf.task).evaluate(probs, y, labels)
    report.update(measure_serving(model, tokenizer, texts, max_length=wf.training.max_length, device=device))
    report["size_on_disk_bytes"] = dir_size_bytes(model_dir)
    report["cost_per_1k_calls_usd"] = _serving_cost_per_1k_usd(settings, wf, report["throughput_calls_per_s"])
    if export_dir is not None:  # the serving exports, each with its accuracy cost on the same examples
        report["int8"] = _int8_figures(model, tokenizer, texts, y, labels, wf, report)
        try:
            report["onnx"], report["onnx_int8"] = _onnx_figures(
                settings, model_dir, model, tokenizer, texts, y, labels, wf, report, probs, export_dir
            )
        except (
            ExportError
        ) as exc:  # the torch model is still servable; the evaluation says why there is no ONNX
            report["onnx_error"] = str(exc)
    return report


def _int8_figures(model, tokenizer, texts, y, labels, wf: Workflow, fp32: dict) -> dict:
    q = quantize_int8(model)
    q_report = task_module(wf.task).evaluate(
        predict_probs(q, tokenizer, texts, max_length=wf.training.max_length), y, labels
    )
    q_report.update(measure_serving(q, tokenizer, texts, max_length=wf.training.max_length, n_single=50))
    return {
        "macro_f1": q_report["macro_f1"],
        "accuracy": q_report["accuracy"],
        "macro_f1_cost": fp32["macro_f1"] - q_report["macro_f1"],
        "latency_p50_ms": q_report["latency_p50_ms"],
        "latency_p99_ms": q_report["latency_p99_ms"],
        "throughput_calls_per_s": q_report["throughput_calls_per_s"],
        "weights_bytes": state_dict_bytes(q),
        "fp32_weights_bytes": state_dict_bytes(model),
    }


def _onnx_figures(
    settings: Settings,
    model_dir: Path,
    model,
    tokenizer,
    texts,
    y,
    labels,
    wf: Workflow,
    fp32: dict,
    fp32_probs: np.ndarray,
    export_dir: Path,
) -> tuple[dict, dict]:
    """The ONNX export and its int8 quantization under onnxruntime (CPU), each next to the torch model.

    Scored by the served code itself (ml/serving_model.py's OnnxScorer: onnxruntime and the
    `tokenizers` library), so the quality measured is the quality served.
    """
    from ml.export import export_onnx, quantize_onnx_int8
    from ml.serving_model import OnnxScorer

    fp32_path = export_onnx(model, tokenizer, export_dir / "model.onnx")
    int8_path = quantize_onnx_int8(fp32_path, export_dir / "model.int8.onnx")
    max_length, figures = wf.training.max_length, []
    for path in (fp32_path, int8_path):
        onnx = OnnxScorer(path, model_dir, max_length=max_length, threads=settings.torch_threads)
        probs = (
            np.concatenate([onnx.probs(texts[i : i + 64]) for i in range(0, len(texts), 64)])
            if len(texts)
            else np.zeros((0, len(labels)))
        )
        o_report = task_module(wf.task).evaluate(probs, y, labels)
        timing = measure_latency(onnx.probs, texts, n_single=10)  # its throughput; latency: _measure_variants
        figures.append(
            {
                "macro_f1": o_report["macro_f1"],
                "accuracy": o_report["accuracy"],
                "per_class_f1": o_report["per_class_f1"],
                "macro_f1_cost": fp32["macro_f1"] - o_report["macro_f1"],
                # How far the exported graph's numbers are from torch's on the same texts.
                "max_abs_prob_diff": float(np.abs(probs - fp32_probs).max()) if len(probs) else 0.0,
                "argmax_agreement": float((probs.argmax(1) == fp32_probs.argmax(1)).mean())
                if len(probs)
                else 1.0,
                "latency_p50_ms": timing["latency_p50_ms"],
                "latency_p99_ms": timing["latency_p99_ms"],
                "throughput_calls_per_s": timing["throughput_calls_per_s"],
                "file_bytes": path.stat().st_size,
            }
        )
    return figures[0], figures[1]


def _bf16_figures(settings: Settings, model_dir: Path, texts, y, labels, wf: Workflow, fp32: dict) -> dict:
    import torch

    device = _device(settings)
    model, tokenizer = load_classifier(model_dir, device)
    model = model.to(torch.bfloat16)
    report = task_module(wf.task).evaluate(
        predict_probs(model, tokenizer, texts, max_length=wf.training.max_length, device=device), y, labels
    )
    timing = measure_serving(
        model, tokenizer, texts, max_length=wf.training.max_length, device=device, n_single=10
    )
    return {
        "macro_f1": report["macro_f1"],
        "accuracy": report["accuracy"],
        "per_class_f1": report["per_class_f1"],
        "macro_f1_cost": fp32["macro_f1"] - report["macro_f1"],
        "throughput_calls_per_s": timing["throughput_calls_per_s"],
    }


def _latency_spec(variant: str, model_dir: Path, artifact: Path, max_length: int, device: str) -> dict:
    """How the latency process builds the variant: the same scorer the served model runs."""
    if variant.startswith("onnx"):
        return {
            "factory": "ml.evaluate.latency:onnx_predictor",
            "kwargs": {"onnx_path": str(artifact), "tokenizer_dir": str(model_dir), "max_length": max_length},
        }
    return {
        "factory": "ml.evaluate.latency:torch_predictor",
        "kwargs": {
            "model_dir": str(model_dir),
            "max_length": max_length,
            "dtype": "bfloat16" if variant == "torch_bf16" else "float32",
            "device": device if variant == "torch_bf16" else "cpu",
        },
    }


def _serving_variants(
    settings: Settings,
    wf: Workflow,
    challenger: dict,
    model_dir: Path,
    export_dir: Path,
    texts,
    y,
    labels,
    champion_spec: dict | None,
) -> tuple[dict, dict | None]:
    """Every candidate variant's quality (on the frozen set) and gate latency, and the champion's latency.

    All latencies come from one measurement process (ml/evaluate/latency.py), variants interleaved.
    Returns ({variant: figures}, champion timing or None).
    """
    device, max_length = _device(settings), wf.training.max_length
    variants: dict[str, dict] = {}
    for name in candidate_variants(wf.serving.variants, device):
        if name == "torch_fp32":
            figures = {
                k: challenger[k] for k in ("macro_f1", "accuracy", "per_class_f1", "throughput_calls_per_s")
            }
            variants[name] = {**figures, "macro_f1_cost": 0.0, "artifact": str(model_dir)}
        elif name == "torch_bf16":
            variants[name] = {
                **_bf16_figures(settings, model_dir, texts, y, labels, wf, challenger),
                "artifact": str(model_dir),
            }
        elif challenger.get(
            name.replace("_fp32", "")
        ):  # onnx_fp32 -> report["onnx"], onnx_int8 -> report["onnx_int8"]
            block = challenger[name.replace("_fp32", "")]
            path = export_dir / ("model.onnx" if name == "onnx_fp32" else "model.int8.onnx")
            variants[name] = {
                k: block[k]
                for k in ("macro_f1", "accuracy", "per_class_f1", "macro_f1_cost", "throughput_calls_per_s")
            } | {"artifact": str(path)}
    specs = {
        name: _latency_spec(name, model_dir, Path(v["artifact"]), max_length, device)
        for name, v in variants.items()
    }
    if champion_spec is not None:
        specs["champion"] = champion_spec
    timing = measure_isolated(specs, texts)
    for name, figures in variants.items():
        figures.update(timing[name])
    return variants, timing.get("champion")


def _champion_as_served(
    settings: Settings, wf: Workflow, champ, champ_dir: Path, texts, y, labels, champion: dict
) -> dict:
    """The champion judged as it serves: an ONNX-served champion's quality is its ONNX graph's (updated in
    `champion`, the torch figure kept as torch_fp32_macro_f1); returns the latency spec of its served variant."""
    variant = (champ.tags or {}).get("served_variant", "torch_fp32")
    champion["served_variant"] = variant
    if not variant.startswith("onnx"):
        return _latency_spec(variant, champ_dir, champ_dir, wf.training.max_length, _device(settings))
    import mlflow
    from mlflow.models import Model

    from ml.serving_model import OnnxScorer

    root = Path(mlflow.artifacts.download_artifacts(f"models:/{wf.model_name}/{champ.version}"))
    artifacts = Model.load(str(root)).flavors["python_function"]["artifacts"]
    onnx_path, tokenizer_dir = (
        root / artifacts["onnx_model"]["path"],
        root / artifacts["tokenizer_dir"]["path"],
    )
    scorer = OnnxScorer(
        onnx_path, tokenizer_dir, max_length=wf.training.max_length, threads=settings.torch_threads
    )
    probs = np.concatenate([scorer.probs(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    report = task_module(wf.task).evaluate(probs, y, labels)
    champion["torch_fp32_macro_f1"] = champion["macro_f1"]
    champion.update({k: report[k] for k in ("macro_f1", "accuracy", "per_class_f1")})
    return {
        "factory": "ml.evaluate.latency:onnx_predictor",
        "kwargs": {
            "onnx_path": str(onnx_path),
            "tokenizer_dir": str(tokenizer_dir),
            "max_length": wf.training.max_length,
        },
    }


def evaluate_and_gate(workflow: str, run_key: str, train_ref: dict) -> dict:
    """Score the challenger's serving variants and the champion; choose the served variant; gate it.

    The variant served is the fastest within `serving.max_quality_cost` of torch fp32's macro-F1;
    the gate's quality, latency and cost checks judge that variant, and register_challenger
    registers that very artifact.
    """
    import mlflow

    settings, wf = context(workflow)
    if wf.task == "extraction":
        return _extraction().evaluate_and_gate(settings, wf, run_key, train_ref)
    eval_df = store_for(settings, wf).load("eval")
    labels = json.loads((run_dir(settings, wf, run_key) / "targets.json").read_text())["labels"]
    index = {name: i for i, name in enumerate(labels)}
    texts, y = list(eval_df[contract.TEXT]), [index[lab] for lab in eval_df[contract.LABEL]]
    out = run_dir(settings, wf, run_key)
    challenger = _score(
        settings, wf, Path(train_ref["model_dir"]), texts, y, labels, export_dir=out / "export"
    )

    client = registry.configure(settings)
    champ = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    champion, champion_spec = None, None
    if champ is not None:
        champ_dir = registry.download_weights(wf.model_name, str(champ.version))
        champion = _score(settings, wf, champ_dir, texts, y, labels)
        if "error" in champion:  # a champion on another label set cannot be compared: absolute thresholds
            champion = None
        else:
            champion_spec = _champion_as_served(settings, wf, champ, champ_dir, texts, y, labels, champion)
    variants, champion_timing = _serving_variants(
        settings,
        wf,
        challenger,
        Path(train_ref["model_dir"]),
        out / "export",
        texts,
        y,
        labels,
        champion_spec,
    )
    timing_keys = ("latency_p50_ms", "latency_p99_ms", "wall_p99_ms", "method")
    # The in-process latencies never leave this function: every latency reported is the gate's method.
    for report in (challenger, champion, challenger.get("int8")):
        for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
            (report or {}).pop(key, None)
    if "torch_fp32" in variants:
        challenger.update({k: variants["torch_fp32"][k] for k in timing_keys})
    for name, block in (("onnx_fp32", "onnx"), ("onnx_int8", "onnx_int8")):
        if name in variants and block in challenger:
            challenger[block].update({k: variants[name][k] for k in ("latency_p50_ms", "latency_p99_ms")})
    if champion is not None and champion_timing:
        champion.update({k: champion_timing[k] for k in timing_keys})
    served_variant = choose_served_variant(variants, wf.serving.max_quality_cost)
    served = {"variant": served_variant, **variants[served_variant]}
    served["cost_per_1k_calls_usd"] = _serving_cost_per_1k_usd(settings, wf, served["throughput_calls_per_s"])
    print(
        f"served variant: {served_variant} (macro-F1 {served['macro_f1']:.4f}, cost {served['macro_f1_cost']:+.4f} "
        f"vs torch fp32, p99 {served['latency_p99_ms']:.2f} ms; candidates: "
        + ", ".join(
            f"{n} {v['latency_p99_ms']:.2f} ms/{v['macro_f1_cost']:+.4f}" for n, v in variants.items()
        )
        + ")"
    )
    decision, frontier_per_1k = _decide(settings, wf, served, champion, champ)
    evaluation = {
        "challenger": challenger,
        "champion": champion,
        "decision": decision.to_dict(),
        "served": served,
        "variants": variants,
        "max_quality_cost": wf.serving.max_quality_cost,
        "eval_version": store_for(settings, wf).current("eval")["version"],
        "frontier_cost_per_1k_calls_usd": frontier_per_1k,
    }
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    image = confusion.save_png(challenger["confusion_matrix"], labels, out / confusion.IMAGE_ARTIFACT)
    with mlflow.start_run(run_id=train_ref["run_id"]):
        mlflow.log_artifact(str(out / "evaluation.json"))
        confusion.log_to_mlflow(
            challenger["confusion_matrix"], labels, image
        )  # counts, shares, per-class table
        if "onnx" in challenger:
            mlflow.log_artifact(str(out / "export" / "model.onnx"), artifact_path="onnx")
            mlflow.log_artifact(str(out / "export" / "model.int8.onnx"), artifact_path="onnx")
    scalar = {f"eval.{k}": v for k, v in challenger.items() if isinstance(v, (int, float))}
    scalar.update(per_class_metrics("eval.f1.", challenger["per_class_f1"]))  # any label text: a safe name
    for block in ("int8", "onnx", "onnx_int8"):
        scalar.update(
            {
                f"eval.{block}.{k}": v
                for k, v in challenger.get(block, {}).items()
                if isinstance(v, (int, float))
            }
        )
    scalar.update({f"eval.served.{k}": v for k, v in served.items() if isinstance(v, (int, float))})
    _log_gate(train_ref["run_id"], scalar, decision, served_variant)
    return {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "macro_f1": served["macro_f1"],
        "latency_p99_ms": served["latency_p99_ms"],
        "served_variant": served_variant,
        "champion_version": decision.champion_version,
        "evaluation": str(out / "evaluation.json"),
    }


def _decide(settings: Settings, wf: Workflow, served: dict, champion: dict | None, champ):
    """The gate on the served variant's figures, and the frontier's cost per 1,000 calls it was held to.

    The quality checks are the named metrics the workflow's gate declares for its task
    (wf.gate.judged_metrics), read from the task's evaluate() figures of the served variant.
    """
    frontier_per_call = _frontier_cost_per_call_usd(settings, wf)
    frontier_per_1k = frontier_per_call * 1000 if frontier_per_call else None
    decision = decide(
        served,
        champion,
        wf.gate,
        latency_sla_p99_ms=wf.latency_sla_p99_ms,
        max_cost_per_1k_calls_usd=frontier_per_1k,
        champion_version=str(champ.version) if champ else None,
    )
    return decision, frontier_per_1k


def _log_gate(run_id: str, metrics: dict, decision, served_variant: str) -> None:
    """The evaluation's figures and the gate's verdict on the training run, and the verdict in the log."""
    _log_batch(
        run_id,
        metrics=metrics,
        tags={"gate": "passed" if decision.passed else "failed", "served_variant": served_variant},
    )
    print(
        f"gate {'PASSED' if decision.passed else 'FAILED'} ({served_variant}): "
        + "; ".join(c.detail for c in decision.checks)
    )


def _run_cost_usd(settings: Settings, wf: Workflow, run_key: str) -> str:
    """What the cost ledger holds for this DAG run's tasks so far (the listener books each try as
    `<dag_id>/<run_id>/<task>/...`), reversals included; "unknown" when the ledger cannot be read:
    a cost figure is never worth failing a registration."""
    from decimal import Decimal

    from ml.costs.ledger import Ledger

    try:
        with Ledger(settings.ledger_url) as ledger:
            entries = ledger.entries(workflow=wf.name)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        print(f"cost ledger not readable ({exc}); the version's cost_usd tag says unknown.")
        return "unknown"
    ours = {e.id: e for e in entries if e.source.startswith(run_key + "/")}
    ours.update({e.id: e for e in entries if e.reverses_id in ours})
    return str(sum((e.amount for e in ours.values()), Decimal("0")))


def _served_tags(served: dict, evaluation: dict) -> dict[str, str]:
    """The served variant and its figures, as version tags (`mlops models show` lists them)."""
    candidates = {
        name: {"macro_f1_cost": round(v["macro_f1_cost"], 4), "latency_p99_ms": v["latency_p99_ms"]}
        for name, v in evaluation.get("variants", {}).items()
    }
    return {
        "served_variant": served["variant"],
        "served_latency_p50_ms": f"{served['latency_p50_ms']:.2f}",
        "served_macro_f1_cost": f"{served['macro_f1_cost']:.4f}",
        "latency_method": served["method"],
        "serving_candidates": json.dumps(candidates)[:4900],
    }


def _served_description(served: dict, evaluation: dict) -> str:
    others = ", ".join(
        f"{name} p99 {v['latency_p99_ms']:.2f} ms, macro-F1 {-v['macro_f1_cost']:+.4f}"
        for name, v in evaluation.get("variants", {}).items()
        if name != served["variant"]
    )
    return (
        f"Serves {served['variant']}: macro-F1 {served['macro_f1']:.4f} ({-served['macro_f1_cost']:+.4f} vs torch fp32, "
        f"allowed {evaluation.get('max_quality_cost')}), p99 {served['latency_p99_ms']:.2f} ms, "
        f"p50 {served['latency_p50_ms']:.2f} ms ({served['method']}). Other variants: {others or 'none'}."
    )


def _link_evaluation(settings: Settings, wf: Workflow, run_id: str, model_uri: str, evaluation: dict) -> None:
    """The evaluation set as a run input (its DVC remote object as the source, its md5 as the digest),
    and the run's eval.* metrics again against the logged model and that dataset, so the MLflow UI
    shows them on the model's page. The figures are the ones evaluate_and_gate logged; a retry
    finds the model's metrics there and logs nothing twice."""
    import mlflow

    model_id = registry._logged_model_id(model_uri)
    store, eval_version = store_for(settings, wf), evaluation["eval_version"]
    dataset = mlflow.data.from_pandas(
        store.load("eval"), name=f"{wf.name}-eval", digest=eval_version, source=store.source_url(eval_version)
    )
    client = registry.MlflowClient()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="evaluation")
        if model_id:
            # The model is logged at its training step (ml/export.py), so MLflow copied none of the
            # run's step-0 eval.* figures onto it: they go on here once, named with their dataset.
            done = {
                m.key
                for m in client.get_logged_model(model_id).metrics or ()  # None: no metric yet
                if m.dataset_digest == eval_version
            }
            metrics = {
                k: v
                for k, v in client.get_run(run_id).data.metrics.items()
                if k.startswith("eval.") and k not in done
            }
            if metrics:
                mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)


def _model_step(client, run_id: str) -> int:
    # The training step that produced the model (both tasks log train.steps): the model is logged
    # there, not at step 0 where the run's scalars live (see ml/export.py log_served_model).
    return max(1, int(client.get_run(run_id).data.metrics.get("train.steps", 1)))


def register_challenger(workflow: str, run_key: str, train_ref: dict, gate_ref: dict) -> dict:
    import mlflow

    settings, wf = context(workflow)
    client = registry.configure(settings)
    run_id = train_ref["run_id"]
    outputs = client.get_run(run_id).outputs
    logged = list(outputs.model_outputs) if outputs else []
    evaluation = json.loads(Path(gate_ref["evaluation"]).read_text())
    served = evaluation["served"]  # the variant the gate judged is the one registered (and served)
    with mlflow.start_run(run_id=run_id):
        if logged:  # a retry after logging: reuse the logged model
            model_uri = f"models:/{logged[0].model_id}"
        else:
            info = task_module(wf.task).log_served_model(
                served["variant"],
                Path(train_ref["model_dir"]),
                Path(served["artifact"]),
                max_length=wf.training.max_length,
                step=_model_step(client, run_id),
            )
            model_uri = info.model_uri
    _link_evaluation(settings, wf, run_id, model_uri, evaluation)
    if wf.task == "extraction":
        task_tags, served_text = _extraction().version_tags(gate_ref, evaluation)
    else:
        task_tags = {
            "macro_f1": f"{gate_ref['macro_f1']:.4f}",
            "latency_p99_ms": f"{gate_ref['latency_p99_ms']:.2f}",
            **_served_tags(served, evaluation),
        }
        served_text = _served_description(served, evaluation)
    tags = {
        "workflow": wf.name,
        "dataset_version": train_ref["dataset_version"],
        "base_model": wf.base_model,
        "base_fingerprint": train_ref["base_fingerprint"],
        "teacher": json.dumps(train_ref["teacher"]),
        "git_sha": git_sha(settings),
        "airflow_run_key": run_key,
        "gate": "passed" if gate_ref["passed"] else "failed",
        "gate_decision": json.dumps(evaluation["decision"])[:4900],
        **task_tags,
        "eval_dataset_version": evaluation["eval_version"],
        "cost_usd": _run_cost_usd(settings, wf, run_key),
        "cost_scope": "cost ledger: this DAG run's tasks booked before registration (targets, training, evaluation)",
    }
    version = registry.register(
        client,
        wf.model_name,
        model_uri,
        run_id,
        idempotency_key=run_key,
        tags=tags,
        description=registry.describe_gate(evaluation["decision"]) + "\n\n" + served_text,
    )
    current = registry.version_by_alias(client, wf.model_name, registry.CHALLENGER)
    if current is None or str(current.version) != version:
        registry.move_alias(
            client,
            wf.model_name,
            registry.CHALLENGER,
            version,
            expected_from=str(current.version) if current else None,
            why=f"trained by {run_key}",
            kind="challenger",
        )
    return {
        "model": wf.model_name,
        "version": version,
        "passed": gate_ref["passed"],
        "champion_version": gate_ref["champion_version"],
    }


def await_approval(workflow: str, run_key: str, reg_ref: dict) -> dict:
    """One look at the model owner's decision on the version this run registered.

    Returns {"state": ...}: "approved" (also at once for automatic approval), "not_needed"
    (the gate failed: nothing to approve, promote reports why), "rejected", "waiting" or
    "timed_out", with a `message` to log. The first look opens the wait on the version, with
    its deadline, so `mlops models approve` knows this run will promote (see ml/registry.py).
    """
    settings, wf = context(workflow)
    name, version = reg_ref["model"], str(reg_ref["version"])
    if not reg_ref["passed"]:
        return {"state": "not_needed", "message": f"v{version} failed the gate: nothing to approve."}
    if wf.gate.approval == "auto":
        return {
            "state": "approved",
            "who": "airflow",
            "why": "gate passed (automatic approval)",
            "message": f"v{version} passed the gate; approval is automatic.",
        }
    client = registry.configure(settings)
    wait = registry.open_wait(
        client, name, version, run_key=run_key, timeout_s=wf.gate.approval_timeout_hours * 3600
    )
    decision = registry.decision_of(client, name, version)
    if decision is None and datetime.now(timezone.utc) >= datetime.fromisoformat(wait["deadline"]):
        registry.close_wait(client, name, version, "timed out")
        # Written our end of the wait first, read the decision second: an approval recorded
        # meanwhile is seen here, or its CLI sees the wait ended and promotes (ml/registry.py).
        decision = registry.decision_of(client, name, version)
        if decision is None:
            return {
                "state": "timed_out",
                "message": (
                    f"nobody approved or rejected {name} v{version} within approval_timeout_hours="
                    f"{wf.gate.approval_timeout_hours:g} (waiting since {wait['since']}); @champion is unchanged. "
                    f"To promote it now: mlops models approve {version} --reason TEXT --workflow {wf.name} "
                    "(with no run waiting, the command moves @champion itself)."
                ),
            }
    if decision is None:
        return {
            "state": "waiting",
            "deadline": wait["deadline"],
            "opened": bool(wait.get("opened")),
            "message": (
                f"{name} v{version} passed the gate and waits for a model owner until {wait['deadline']}: "
                f"mlops models approve|reject {version} --reason TEXT --workflow {wf.name}"
            ),
        }
    registry.close_wait(client, name, version, decision["decision"])
    verdict = "approved" if decision["decision"] == "approved" else "rejected"
    return {
        "state": verdict,
        "who": decision["who"],
        "why": decision["why"],
        "at": decision["at"],
        "message": f"{name} v{version} {verdict} by {decision['who']} at {decision['at']}: {decision['why']}",
    }


def promote(workflow: str, run_key: str, reg_ref: dict) -> dict:
    """Move @champion to the registered version when the gate passed and it is approved.

    With manual approval the decision is read from the registry here again, not taken from
    XCom: the registry is the record of who approved, and this task moves the alias for the
    run that waited (ml/registry.py says who moves @champion when).
    """
    settings, wf = context(workflow)
    client = registry.configure(settings)
    name, version = reg_ref["model"], str(reg_ref["version"])
    current = registry.version_by_alias(client, name, registry.CHAMPION)
    if current is not None and str(current.version) == version:
        return {"model": name, "champion": version, "promoted": True, "note": "already champion"}
    if not reg_ref["passed"]:
        print(f"v{version} failed the gate; @champion stays at v{reg_ref['champion_version']}.")
        return {"model": name, "champion": reg_ref["champion_version"], "promoted": False}
    if wf.gate.approval == "auto":
        who, why = "airflow", f"gate passed (automatic approval), {run_key}"
    else:
        decision = registry.decision_of(client, name, version)
        if decision is None or decision["decision"] != "approved":
            state = decision["decision"] if decision else "not decided"
            print(f"v{version} is {state}; @champion stays at v{reg_ref['champion_version']}.")
            return {
                "model": name,
                "champion": reg_ref["champion_version"],
                "promoted": False,
                "approval": state,
            }
        who, why = decision["who"], f"approved: {decision['why']} (gate passed, {run_key})"
    # Compare-and-set against the champion the gate compared with, not the one there now.
    entry = registry.move_alias(
        client,
        name,
        registry.CHAMPION,
        version,
        expected_from=reg_ref["champion_version"],
        why=why,
        who=who,
        kind="promote",
    )
    return {
        "model": name,
        "champion": version,
        "promoted": True,
        **({"note": "moved meanwhile by the same decision"} if entry.get("unchanged") else {}),
    }
