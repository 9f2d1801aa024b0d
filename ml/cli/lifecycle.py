"""Data engineers' commands: run the lifecycle, the demo, Airflow itself, and check the set-up."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import sys

from ml.airflow_runner import migrate, run_airflow, test_dag
from ml.cli.common import add_json, add_workflow, emit, notes_now, settings_and_workflow, table
from ml.config import load_settings, state_note
from ml.workflows import load_workflows

DAGS = ("ingest_validate", "distill", "frontier_report", "cost_report")


def run_lifecycle(settings, wf, stages=DAGS, echo=print) -> list[dict]:
    """Each DAG of the workflow as a real Airflow DAG run, in lifecycle order."""
    migrate(settings)
    return [test_dag(settings, f"{stage}__{wf.name}", echo=echo) for stage in stages]


def stage_demo_data(settings, wf, *, n_calls: int, n_gold: int, seed: int, echo=print) -> dict:
    """Generate the demo call log and gold set once per seed, and drop them for ingestion: support
    tickets for a classification workflow (ml/demo_data.py), contracts for an extraction one
    (ml/demo_contracts.py, one call per contract: n_calls contracts)."""
    from ml.pipeline.ingest_validate import drop_dir_for, store_for

    out = settings.state_dir / "demo" / wf.name / f"seed-{seed}-{n_calls}-{n_gold}"
    gold = "gold.csv" if wf.task == "classification" else "gold.jsonl"
    if not (out / "summary.done").exists():
        if wf.task == "classification":
            from ml.demo_data import generate

            summary = generate(out, n_calls=n_calls, n_gold=n_gold, seed=seed, workflow=wf.name)
            what = (
                f"{summary['n_calls']} frontier calls ({summary['n_error']} errors, {summary['n_timeout']} "
                f"timeouts, teacher accuracy {summary['teacher_accuracy']:.1%}) and {summary['n_gold']} gold labels"
            )
        else:
            from ml.demo_contracts import generate

            summary = generate(out, n_documents=n_calls, n_gold=n_gold, seed=seed, workflow=wf.name)
            wrong = sum(n for kind, n in summary["teacher_answers"].items() if kind != "correct")
            what = (
                f"{summary['n_documents']} contracts ({summary['mean_pages']} pages on average) with their "
                f"frontier calls ({summary['n_error']} errors, {summary['n_timeout']} timeouts, {wrong} wrong "
                f"answers) and {summary['n_gold']} gold contracts"
            )
        (out / "summary.done").write_text(str(summary))
        echo(f"generated {what} in {out}")
    _book_demo_people_hours(settings, wf)
    drop = drop_dir_for(settings, wf)
    shutil.copyfile(out / "call_log.jsonl", drop / f"call_log_seed{seed}.jsonl")
    if store_for(settings, wf).current("eval") is None:
        shutil.copyfile(out / gold, drop / "eval" / gold.replace("gold", f"gold_seed{seed}"))
    return {"demo_data": str(out), "drop": str(drop)}


# Example hours a small team spends on the workflow each month, booked once per month so the
# fully loaded break-even has people in it. They are demo inputs like the generated call log:
# replace them with real timesheets (`mlops costs add --role ... --quantity HOURS`).
DEMO_MONTHLY_HOURS = {"ml_engineer": 12, "data_engineer": 8, "model_owner": 2}


def _book_demo_people_hours(settings, wf) -> None:
    from datetime import date

    from ml.costs.capture import book_manual
    from ml.costs.ledger import Ledger
    from ml.costs.pricebook import PriceBook

    today = date.today()
    book = PriceBook.load(settings.price_book_file)
    with Ledger(settings.ledger_url) as ledger:
        for role, hours in DEMO_MONTHLY_HOURS.items():
            book_manual(
                ledger,
                price_book=book,
                workflow=wf.name,
                on=today,
                quantity=hours,
                person="mlops demo",
                role=role,
                description=f"demo example: {hours} h of {role} time this month",
                idempotency_key=f"demo:{wf.name}:{role}:{today:%Y-%m}",
            )


def summary(settings, wf) -> dict:
    from ml import registry

    client = registry.configure(settings)
    champ = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    out = {
        "workflow": wf.name,
        "model": wf.model_name,
        "champion": str(champ.version) if champ else None,
        "model_uri": f"models:/{wf.model_name}@champion" if champ else None,
        "macro_f1": champ.tags.get("macro_f1") if champ else None,
        "metric": wf.headline_metric,
        "score": champ.tags.get(wf.headline_metric) if champ else None,
        "latency_p99_ms": champ.tags.get("latency_p99_ms") if champ else None,
        "gate_failures": [] if champ else _latest_gate_failures(client, wf),
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        "ledger": settings.ledger_url,
        "reports": str(settings.reports_dir / wf.name),
        "state_dir": str(settings.state_dir),
        "airflow_ui": "mlops airflow standalone   # then http://localhost:8080",
        "mlflow_ui": f"mlflow ui --backend-store-uri {settings.mlflow_tracking_uri} --port 5000",
    }
    return out


def _latest_gate_failures(client, wf) -> list[str]:
    import json

    from ml import registry

    try:
        versions = registry.list_versions(client, wf.model_name)
    except Exception:  # noqa: BLE001 - no registered model yet
        return ["no model version registered"]
    if not versions:
        return ["no model version registered"]
    tags = client.get_model_version(wf.model_name, versions[-1]["version"]).tags
    return json.loads(tags.get("gate_decision", "{}")).get("reasons", [])


def cmd_demo(args) -> int:
    notes_now()
    settings, wf = settings_and_workflow(args)
    settings.ensure_dirs()
    log = (lambda m: None) if args.json else print
    staged = stage_demo_data(settings, wf, n_calls=args.n_calls, n_gold=args.n_gold, seed=args.seed, echo=log)
    runs = run_lifecycle(settings, wf, [s for s in DAGS if s != "cost_report"], echo=log)
    first = summary(settings, wf)
    if first["champion"] is None:
        raise RuntimeError(
            f"the lifecycle ran but no version became @champion; the gate said: "
            f"{'; '.join(first['gate_failures'])} (see `mlops models show N -w {wf.name}`)"
        )
    keep_current = {"shown": False, "reason": "--skip-keep-current"}
    if not args.skip_keep_current:
        from ml import demo_keep_current

        keep_current = demo_keep_current.run(settings, wf, seed=args.seed, n_calls=args.n_calls, echo=log)
    runs += run_lifecycle(settings, wf, ["cost_report"], echo=log)  # the books include keeping current
    result = {**summary(settings, wf), **staged, "dag_runs": runs, "keep_current": keep_current}
    text = "\n".join(
        [
            "",
            f"Lifecycle done for workflow '{wf.name}'.",
            f"  champion:      {result['model_uri']} (v{result['champion']}), {result['metric']} {result['score']}, "
            f"p99 {result['latency_p99_ms']} ms",
            f"  kept current:  {_kept_current_line(result['keep_current'])}",
            f"  MLflow:        {result['mlflow_tracking_uri']}",
            f"  reports:       {result['reports']}  (break-even, data docs, costs)",
            f"  cost ledger:   {result['ledger']}",
            f"  Airflow UI:    {result['airflow_ui']}",
            f"  MLflow UI:     {result['mlflow_ui']}",
            f"  next:          mlops models list -w {wf.name} | mlops costs report -w {wf.name} | "
            f"mlops data versions -w {wf.name}",
        ]
    )
    emit(args, result, text)
    return 0


def _kept_current_line(kc: dict) -> str:
    if not kc.get("shown"):
        return f"not shown ({kc.get('reason')})"
    if kc["probe"].get("skipped"):
        return f"teacher update probed in {kc['run_id']}: skipped, the teachers agree"
    verdict = (
        f"promoted v{kc['challenger']}"
        if kc["promoted"]
        else f"kept v{kc['champion']} (challenger v{kc['challenger']})"
    )
    return f"teacher update -> asset-triggered {kc['dag_id']} -> {verdict}"


def cmd_run(args) -> int:
    notes_now()
    settings, wf = settings_and_workflow(args)
    settings.ensure_dirs()
    stages = [args.only] if args.only else list(DAGS)
    # Under --json, print() goes to stderr (main() keeps stdout for the document): progress stays visible.
    runs = run_lifecycle(settings, wf, stages, echo=print)
    emit(args, {"workflow": wf.name, "dag_runs": runs}, table(runs, ["dag_id", "state", "log"]))
    return 0


def cmd_airflow(args) -> int:
    """Any airflow command with the platform's AIRFLOW_HOME, dags/ and plugins/."""
    settings = load_settings()
    settings.ensure_dirs()
    if not args.airflow_args:
        raise ValueError(
            "name an airflow command, e.g. `mlops airflow standalone` or `mlops airflow dags list -o json`"
        )
    if args.airflow_args[:1] != ["db"]:
        migrate(settings)
    # On a pipe, Airflow's own log lines (warnings) go to stderr so that `-o json` output parses.
    piped = not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
    return run_airflow(settings, args.airflow_args, check=False, split_stdout=piped).returncode


def _check(name: str, fn) -> dict:
    try:
        detail = fn()
        return {"check": name, "ok": True, "detail": detail or "ok"}
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure, then exits 1
        return {"check": name, "ok": False, "detail": str(exc).splitlines()[0][:300]}


def cmd_doctor(args) -> int:
    settings = load_settings()

    def versions():
        pins = {
            "apache-airflow": "3.3.",
            "mlflow": "3.17.",
            "torch": "2.13.",
            "transformers": "5.",
            "great-expectations": "1.",
            "dvc": "3.",
        }
        found = {p: md.version(p) for p in pins}
        bad = [f"{p} {v} (want {pins[p]}x)" for p, v in found.items() if not v.startswith(pins[p])]
        if sys.version_info[:2] != (3, 11):
            bad.append(f"Python {sys.version.split()[0]} (want 3.11)")
        if bad:
            raise RuntimeError(f"unexpected versions: {', '.join(bad)}; run `make install`")
        return ", ".join(f"{p} {v}" for p, v in found.items())

    state_warning = state_note(settings)  # before the checks below create the folder

    def state_writable():
        settings.ensure_dirs()
        probe = settings.state_dir / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        return str(settings.state_dir)

    def workflows_file():
        return ", ".join(load_workflows(settings.workflows_file))

    def price_book():
        from ml.costs.pricebook import PriceBook

        PriceBook.load(settings.price_book_file)
        return str(settings.price_book_file)

    def base_models():
        from ml.train.student import resolve_base_model

        return ", ".join(
            f"{w.name}: {resolve_base_model(w.base_model)}"
            for w in load_workflows(settings.workflows_file).values()
        )

    def database(url_attr):
        def check():
            import sqlalchemy

            url = getattr(settings, url_attr)
            engine = sqlalchemy.create_engine(url)
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("select 1"))
            engine.dispose()
            return url

        return check

    def device():
        import torch

        return (
            f"CUDA: {torch.cuda.get_device_name(0)}"
            if torch.cuda.is_available()
            else "CPU only (training falls back to the CPU)"
        )

    checks = [
        _check("versions", versions),
        _check("state folder writable", state_writable),
        _check("workflows file", workflows_file),
        _check("price book", price_book),
        _check("base model present", base_models),
        _check("ledger database", database("ledger_url")),
        _check("device", device),
    ]
    if settings.mlflow_tracking_uri.split(":")[0] in ("sqlite", "postgresql", "mysql"):
        checks.insert(5, _check("MLflow database", database("mlflow_tracking_uri")))
    if state_warning:
        # A warning, not a failure: a new state is how every install starts.
        checks.insert(
            2, {"check": "state folder has data", "ok": True, "warning": True, "detail": state_warning}
        )
    for c in checks:
        c.setdefault("warning", False)
    ok = all(c["ok"] for c in checks)
    emit(
        args,
        {"ok": ok, "warnings": sum(bool(c.get("warning")) for c in checks), "checks": checks},
        "\n".join(
            f"{'WARN' if c.get('warning') else 'ok  ' if c['ok'] else 'FAIL'}  {c['check']:<22} {c['detail']}"
            for c in checks
        ),
    )
    return 0 if ok else 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="generate demo data and run the whole lifecycle as real Airflow DAG runs")
    add_workflow(p)
    p.add_argument("--n-calls", type=int, default=2400, help="frontier calls in the demo call log")
    p.add_argument("--n-gold", type=int, default=400, help="human-labelled examples in the evaluation set")
    p.add_argument("--seed", type=int, default=42, help="seed of the demo data generator")
    p.add_argument(
        "--skip-keep-current",
        action="store_true",
        help="stop after the first champion: no teacher update, no asset-triggered re-distillation",
    )
    add_json(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the workflow's DAGs now (ingest_validate, distill, cost_report)")
    add_workflow(p)
    p.add_argument("--only", choices=DAGS, help="run just this DAG")
    add_json(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "airflow",
        help="run an airflow command with the platform's settings, e.g. `mlops airflow standalone`",
        description="Runs `airflow ARGS...` with AIRFLOW_HOME in the state folder, this repository's "
        "dags/ and plugins/, and this venv's bin on PATH; every flag after the command "
        "goes to airflow (`mlops airflow dags list -o json`). Port of `standalone`: "
        "AIRFLOW__API__PORT=8081 mlops airflow standalone.",
    )
    p.add_argument("airflow_args", nargs=argparse.REMAINDER, help="the airflow command and its flags")
    p.set_defaults(func=cmd_airflow)

    p = sub.add_parser(
        "doctor", help="check versions, state folder, databases and base model; say what to fix"
    )
    add_json(p)
    p.set_defaults(func=cmd_doctor)
