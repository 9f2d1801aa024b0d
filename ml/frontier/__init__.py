"""Frontier instrumentation: the ninety-day test, and the training data it yields.

- `client`: an instrumented OpenAI-compatible client; every call becomes one call-log row.
- `proxy`: `mlops proxy`, the HTTP endpoint applications call instead of the provider (and shadow mode).
- `calllog`: the append-only JSONL call log, written off the request path; export to curation.
- `constraints`: rows → latency, cost and reliability against the workflow's targets (pure).

The two steps of the frontier_report DAG live here, so the DAG only calls them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ml.config import Settings, load_settings
from ml.costs import unit_costs
from ml.frontier import calllog, constraints
from ml.workflows import get_workflow


def _context(workflow: str, settings: Settings | None):
    settings = settings or load_settings()
    return settings, get_workflow(settings.workflows_file, workflow)


def export_for_curation(
    workflow: str, *, gold_share: float = 0.05, settings: Settings | None = None, now: datetime | None = None
) -> dict:
    """Completed days of the proxy's log → a call-log batch in the drop folder (ingest_validate
    picks it up) and a request sample under <state>/labeling/<wf>/ for human gold labels (a
    label column, or one column per declared field: the gold file the workflow's task reads)."""
    from ml.data.ingest import PiiMasker

    settings, wf = _context(workflow, settings)
    return calllog.export_for_curation(
        calllog.calllog_dir(settings.state_dir, wf.name),
        settings.drop_dir / wf.name,
        settings.state_dir / "labeling" / wf.name,
        min_rows=wf.validation.min_rows,
        gold_share=gold_share,
        now=now,
        mask=PiiMasker.for_workflow(wf),
        gold_columns=tuple(wf.fields) or ("label",),
    )


def build_report(
    workflow: str,
    *,
    window_days: int = unit_costs.NINETY_DAY_WINDOW_DAYS,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> dict:
    """The constraint report over the window, written to <reports>/<wf>/frontier_constraints.json.

    Reads the proxy's log and every accepted call log (imported ones too); a call in both counts once.
    """
    from ml.costs.pricebook import PriceBook

    settings, wf = _context(workflow, settings)
    log_dir = calllog.calllog_dir(settings.state_dir, wf.name)
    accepted = sorted((settings.data_dir / wf.name / "raw").glob("*.jsonl"))
    rows = calllog.read_rows(log_dir) + [r for r in calllog.read_jsonl(accepted) if "request_text" in r]
    shadow = calllog.read_jsonl(sorted((log_dir / "shadow").glob("*.jsonl")))
    report = constraints.report(
        rows,
        wf,
        PriceBook.load(settings.price_book_file),
        now=now or datetime.now(timezone.utc),
        window_days=window_days,
        shadow_rows=shadow,
    )
    out: Path = settings.reports_dir / wf.name / "frontier_constraints.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    return {**report, "path": str(out)}
