"""Outputs for cost reviewers: the break-even HTML report with its charts, and a FOCUS CSV.

FOCUS (the FinOps Open Cost and Usage Specification) column names let the ledger be loaded
next to the cloud bills in the same FinOps tool.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from ml.breakeven import CATEGORIES
from ml.costs.review_page import usd
from ml.costs.unit_costs import SECONDS_PER_HOUR

# FOCUS 1.0's columns, in its order. Five are written twice: under the names of the final 1.0
# specification (InvoiceIssuerName, ProviderName, PublisherName, ResourceId, ChargeCategory) and
# under those the FinOps Foundation's focus-validator 1.0.0 checks for FOCUS 1.0 (InvoiceIssuer,
# Provider, Publisher, ResourceID, and ChargeType, which its SkuPriceId rule reads), so the file
# loads in tools built on either. Ours are x_ columns.
FOCUS_VERSION = "1.0"
FOCUS_COLUMNS = (
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeType",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "InvoiceIssuer",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "Provider",
    "PublisherName",
    "Publisher",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceID",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Workflow",
    "x_Model",
    "x_LedgerCategory",
    "x_LedgerEntryId",
    "x_ReversesEntryId",
    "x_Source",
    "x_IdempotencyKey",
)
BILLING_ACCOUNT_ID, BILLING_ACCOUNT_NAME = "mlops-cost-ledger", "MLOps cost ledger"

# Ledger category → FOCUS ServiceCategory (the closest of FOCUS's allowed values).
SERVICE_CATEGORY = {
    "frontier_api": "AI and Machine Learning",
    "training_compute": "Compute",
    "serving": "Compute",
    "evaluation": "Compute",
    "data_curation": "Analytics",
    "keeping_current": "Compute",
    "versioning_storage": "Storage",
    "people": "Other",
    "tooling": "Management and Governance",
}
# The ledger's units in FOCUS's unit format (plural units, a power-of-ten multiplier).
FOCUS_UNIT = {
    "hour": "Hours",
    "month": "Months",
    "GB-month": "GB-Months",
    "1M tokens in": "1000000 Tokens",
    "1M tokens out": "1000000 Tokens",
}


def _z(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as FOCUS writes date-times."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_start(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(moment: datetime) -> datetime:
    return (_month_start(moment) + timedelta(days=32)).replace(day=1)


def charge_period(e) -> tuple[datetime, datetime]:
    """[start, end) of what an entry charges for; FOCUS's end is exclusive, so it is after the start.

    A task try: its hours from its start. Storage: the metered period (its key ends with the
    period's dates). A month of a tool: that calendar month. Anything else (a day's frontier calls,
    a day's timesheet, an invoice line): the UTC day it occurred on.
    """
    start = e.occurred_at.astimezone(timezone.utc)
    quantity = abs(Decimal(e.quantity))
    if e.unit == "hour" and e.source_kind == "task":
        end = start + timedelta(seconds=float(quantity * SECONDS_PER_HOUR))
        return start, max(end, start + timedelta(seconds=1))
    if e.unit == "GB-month":
        try:
            first, last = e.idempotency_key.rsplit(":", 2)[1:]
            return (
                datetime.fromisoformat(first).replace(tzinfo=timezone.utc),
                datetime.fromisoformat(last).replace(tzinfo=timezone.utc),
            )
        except ValueError:
            pass
    if e.unit == "month":
        return _month_start(start), _next_month(start)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day + timedelta(days=1)


def _provider(category: str) -> str:
    return {"frontier_api": "Frontier API provider", "people": "Internal (people)"}.get(
        category, "Cloud (price book)"
    )


def focus_rows(entries) -> list[dict]:
    rows = []
    for e in entries:
        start, end = charge_period(e)
        unit = FOCUS_UNIT.get(e.unit, e.unit)
        sku = f"{e.resource}/{e.unit}"
        provider = _provider(e.category)
        charge_category = "Purchase" if e.source_kind == "person" else "Usage"
        frequency = (
            "Recurring" if e.unit == "month" else "One-Time" if e.source_kind == "person" else "Usage-Based"
        )
        rows.append(
            {
                "AvailabilityZone": "",
                "BilledCost": str(e.amount),
                "BillingAccountId": BILLING_ACCOUNT_ID,
                "BillingAccountName": BILLING_ACCOUNT_NAME,
                "BillingCurrency": e.currency,
                "BillingPeriodEnd": _z(_next_month(start)),
                "BillingPeriodStart": _z(_month_start(start)),
                "ChargeCategory": charge_category,
                "ChargeType": charge_category,
                # A reversing entry corrects an earlier one: FOCUS 1.0 marks it a Correction.
                "ChargeClass": "Correction" if e.reverses_id else "",
                "ChargeDescription": e.description,
                "ChargeFrequency": frequency,
                "ChargePeriodEnd": _z(end),
                "ChargePeriodStart": _z(start),
                "CommitmentDiscountCategory": "",
                "CommitmentDiscountId": "",
                "CommitmentDiscountName": "",
                "CommitmentDiscountStatus": "",
                "CommitmentDiscountType": "",
                "ConsumedQuantity": str(e.quantity),
                "ConsumedUnit": unit,
                # No negotiated rates: the price book's price is the list, contracted and effective price.
                "ContractedCost": str(e.amount),
                "ContractedUnitPrice": str(e.unit_price),
                "EffectiveCost": str(e.amount),
                "InvoiceIssuerName": provider,
                "InvoiceIssuer": provider,
                "ListCost": str(e.amount),
                "ListUnitPrice": str(e.unit_price),
                "PricingCategory": "Standard",
                "PricingQuantity": str(e.quantity),
                "PricingUnit": unit,
                "ProviderName": provider,
                "Provider": provider,
                "PublisherName": provider,
                "Publisher": provider,
                "RegionId": "",
                "RegionName": "",
                "ResourceId": f"{e.workflow}/{e.resource}",
                "ResourceID": f"{e.workflow}/{e.resource}",
                "ResourceName": e.resource,
                "ResourceType": e.resource.split(":")[0] if ":" in e.resource else "compute",
                "ServiceCategory": SERVICE_CATEGORY.get(e.category, "Other"),
                "ServiceName": e.resource.split(":")[0],
                "SkuId": sku,
                "SkuPriceId": f"{sku}@{e.unit_price}",
                "SubAccountId": e.workflow,
                "SubAccountName": e.workflow,
                "Tags": json.dumps(
                    {"x_workflow": e.workflow, "x_ledger_category": e.category}, sort_keys=True
                ),
                "x_Workflow": e.workflow,
                "x_Model": e.model or "",
                "x_LedgerCategory": e.category,
                "x_LedgerEntryId": str(e.id),
                "x_ReversesEntryId": "" if e.reverses_id is None else str(e.reverses_id),
                "x_Source": e.source,
                "x_IdempotencyKey": e.idempotency_key,
            }
        )
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
        lines.append(
            f"serving: {serving['replicas']} replica(s) of {report.get('serving_resource', 'the serving class')} "
            f"at ${Decimal(serving['instance_hour_usd']):.4f} an hour = {usd(Decimal(serving['usd_per_month']))} "
            f"a month (always-on floor {serving['min_replicas']} replica(s), "
            f"{usd(Decimal(serving['floor_usd_per_month']))}; peak {serving['peak_to_average']}× the average "
            f"rate; {float(serving['throughput_calls_per_s']):,.1f} calls/s per replica measured)"
        )
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
    ax.plot(
        months, [float(r.cumulative_frontier_usd) for r in full.rows], label="frontier API", color="#c0392b"
    )
    ax.plot(
        months,
        [float(r.cumulative_post_training_usd) for r in full.rows],
        label="post-training, fully loaded",
        color="#2471a3",
    )
    ax.plot(
        months,
        [float(r.cumulative_post_training_usd) for r in naive.rows],
        label="post-training, compute only",
        color="#2471a3",
        linestyle="--",
    )
    if full.break_even_month:
        ax.axvline(full.break_even_month, color="grey", linestyle=":")
        ax.annotate(
            f"break-even: month {full.break_even_month}",
            (full.break_even_month, 0),
            textcoords="offset points",
            xytext=(5, 10),
        )
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
    for y, amount in enumerate(by_category.values()):
        ax.annotate(
            usd(amount),
            (float(amount), y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
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
    totals = "".join(
        f"<tr><td>{esc(k)}</td><td class=num>{usd(Decimal(v))}</td></tr>"
        for k, v in report["ledger_totals_usd"].items()
    )
    sens = "".join(
        f"<tr><td>{esc(r['parameter'])}</td><td>×{esc(r['factor'])}</td><td>{r['break_even_month'] or 'never'}</td>"
        f"<td class=num>{usd(Decimal(r['saving_at_horizon_usd']))}</td></tr>"
        for r in report["sensitivity"]
    )
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>Break-even: {esc(report["workflow"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}
td,th{{padding:2px 10px;text-align:left}} .num{{text-align:right}} .verdict{{font-size:1.4em;font-weight:600}}</style></head>
<body><h1>Frontier API or post-training? — {esc(report["workflow"])}</h1>
<p class=verdict id=verdict>{esc(headline)}</p><ul id=basis>{basis_items}</ul><ul id=reasons>{reasons}</ul>
<h2>Cumulative cost</h2><img alt="cumulative cost of both options" src="data:image/png;base64,{imgs["cumulative"]}">
<table><tr><th></th><th>break-even month</th><th>saving at month {full.inputs.horizon_months}</th></tr>
<tr><td>compute only (naive)</td><td>{report["naive"]["break_even_month"] or "never"}</td><td class=num>{usd(Decimal(report["naive"]["saving_at_horizon_usd"]))}</td></tr>
<tr><td>fully loaded</td><td>{report["fully_loaded"]["break_even_month"] or "never"}</td><td class=num>{usd(Decimal(report["fully_loaded"]["saving_at_horizon_usd"]))}</td></tr></table>
<p>Frontier cost per call ${Decimal(report["frontier_cost_per_call_usd"]):.6f} ({esc(report["frontier"]["detail"])}; price book v{report["price_book_version"]});
self-hosted ${Decimal(report["self_hosted_cost_per_call_usd"]):.8f} per call at the declared volume.
One-time MLOps spend {usd(Decimal(report["one_time_usd"]))}; recurring {usd(Decimal(report["recurring_usd_per_month"]))} a month.</p>
<h2>Ledger by category</h2><table>{totals}</table>
<img alt="spend by category by month" src="data:image/png;base64,{imgs["spend"]}">
<h2>Sensitivity</h2><table><tr><th>parameter</th><th>factor</th><th>break-even month</th><th>saving at horizon</th></tr>{sens}</table>
<p><small>Generated {esc(report["generated_at"])}. Ledger export: costs_focus.csv (FOCUS columns).</small></p>
</body></html>"""
    path = Path(out_dir) / "breakeven.html"
    path.write_text(page, encoding="utf-8")
    return path
