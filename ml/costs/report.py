"""Outputs for cost reviewers: the break-even HTML report with its charts, and a FOCUS CSV.

FOCUS (the FinOps Open Cost and Usage Specification) column names let the ledger be loaded
next to the cloud bills in the same FinOps tool.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from calendar import monthrange
from decimal import Decimal
from pathlib import Path

from ml.breakeven import CATEGORIES
from ml.costs.review_page import usd

FOCUS_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "BillingCurrency", "ChargeCategory", "ChargeDescription",
                 "ChargePeriodStart", "ChargePeriodEnd", "ServiceName", "ServiceCategory", "ResourceId",
                 "ConsumedQuantity", "ConsumedUnit", "ListUnitPrice", "x_Workflow", "x_Model", "x_LedgerCategory",
                 "x_Source", "x_IdempotencyKey")

# Ledger category → FOCUS ServiceCategory (the closest of FOCUS's allowed values).
SERVICE_CATEGORY = {"frontier_api": "AI and Machine Learning", "training_compute": "Compute", "serving": "Compute",
                    "evaluation": "Compute", "data_curation": "Analytics", "keeping_current": "Compute",
                    "versioning_storage": "Storage", "people": "Other", "tooling": "Management and Governance"}


def focus_rows(entries) -> list[dict]:
    rows = []
    for e in entries:
        start = e.occurred_at
        rows.append({
            "BilledCost": str(e.amount), "EffectiveCost": str(e.amount), "ListCost": str(e.amount),
            "BillingCurrency": e.currency,
            # A reversing entry corrects an earlier one: FOCUS calls that an adjustment.
            "ChargeCategory": "Adjustment" if e.reverses_id else ("Purchase" if e.source_kind == "person" else "Usage"),
            "ChargeDescription": e.description, "ChargePeriodStart": start.isoformat(),
            "ChargePeriodEnd": start.replace(day=monthrange(start.year, start.month)[1]).isoformat()
            if e.unit == "GB-month" else start.isoformat(),
            "ServiceName": e.resource.split(":")[0], "ServiceCategory": SERVICE_CATEGORY.get(e.category, "Other"),
            "ResourceId": e.resource, "ConsumedQuantity": str(e.quantity), "ConsumedUnit": e.unit,
            "ListUnitPrice": str(e.unit_price), "x_Workflow": e.workflow, "x_Model": e.model or "",
            "x_LedgerCategory": e.category, "x_Source": e.source, "x_IdempotencyKey": e.idempotency_key})
    return rows


def write_focus_csv(entries, path: Path) -> Path:
    tmp = Path(path).with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FOCUS_COLUMNS)
        writer.writeheader()
        writer.writerows(focus_rows(entries))
    tmp.replace(path)
    return Path(path)


def summary_lines(report: dict) -> list[str]:
    """The verdict and what it stands on, as every reader shows it (CLI, HTML report, cost-review page)."""
    basis = report.get("basis") or {}
    lines = [report.get("headline") or report["verdict"]]
    lines += [basis[k] for k in ("volume", "reconciliation", "recurring") if basis.get(k)]
    if basis.get("flip"):
        lines.append(f"margin: {basis['flip']}")
    serving = report.get("serving")
    if serving:
        lines.append(f"serving: {serving['replicas']} replica(s) of {report.get('serving_resource', 'the serving class')} "
                     f"at ${Decimal(serving['instance_hour_usd']):.4f} an hour = {usd(Decimal(serving['usd_per_month']))} "
                     f"a month (always-on floor {serving['min_replicas']} replica(s), "
                     f"{usd(Decimal(serving['floor_usd_per_month']))}; peak {serving['peak_to_average']}× the average "
                     f"rate; {serving['throughput_calls_per_s']} calls/s per replica measured)")
    return lines


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def charts(naive, full, entries) -> dict[str, str]:
    """Two charts as base64 PNG: cumulative cost of both options, and the ledger's spend by category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    months = [r.month for r in full.rows]
    ax.plot(months, [float(r.cumulative_frontier_usd) for r in full.rows], label="frontier API", color="#c0392b")
    ax.plot(months, [float(r.cumulative_post_training_usd) for r in full.rows], label="post-training, fully loaded",
            color="#2471a3")
    ax.plot(months, [float(r.cumulative_post_training_usd) for r in naive.rows], label="post-training, compute only",
            color="#2471a3", linestyle="--")
    if full.break_even_month:
        ax.axvline(full.break_even_month, color="grey", linestyle=":")
        ax.annotate(f"break-even: month {full.break_even_month}", (full.break_even_month, 0), textcoords="offset points",
                    xytext=(5, 10))
    ax.set_xlabel("month")
    ax.set_ylabel("cumulative cost (USD)")
    ax.legend()
    cumulative = _png(fig)
    plt.close(fig)

    # Every category gets a bar with its amount written on it, on a symmetric log scale: people's
    # hours are thousands of times a day's storage, and on a linear axis they hid the other seven.
    by_category: dict[str, Decimal] = {c: Decimal(0) for c in CATEGORIES}
    for e in entries:
        by_category[e.category] = by_category.get(e.category, Decimal(0)) + e.amount
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(by_category)
    values = [float(by_category[c]) for c in names]
    ax.barh(names, values, color=["#c0392b" if v < 0 else "#2471a3" for v in values])
    ax.set_xscale("symlog", linthresh=1)
    for y, (name, amount) in enumerate(by_category.items()):
        ax.annotate(usd(amount), (float(amount), y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("USD booked (symmetric log scale)")
    ax.set_title("ledger spend by category, every category")
    spend = _png(fig)
    plt.close(fig)
    return {"cumulative": cumulative, "spend": spend}


def write_html(report: dict, naive, full, entries, out_dir: Path) -> Path:
    imgs = charts(naive, full, entries)
    esc = html.escape
    reasons = "".join(f"<li>{esc(r)}</li>" for r in report["reasons"])
    headline, *basis = summary_lines(report)
    basis_items = "".join(f"<li>{esc(line)}</li>" for line in basis)
    totals = "".join(f"<tr><td>{esc(k)}</td><td class=num>{usd(Decimal(v))}</td></tr>"
                     for k, v in report["ledger_totals_usd"].items())
    sens = "".join(f"<tr><td>{esc(r['parameter'])}</td><td>×{esc(r['factor'])}</td><td>{r['break_even_month'] or 'never'}</td>"
                   f"<td class=num>{usd(Decimal(r['saving_at_horizon_usd']))}</td></tr>" for r in report["sensitivity"])
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>Break-even: {esc(report['workflow'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}
td,th{{padding:2px 10px;text-align:left}} .num{{text-align:right}} .verdict{{font-size:1.4em;font-weight:600}}</style></head>
<body><h1>Frontier API or post-training? — {esc(report['workflow'])}</h1>
<p class=verdict id=verdict>{esc(headline)}</p><ul id=basis>{basis_items}</ul><ul id=reasons>{reasons}</ul>
<h2>Cumulative cost</h2><img alt="cumulative cost of both options" src="data:image/png;base64,{imgs['cumulative']}">
<table><tr><th></th><th>break-even month</th><th>saving at month {full.inputs.horizon_months}</th></tr>
<tr><td>compute only (naive)</td><td>{report['naive']['break_even_month'] or 'never'}</td><td class=num>{usd(Decimal(report['naive']['saving_at_horizon_usd']))}</td></tr>
<tr><td>fully loaded</td><td>{report['fully_loaded']['break_even_month'] or 'never'}</td><td class=num>{usd(Decimal(report['fully_loaded']['saving_at_horizon_usd']))}</td></tr></table>
<p>Frontier cost per call ${Decimal(report['frontier_cost_per_call_usd']):.6f} ({esc(report['frontier']['detail'])}; price book v{report['price_book_version']});
self-hosted ${Decimal(report['self_hosted_cost_per_call_usd']):.8f} per call at the declared volume.
One-time MLOps spend {usd(Decimal(report['one_time_usd']))}; recurring {usd(Decimal(report['recurring_usd_per_month']))} a month.</p>
<h2>Ledger by category</h2><table>{totals}</table>
<img alt="spend by category by month" src="data:image/png;base64,{imgs['spend']}">
<h2>Sensitivity</h2><table><tr><th>parameter</th><th>factor</th><th>break-even month</th><th>saving at horizon</th></tr>{sens}</table>
<p><small>Generated {esc(report['generated_at'])}. Ledger export: costs_focus.csv (FOCUS columns).</small></p>
</body></html>"""
    path = Path(out_dir) / "breakeven.html"
    path.write_text(page, encoding="utf-8")
    return path
