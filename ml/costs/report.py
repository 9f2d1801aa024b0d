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
from collections import defaultdict
from pathlib import Path

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


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def charts(naive, full, entries) -> dict[str, str]:
    """Two charts as base64 PNG: cumulative cost of both options, and MLOps spend by category by month."""
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

    by_month: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        by_month[e.occurred_at.strftime("%Y-%m")][e.category] += float(e.amount)
    fig, ax = plt.subplots(figsize=(8, 4))
    months_sorted = sorted(by_month)
    bottom = [0.0] * len(months_sorted)
    for cat in sorted({c for m in by_month.values() for c in m}):
        values = [by_month[m].get(cat, 0.0) for m in months_sorted]
        ax.bar(months_sorted, values, bottom=bottom, label=cat)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("USD")
    ax.set_title("ledger spend by category and month")
    ax.legend(fontsize=7)
    spend = _png(fig)
    plt.close(fig)
    return {"cumulative": cumulative, "spend": spend}


def write_html(report: dict, naive, full, entries, out_dir: Path) -> Path:
    imgs = charts(naive, full, entries)
    esc = html.escape
    reasons = "".join(f"<li>{esc(r)}</li>" for r in report["reasons"])
    totals = "".join(f"<tr><td>{esc(k)}</td><td class=num>${float(v):,.2f}</td></tr>"
                     for k, v in report["ledger_totals_usd"].items())
    sens = "".join(f"<tr><td>{esc(r['parameter'])}</td><td>×{esc(r['factor'])}</td><td>{r['break_even_month'] or 'never'}</td>"
                   f"<td class=num>${float(r['saving_at_horizon_usd']):,.0f}</td></tr>" for r in report["sensitivity"])
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>Break-even: {esc(report['workflow'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}
td,th{{padding:2px 10px;text-align:left}} .num{{text-align:right}} .verdict{{font-size:1.4em;font-weight:600}}</style></head>
<body><h1>Frontier API or post-training? — {esc(report['workflow'])}</h1>
<p class=verdict id=verdict>{esc(report['verdict'])}</p><ul id=reasons>{reasons}</ul>
<h2>Cumulative cost</h2><img alt="cumulative cost of both options" src="data:image/png;base64,{imgs['cumulative']}">
<table><tr><th></th><th>break-even month</th><th>saving at month {full.inputs.horizon_months}</th></tr>
<tr><td>compute only (naive)</td><td>{report['naive']['break_even_month'] or 'never'}</td><td class=num>${float(report['naive']['saving_at_horizon_usd']):,.0f}</td></tr>
<tr><td>fully loaded</td><td>{report['fully_loaded']['break_even_month'] or 'never'}</td><td class=num>${float(report['fully_loaded']['saving_at_horizon_usd']):,.0f}</td></tr></table>
<p>Frontier cost per call ${float(report['frontier_cost_per_call_usd']):.6f} (measured tokens × price book v{report['price_book_version']});
self-hosted ${float(report['self_hosted_cost_per_call_usd']):.8f} ({report['throughput_calls_per_s']:.1f} calls/s measured).
One-time MLOps spend ${float(report['one_time_usd']):,.2f}; recurring ${float(report['recurring_usd_per_month']):,.2f} a month.</p>
<h2>Ledger by category</h2><table>{totals}</table>
<img alt="spend by category by month" src="data:image/png;base64,{imgs['spend']}">
<h2>Sensitivity</h2><table><tr><th>parameter</th><th>factor</th><th>break-even month</th><th>saving at horizon</th></tr>{sens}</table>
<p><small>Generated {esc(report['generated_at'])}. Ledger export: costs_focus.csv (FOCUS columns).</small></p>
</body></html>"""
    path = Path(out_dir) / "breakeven.html"
    path.write_text(page, encoding="utf-8")
    return path
