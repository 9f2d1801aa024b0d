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
from ml.costs import capture, unit_costs
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
        stored = {
            "datasets": str(settings.data_dir / wf.name),
            "remote": f"{settings.dvc_remote_url.rstrip('/')}/{wf.name}",
            "artifacts": f"{settings.mlflow_artifact_root.rstrip('/')}/{wf.name}",
        }
        storage = []
        for name, location in stored.items():
            start = _metered_until(ledger, wf.name, f"storage:{name}") or today - timedelta(days=1)
            if start >= today:  # each day is metered once, at the size seen after it
                continue
            n_bytes = stored_bytes(location)
            if n_bytes is not None:
                storage.append(
                    capture.book_storage(
                        ledger,
                        n_bytes,
                        workflow=wf.name,
                        price_book=book,
                        period_start=start,
                        period_end=today,
                        resource=f"storage:{name}",
                    )
                )
        tooling = _book_tooling(settings, wf, book, ledger, today)
    return {
        "frontier_entries": len(frontier),
        "storage_entries": len(storage),
        "tooling_entries": len(tooling),
    }


def _book_tooling(settings, wf, book: PriceBook, ledger: Ledger, today: date) -> list:
    """The workflow's share of the control plane (capture.book_tooling_months states the rule)."""
    from ml.workflows import load_workflows

    # Since the platform first ran a task for it: the frontier call log can be far older than that.
    first = min(
        (e.occurred_at.date() for e in ledger.entries(workflow=wf.name) if e.source_kind == "task"),
        default=today,
    )
    return capture.book_tooling_months(
        ledger,
        book,
        workflow=wf.name,
        workflows=sorted(load_workflows(settings.workflows_file)),
        first_month=first,
        until=today,
    )


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
    ends = [
        date.fromisoformat(e.idempotency_key.rsplit(":", 1)[1])
        for e in ledger.entries(workflow=workflow, category=Category.VERSIONING_STORAGE.value)
        if e.resource == resource and e.source_kind == "system"
    ]
    return max(ends, default=None)


def call_log_rows(settings, wf) -> list[dict]:
    """Every frontier call known for the workflow: the proxy's log and every accepted call log."""
    from ml.frontier import calllog

    return calllog.read_rows(calllog.calllog_dir(settings.state_dir, wf.name)) + list(
        _call_log_rows(settings, wf)
    )


def _window_rows(rows: list[dict], now: datetime) -> tuple[list[dict], int]:
    """(the calls of the ninety-day window, its length in days); an old log only is measured whole."""
    from ml.frontier import constraints

    window_days = unit_costs.NINETY_DAY_WINDOW_DAYS
    if rows and not constraints.in_window(rows, now, window_days):
        oldest = min(constraints._ts(r) for r in rows)
        window_days = (now - oldest).days + 1
    return constraints.in_window(rows, now, window_days), window_days


def frontier_side(settings, wf, book: PriceBook, now: datetime) -> unit_costs.FrontierCost | None:
    """The frontier's cost per call: measured on the call log's ninety-day window when there are
    calls, else the workflow's declared `frontier:` use; None when neither exists."""
    rows, _ = _window_rows(call_log_rows(settings, wf), now)
    measured = unit_costs.measured_frontier_cost(rows, book)
    if measured is not None:
        return measured
    if wf.frontier.model:
        return unit_costs.declared_frontier_cost(
            wf.frontier.model,
            wf.frontier.tokens_in_per_call,
            wf.frontier.tokens_out_per_call,
            book,
            now.date(),
        )
    return None


def _constraints(
    settings, wf, book: PriceBook, now: datetime
) -> tuple[breakeven.Constraints | None, dict | None]:
    """The ninety-day test, measured exactly as `mlops frontier report` measures it; (None, None)
    when no frontier call was ever logged: not measured yet."""
    from dataclasses import asdict

    from ml.frontier import constraints

    rows, window_days = _window_rows(call_log_rows(settings, wf), now)
    if not rows or not any(r.get("status") == "ok" for r in rows):
        return None, None
    m = constraints.measure(rows, wf, book, now=now, window_days=window_days)
    return constraints.constraints(m, wf), json.loads(json.dumps(asdict(m), default=str))


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
    return served_throughput(client.get_run(version.run_id).data.metrics), str(version.version)


def served_throughput(metrics: dict) -> float | None:
    """The throughput of the variant the gate judged and that is served (eval.served.*), else, for a
    version registered before variants were chosen, the torch model's: priced as it was judged."""
    return metrics.get("eval.served.throughput_calls_per_s") or metrics.get("eval.throughput_calls_per_s")


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
    return max(Decimal(1), Decimal(days) / unit_costs.DAYS_PER_MONTH)


def _pending(wf, out_dir: Path, generated_at: str, book: PriceBook, why: str) -> dict:
    """A report that says what is missing, instead of a failed task: no verdict yet, and why."""
    report = {
        "workflow": wf.name,
        "generated_at": generated_at,
        "price_book_version": book.version,
        "verdict": f"no verdict yet: {why}",
        "reasons": [why],
        "headline": f"no verdict yet: {why}",
        "constraints_failing": [],
        "measured": None,
        "naive": {},
        "fully_loaded": {},
        "sensitivity": [],
        "months": [],
        "ledger_totals_usd": {},
        "pending": True,
    }
    (out_dir / "breakeven.json").write_text(json.dumps(report, indent=2))
    (out_dir / "breakeven.html").unlink(
        missing_ok=True
    )  # an older verdict must not be linked as the current one
    print(f"{wf.name}: {report['verdict']}")
    return report


def build_report(workflow: str) -> dict:
    """The break-even report of one workflow; every workflow gets one (a pending one says what is missing)."""
    from ml.costs.report import write_focus_csv, write_html

    settings, wf = context(workflow)
    book = PriceBook.load(settings.price_book_file)
    now = datetime.now(timezone.utc)
    generated_at = now.isoformat(timespec="seconds")
    out_dir = settings.reports_dir / wf.name
    out_dir.mkdir(parents=True, exist_ok=True)
    with Ledger(settings.ledger_url) as ledger:
        ledger.check_intact()  # a tampered ledger gets no report and no export
        entries = ledger.entries(workflow=wf.name)
    write_focus_csv(entries, out_dir / "costs_focus.csv")  # the books, whether or not there is a verdict yet
    frontier = frontier_side(settings, wf, book, now)
    if frontier is None:
        return _summary_of(
            _pending(
                wf,
                out_dir,
                generated_at,
                book,
                "no frontier call logged and no frontier declared; import a call log (mlops data import) or declare "
                "the workflow's frontier: {model, tokens_in_per_call, tokens_out_per_call} in the workflows file",
            ),
            out_dir,
        )
    throughput, serving_version = _serving_throughput(settings, wf)
    if not throughput:
        return _summary_of(
            _pending(
                wf,
                out_dir,
                generated_at,
                book,
                "no model version with a measured throughput yet; run distill first",
            ),
            out_dir,
        )
    plan = unit_costs.serving_plan(wf, book, throughput, now.date())
    self_hosted = plan.cost_per_call_usd(wf.monthly_calls)
    # Frontier spend and serving are priced per call by the break-even itself, not MLOps spend.
    mlops = [e for e in entries if e.category not in (Category.FRONTIER_API.value, Category.SERVING.value)]
    totals: dict[str, Decimal] = {c: Decimal(0) for c in breakeven.CATEGORIES}
    for e in entries:
        totals[e.category] = totals.get(e.category, Decimal(0)) + e.amount
    # The MLOps window starts when the platform first spent: the frontier log can be far older.
    observed_months = _observed_months(mlops)
    spend = breakeven.spend_from_category_totals(
        {c: v for c, v in totals.items() if c in breakeven.MLOPS_CATEGORIES and v > 0}, observed_months
    )
    inputs = breakeven.BreakEvenInputs(
        calls_per_month=wf.monthly_calls,
        growth_per_month=Decimal(str(wf.monthly_growth)),
        frontier_cost_per_call_usd=frontier.cost_per_call_usd,
        serving=plan,
        spend=spend,
    )
    naive, full = breakeven.naive_vs_fully_loaded(inputs)
    constraints, measured = _constraints(settings, wf, book, now)
    verdict = breakeven.decide(constraints, full, naive)
    sensitivity = breakeven.sensitivity(inputs)
    flips = breakeven.flip_points(inputs)
    frontier_entries = [e for e in entries if e.category == Category.FRONTIER_API.value]
    basis = _basis(
        wf,
        frontier,
        measured,
        totals,
        observed_months,
        _observed_months(frontier_entries),
        spend,
        mlops,
        full,
        flips,
    )

    report = {
        "workflow": wf.name,
        "generated_at": generated_at,
        "price_book_version": book.version,
        "verdict": verdict.verdict,
        "headline": f"{verdict.verdict} ({basis['short']})",
        "reasons": verdict.reasons,
        "constraints_failing": verdict.constraints_failing,
        "constraints": "measured" if constraints is not None else "not measured yet",
        "measured": measured,
        "basis": basis,
        "frontier": frontier.to_json(),
        "frontier_cost_per_call_usd": str(frontier.cost_per_call_usd),
        "self_hosted_cost_per_call_usd": str(self_hosted),
        "serving": plan.to_json(wf.monthly_calls),
        "serving_resource": wf.serving_resource,
        "throughput_calls_per_s": throughput,
        "serving_version": serving_version,
        "ledger_totals_usd": {k: str(v) for k, v in totals.items()},
        "one_time_usd": str(spend.fully_loaded()[0]),
        "recurring_usd_per_month": str(spend.fully_loaded()[1]),
        "naive": _summary(naive),
        "fully_loaded": _summary(full),
        "flip_points": [{"parameter": f.parameter, "factor": str(f.factor), "text": f.text} for f in flips],
        "sensitivity": [
            {
                "parameter": r.parameter,
                "factor": str(r.factor),
                "break_even_month": r.break_even_month,
                "saving_at_horizon_usd": str(round(r.cumulative_saving_at_horizon_usd, 2)),
            }
            for r in sensitivity
        ],
        "months": [
            {
                "month": r.month,
                "calls": r.calls,
                "frontier_usd": str(round(r.cumulative_frontier_usd, 2)),
                "post_training_usd": str(round(r.cumulative_post_training_usd, 2)),
                "serving_usd": str(round(r.serving_usd, 2)),
            }
            for r in full.rows
        ],
    }
    (out_dir / "breakeven.json").write_text(json.dumps(report, indent=2))
    write_html(report, naive, full, entries, out_dir)
    print(f"{wf.name}: {report['headline']}\n  " + "\n  ".join(verdict.reasons))
    return _summary_of(report, out_dir)


def _summary_of(report: dict, out_dir: Path) -> dict:
    """What the task hands on (XCom): the verdict and where the report is, never the report."""
    return {
        "verdict": report["verdict"],
        "report": str(out_dir / "breakeven.json"),
        "break_even_month": report["fully_loaded"].get("break_even_month"),
        "naive_break_even_month": report["naive"].get("break_even_month"),
    }


def _basis(
    wf, frontier, measured, totals, observed_months, frontier_months, spend, mlops, full, flips
) -> dict:
    """What the verdict stands on, in words: volume basis, projection vs ledger, what recurs, its margin."""
    from ml.costs.review_page import usd

    observed = measured["calls_per_month_observed"] if measured else None
    volume = f"volume: declared {wf.monthly_calls:,} calls a month (workflows file, monthly_calls)" + (
        f"; the call log shows {observed:,.0f} a month"
        if observed is not None
        else "; no call log to observe it"
    )
    projected_frontier = full.rows[0].frontier_usd
    months = observed_months.quantize(Decimal("0.1"))
    ledger_frontier = totals.get(Category.FRONTIER_API.value, Decimal(0))
    reconciliation = (
        f"projection: {usd(projected_frontier)} of frontier calls and {usd(full.rows[0].serving_usd)} of "
        f"serving in month 1 at the declared volume ({frontier.basis} frontier cost "
        f"{usd(frontier.cost_per_call_usd * 1000)} per 1,000 calls); ledger, as booked: "
        f"{usd(ledger_frontier)} of frontier calls over {frontier_months.quantize(Decimal('0.1'))} "
        f"month(s) of call log ({usd(ledger_frontier / frontier_months)} a month)"
    )
    one_time = sorted(spend.one_time_usd)
    recurring = sorted(spend.recurring_usd_per_month)
    recurring_text = (
        f"recurring: {', '.join(recurring) or 'none'} at their ledger average over {months} month(s) "
        f"({usd(spend.fully_loaded()[1])} a month), because work in these categories (people's review "
        f"and upkeep, evaluation, retraining, storage, tooling) continues while the student serves; "
        f"one-time: {', '.join(one_time) or 'none'} ({usd(spend.fully_loaded()[0])}), the set-up "
        f"(data curation, first training). {len(mlops)} ledger entries feed this."
    )
    horizon = full.inputs.horizon_months
    flip = (
        f"{flips[0].text} within {horizon} months"
        if flips
        else f"no single change within 1/1000× to 1000× of volume, frontier price, people time or retraining "
        f"flips it within {horizon} months"
    )
    short = f"{frontier.basis} frontier cost, declared volume, {flip}"
    return {
        "volume": volume,
        "volume_basis": "declared",
        "frontier_basis": frontier.basis,
        "calls_per_month": wf.monthly_calls,
        "observed_calls_per_month": observed,
        "reconciliation": reconciliation,
        "recurring": recurring_text,
        "recurring_categories": recurring,
        "one_time_categories": one_time,
        "observed_months": str(months),
        "flip": flip,
        "short": short,
    }


def _summary(result: breakeven.BreakEvenResult) -> dict:
    return {
        "break_even_month": result.break_even_month,
        "saving_at_horizon_usd": str(round(result.cumulative_saving_at_horizon_usd, 2)),
        "break_even_calls_per_month": result.break_even_calls_per_month,
        "horizon_months": result.inputs.horizon_months,
    }
