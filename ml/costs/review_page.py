"""The cost-review page: per workflow, the break-even verdict and the ledger's spend by month.

A cost reviewer opens it from the Airflow UI (plugins/cost_review.py serves it). It reads what
the cost_report DAG wrote (`<reports_dir>/<workflow>/breakeven.json`) and the live ledger, so a
spend booked since the last report already shows. Nothing here knows Airflow or a web
framework: the plugin only routes requests to these functions.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from ml.costs.ledger import CATEGORIES, LedgerError

REPORT_JSON = "breakeven.json"
REPORT_HTML = "breakeven.html"


@dataclass(frozen=True)
class WorkflowReview:
    """What the page shows for one workflow; `problem` says why there is no verdict and what to run."""

    workflow: str
    description: str = ""
    verdict: str | None = None
    reasons: tuple[str, ...] = ()
    generated_at: str | None = None
    naive: dict | None = None
    fully_loaded: dict | None = None
    problem: str | None = None
    basis: tuple[str, ...] = ()  # what the verdict stands on: ml.costs.report.summary_lines
    has_html_report: bool = False
    spend_usd: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (month, category) -> amount
    ledger_problem: str | None = None

    def to_json(self) -> dict:
        """JSON-safe: money as exact decimal strings (round for display only)."""
        return {
            "workflow": self.workflow,
            "description": self.description,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "basis": list(self.basis),
            "generated_at": self.generated_at,
            "problem": self.problem,
            "break_even": {"naive": self.naive, "fully_loaded": self.fully_loaded},
            "has_html_report": self.has_html_report,
            "ledger_usd": [
                {"month": m, "category": c, "amount_usd": str(a)}
                for (m, c), a in sorted(self.spend_usd.items())
            ],
            "ledger_total_usd": str(sum(self.spend_usd.values(), Decimal(0))),
            "ledger_problem": self.ledger_problem,
        }


def read_report(reports_dir: Path, workflow: str) -> tuple[dict | None, str | None]:
    """(the break-even report, None) or (None, why it cannot be shown and what to run)."""
    path = Path(reports_dir) / workflow / REPORT_JSON
    rerun = f"run cost_report__{workflow}"
    if not path.is_file():
        return None, f"no report yet — {rerun}"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} cannot be read ({exc}); {rerun} to write it again"
    # The page needs only these keys; a file without them was not written by cost_report.
    expected = {"verdict": str, "reasons": list, "naive": dict, "fully_loaded": dict}
    if not isinstance(report, dict):
        return None, f"{path} is not a break-even report (not a JSON object); {rerun} to write it again"
    for key, kind in expected.items():
        if not isinstance(report.get(key), kind):
            return None, (
                f"{path} is not a break-even report ('{key}' is missing or not a {kind.__name__}); "
                f"{rerun} to write it again"
            )
    return report, None


def review(workflow: str, description: str, reports_dir: Path, ledger) -> WorkflowReview:
    """Everything the page shows for one workflow, from its report file and the open `ledger`."""
    report, problem = read_report(reports_dir, workflow)
    try:
        ledger.check_intact()  # a tampered ledger is named, never summed
        spend = ledger.totals(group_by=("month", "category"), workflow=workflow)
        ledger_problem = None
    except LedgerError as exc:  # tampered, mixed currencies: show it, the verdict is still worth reading
        spend, ledger_problem = {}, str(exc)
    from ml.costs.report import summary_lines

    basis = tuple(summary_lines(report)[1:]) if report else ()
    report = report or {}
    return WorkflowReview(
        workflow=workflow,
        description=description,
        verdict=report.get("headline") or report.get("verdict"),
        basis=basis,
        reasons=tuple(str(r) for r in report.get("reasons", ())),
        generated_at=report.get("generated_at"),
        naive=report.get("naive"),
        fully_loaded=report.get("fully_loaded"),
        problem=problem,
        has_html_report=(Path(reports_dir) / workflow / REPORT_HTML).is_file(),
        spend_usd=spend,
        ledger_problem=ledger_problem,
    )


def usd(amount: Decimal) -> str:
    """$1,234.57 (half-even to the cent, like the ledger); a reversal nets negative: -$5.00."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(Decimal(amount)):,.2f}"


# HTML -------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2933;max-width:1100px}
h1{font-size:1.5em;margin:0 0 .2em} h2{font-size:1.2em;margin:0 0 .3em} .muted{color:#616e7c}
section{border:1px solid #d9e2ec;border-radius:8px;padding:1em 1.2em;margin:1em 0}
.verdict{font-size:1.15em;font-weight:600;padding:.3em .6em;border-radius:4px;display:inline-block;margin:.2em 0 .4em}
.pays{background:#e3f9e5;color:#05400a} .stay{background:#fff3c4;color:#5c4813} .none{background:#f0f4f8;color:#52606d}
table{border-collapse:collapse;margin:.6em 0} td,th{padding:3px 12px;border-bottom:1px solid #e4e7eb;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums} tr.total td{font-weight:600}
"""


def _break_even(name: str, result: dict | None) -> str:
    if not result:
        return ""
    month, saving = result.get("break_even_month"), result.get("saving_at_horizon_usd")
    horizon = result.get("horizon_months")
    when = f"month {html.escape(str(month))}" if month else "never"
    try:
        saved = usd(Decimal(str(saving))) if saving is not None else "n/a"
    except ArithmeticError:
        saved = html.escape(str(saving))
    horizon_text = f" at month {html.escape(str(horizon))}" if horizon else ""
    return f"<tr><td>{name}</td><td>{when}</td><td class=num>{html.escape(saved)}{horizon_text}</td></tr>"


def _spend_table(r: WorkflowReview, wf_id: str) -> str:
    if r.ledger_problem:
        return f"<p class=muted>Ledger: {html.escape(r.ledger_problem)}</p>"
    if not r.spend_usd:
        return "<p class=muted>Nothing booked in the ledger for this workflow yet.</p>"
    months = sorted({m for m, _ in r.spend_usd})
    present = {c for _, c in r.spend_usd}
    categories = [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))
    head = "".join(f"<th class=num>{html.escape(m)}</th>" for m in months)
    rows = []
    for cat in categories:
        cells = [r.spend_usd.get((m, cat), Decimal(0)) for m in months]
        rows.append(
            f'<tr data-category="{html.escape(cat)}"><td>{html.escape(cat)}</td>'
            + "".join(f"<td class=num>{usd(v)}</td>" for v in cells)
            + f"<td class=num>{usd(sum(cells, Decimal(0)))}</td></tr>"
        )
    month_totals = [
        sum((r.spend_usd.get((m, c), Decimal(0)) for c in categories), Decimal(0)) for m in months
    ]
    rows.append(
        "<tr class=total><td>total</td>"
        + "".join(f"<td class=num>{usd(v)}</td>" for v in month_totals)
        + f"<td class=num>{usd(sum(month_totals, Decimal(0)))}</td></tr>"
    )
    return (
        f'<table id="ledger-{wf_id}"><tr><th>category</th>{head}<th class=num>total</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _section(r: WorkflowReview) -> str:
    esc = html.escape
    wf_id = esc(r.workflow)
    if r.verdict is None:
        verdict = f'<p class="verdict none" id="verdict-{wf_id}">{esc(r.problem or "no report yet")}</p>'
    else:
        kind = (
            "stay"
            if r.verdict.startswith("stay")
            else "none"
            if r.verdict.startswith("no verdict")
            else "pays"
        )
        verdict = f'<p class="verdict {kind}" id="verdict-{wf_id}">{esc(r.verdict)}</p>'
    reasons = "".join(f"<li>{esc(x)}</li>" for x in r.reasons)
    parts = [f'<section id="wf-{wf_id}"><h2>{wf_id}</h2>']
    if r.description:
        parts.append(f"<p class=muted>{esc(r.description)}</p>")
    parts.append(verdict)
    if r.basis:
        parts.append(f'<ul id="basis-{wf_id}">' + "".join(f"<li>{esc(x)}</li>" for x in r.basis) + "</ul>")
    if reasons:
        parts.append(f'<ul id="reasons-{wf_id}">{reasons}</ul>')
    if r.naive or r.fully_loaded:
        parts.append(
            "<table><tr><th>break-even</th><th>month</th><th class=num>saving</th></tr>"
            + _break_even("fully loaded", r.fully_loaded)
            + _break_even("compute only (naive)", r.naive)
            + "</table>"
        )
    if r.generated_at:
        parts.append(f"<p class=muted>Report generated {esc(str(r.generated_at))}.</p>")
    if r.has_html_report:
        # Relative, so the link works under any base URL or reverse-proxy prefix.
        parts.append(
            f'<p><a id="report-{wf_id}" href="{esc(quote(r.workflow))}/report">'
            f"Full break-even report (charts, sensitivity)</a></p>"
        )
    parts.append("<h3>Ledger spend by month</h3>")
    parts.append(_spend_table(r, wf_id))
    parts.append("</section>")
    return "".join(parts)


def render_page(reviews: list[WorkflowReview], problem: str | None = None) -> str:
    """The whole page; every value from a file or the ledger is escaped."""
    body = "".join(_section(r) for r in reviews)
    if problem:
        body = f'<p class="verdict none" id=problem>{html.escape(problem)}</p>' + body
    elif not reviews:
        body = "<p class=muted>No workflow to show: none is declared, or you may read none of them.</p>"
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Cost review</title>"
        f"<style>{_STYLE}</style></head><body><h1>Cost review</h1>"
        f"<p class=muted>Does post-training pay? The verdict of each workflow's latest break-even report, "
        f"and what the ledger has booked since, by category and month (USD).</p>{body}</body></html>"
    )
