"""Steps of the cost_report DAG: book what is metered, then answer "does post-training pay?".

1. `book_metered`: frontier spend from the accepted call logs (tokens × price book, never the
   provider's own figure) and this month's storage of datasets and model artifacts.
2. `build_report`: the ninety-day constraints measured on the call log, the break-even arithmetic
   fed by the ledger (naive compute-only beside fully loaded), the verdict, and the outputs:
   HTML with charts, JSON, and a FinOps FOCUS CSV of the ledger.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from ml import breakeven
from ml.costs import capture
from ml.costs.ledger import Category, Ledger
from ml.costs.pricebook import PriceBook
from ml.pipeline.ingest_validate import context


def _call_log_rows(settings, wf):
    """Every row of every accepted call log (the archived raw files, byte for byte as dropped)."""
    raw = settings.data_dir / wf.name / "raw"
    for path in sorted(raw.glob("*.jsonl")) if raw.exists() else []:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if "request_text" in row:
                        yield row


def book_metered(workflow: str) -> dict:
    settings, wf = context(workflow)
    book = PriceBook.load(settings.price_book_file)
    today = datetime.now(timezone.utc).date()
    with Ledger(settings.ledger_url) as ledger:
        frontier = capture.book_frontier_calls(ledger, _call_log_rows(settings, wf), book, wf.name)
        stored = {"datasets": str(settings.data_dir / wf.name),
                  "remote": f"{settings.dvc_remote_url.rstrip('/')}/{wf.name}",
                  "artifacts": f"{settings.mlflow_artifact_root.rstrip('/')}/{wf.name}"}
        storage = []
        for name, location in stored.items():
            start = _metered_until(ledger, wf.name, f"storage:{name}") or today - timedelta(days=1)
            if start >= today:  # each day is metered once, at the size seen after it
                continue
            n_bytes = stored_bytes(location)
            if n_bytes is not None:
                storage.append(capture.book_storage(ledger, n_bytes, workflow=wf.name, price_book=book,
                                                    period_start=start, period_end=today, resource=f"storage:{name}"))
    return {"frontier_entries": len(frontier), "storage_entries": len(storage)}


def stored_bytes(location: str) -> int | None:
    """Bytes kept in a local folder or under an s3:// prefix (MinIO in production); None where nothing is.

    Other remote schemes are not metered here: book them by hand (`mlops costs add`).
    """
    if location.startswith("s3://"):
        import fsspec  # s3fs, installed with dvc-s3; endpoint and keys from the AWS_* environment

        fs = fsspec.filesystem("s3")
        return int(fs.du(location)) if fs.exists(location) else None
    if "://" in location:
        return None
    path = Path(location)
    return capture.size_bytes(path) if path.exists() else None


def _metered_until(ledger: Ledger, workflow: str, resource: str) -> date | None:
    """End of the last storage period booked for this resource (its key ends with the period's end)."""
    ends = [date.fromisoformat(e.idempotency_key.rsplit(":", 1)[1])
            for e in ledger.entries(workflow=workflow, category=Category.VERSIONING_STORAGE.value)
            if e.resource == resource and e.source_kind == "system"]
    return max(ends, default=None)


def _constraints(settings, wf, book: PriceBook) -> tuple[breakeven.Constraints, dict]:
    """The ninety-day test, measured exactly as `mlops frontier report` measures it."""
    from dataclasses import asdict

    from ml.frontier import calllog, constraints

    log_dir = calllog.calllog_dir(settings.state_dir, wf.name)
    rows = calllog.read_rows(log_dir) + list(_call_log_rows(settings, wf))
    now = datetime.now(timezone.utc)
    try:
        m = constraints.measure(rows, wf, book, now=now, window_days=90)
    except constraints.NoCallsError:  # an old log only: measure all of it rather than nothing
        oldest = min(datetime.fromisoformat(str(r["ts"]).replace("Z", "+00:00")) for r in rows)
        m = constraints.measure(rows, wf, book, now=now, window_days=(now - oldest).days + 1)
    return constraints.constraints(m, wf), json.loads(json.dumps(asdict(m), default=str))


def _frontier_per_call(settings, wf, book: PriceBook) -> Decimal:
    tin = tout = n = 0
    model = None
    for row in _call_log_rows(settings, wf):
        if row.get("status") == "ok":
            tin, tout, n, model = tin + int(row["tokens_in"]), tout + int(row["tokens_out"]), n + 1, row["model"]
    if n == 0:
        raise ValueError(f"{wf.name}: no successful frontier calls in the accepted call logs; "
                         "drop a call log (mlops data import) so the frontier's cost can be measured.")
    price_in, price_out = book.frontier_token_prices(model, date.today())
    return breakeven.frontier_cost_per_call_usd(Decimal(tin) / n, Decimal(tout) / n, price_in, price_out)


def _serving_throughput(settings, wf) -> tuple[float | None, str | None]:
    """Measured throughput of @champion, else of the newest version (the one that would serve)."""
    from ml import registry

    client = registry.configure(settings)
    version = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    if version is None:
        versions = registry.list_versions(client, wf.model_name) if _registered(client, wf.model_name) else []
        if not versions:
            return None, None
        version = client.get_model_version(wf.model_name, versions[-1]["version"])
    run = client.get_run(version.run_id)
    return run.data.metrics.get("eval.throughput_calls_per_s"), str(version.version)


def _registered(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def _observed_months(entries) -> Decimal:
    """Months the ledger has been collecting, at least one (a first day's spend is not a month's)."""
    if not entries:
        return Decimal(1)
    days = (max(e.occurred_at for e in entries) - min(e.occurred_at for e in entries)).days + 1
    return max(Decimal(1), Decimal(days) / Decimal("30.44"))


def build_report(workflow: str) -> dict:
    settings, wf = context(workflow)
    book = PriceBook.load(settings.price_book_file)
    frontier_per_call = _frontier_per_call(settings, wf, book)
    throughput, serving_version = _serving_throughput(settings, wf)
    if not throughput:
        raise ValueError(f"{wf.name}: no model version with a measured throughput yet; run distill first.")
    hour_usd = book.compute_hour_usd(wf.serving_resource, date.today())
    self_hosted = breakeven.self_hosted_cost_per_call_usd(throughput, hour_usd, wf.serving_utilisation)
    with Ledger(settings.ledger_url) as ledger:
        entries = ledger.entries(workflow=wf.name)
    # Frontier spend and serving are priced per call by the break-even itself, not MLOps spend.
    mlops = [e for e in entries if e.category not in (Category.FRONTIER_API.value, Category.SERVING.value)]
    totals: dict[str, Decimal] = {}
    for e in mlops:
        totals[e.category] = totals.get(e.category, Decimal(0)) + e.amount
    spend = breakeven.spend_from_category_totals(totals, _observed_months(mlops))
    inputs = breakeven.BreakEvenInputs(
        calls_per_month=wf.monthly_calls, growth_per_month=Decimal(str(wf.monthly_growth)),
        frontier_cost_per_call_usd=frontier_per_call, self_hosted_cost_per_call_usd=self_hosted, spend=spend,
        serving_fixed_usd_per_month=hour_usd * 730 if wf.serving_always_on else Decimal(0))
    naive, full = breakeven.naive_vs_fully_loaded(inputs)
    constraints, measured = _constraints(settings, wf, book)
    verdict = breakeven.decide(constraints, full, naive)
    sensitivity = breakeven.sensitivity(inputs)

    out_dir = settings.reports_dir / wf.name
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "workflow": wf.name, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "price_book_version": book.version, "verdict": verdict.verdict, "reasons": verdict.reasons,
        "constraints_failing": verdict.constraints_failing, "measured": measured,
        "frontier_cost_per_call_usd": str(frontier_per_call), "self_hosted_cost_per_call_usd": str(self_hosted),
        "throughput_calls_per_s": throughput, "serving_version": serving_version, "ledger_totals_usd": {k: str(v) for k, v in sorted(totals.items())},
        "one_time_usd": str(spend.fully_loaded()[0]), "recurring_usd_per_month": str(spend.fully_loaded()[1]),
        "naive": _summary(naive), "fully_loaded": _summary(full),
        "sensitivity": [{"parameter": r.parameter, "factor": str(r.factor), "break_even_month": r.break_even_month,
                         "saving_at_horizon_usd": str(round(r.cumulative_saving_at_horizon_usd, 2))} for r in sensitivity],
        "months": [{"month": r.month, "calls": r.calls, "frontier_usd": str(round(r.cumulative_frontier_usd, 2)),
                    "post_training_usd": str(round(r.cumulative_post_training_usd, 2))} for r in full.rows],
    }
    (out_dir / "breakeven.json").write_text(json.dumps(report, indent=2))
    from ml.costs.report import write_focus_csv, write_html

    write_html(report, naive, full, entries, out_dir)
    write_focus_csv(entries, out_dir / "costs_focus.csv")
    print(f"{wf.name}: {verdict.verdict}\n  " + "\n  ".join(verdict.reasons))
    return {"verdict": verdict.verdict, "report": str(out_dir / "breakeven.html"),
            "break_even_month": full.break_even_month, "naive_break_even_month": naive.break_even_month}


def _summary(result: breakeven.BreakEvenResult) -> dict:
    return {"break_even_month": result.break_even_month,
            "saving_at_horizon_usd": str(round(result.cumulative_saving_at_horizon_usd, 2)),
            "break_even_calls_per_month": result.break_even_calls_per_month,
            "horizon_months": result.inputs.horizon_months}
