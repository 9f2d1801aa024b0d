"""The ledger's FOCUS export against FOCUS 1.0: the FinOps Foundation's focus-validator when it is
installed, and always the 1.0 rules that validator checks, written out here.

focus-validator 1.0.0 (the newest on the registry this project uses) pins numpy<2, pandas<3 and
pytz<2024, which the platform cannot run with, so it lives in its own virtual environment:
`make focus-validator` builds it in .venv-focus from tests/focus_validator.lock.txt, and `make test`
sets FOCUS_VALIDATOR to it, so CI runs the real validator; by hand:
    FOCUS_VALIDATOR=.venv-focus/bin/focus-validator pytest tests/unit/test_focus_export.py
Before this export was rewritten, that validator found 28 rule failures in the same ledger.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ml.costs import capture
from ml.costs.ledger import Ledger
from ml.costs.pricebook import PriceBook
from ml.costs.report import FOCUS_COLUMNS, write_focus_csv

ROOT = Path(__file__).resolve().parents[2]
BOOK = PriceBook.load(ROOT / "infra" / "price_book.yaml")

# focus-validator 1.0.0's rule set "1.0", column by column.
REQUIRED = (
    "AvailabilityZone BilledCost BillingAccountId BillingAccountName BillingCurrency BillingPeriodEnd "
    "BillingPeriodStart ChargeCategory ChargeClass ChargeDescription ChargeFrequency ChargePeriodEnd "
    "ChargePeriodStart CommitmentDiscountCategory CommitmentDiscountId CommitmentDiscountName "
    "CommitmentDiscountType CommitmentDiscountStatus ConsumedQuantity ConsumedUnit ContractedCost "
    "ContractedUnitPrice EffectiveCost InvoiceIssuer ListCost ListUnitPrice PricingCategory PricingQuantity "
    "PricingUnit Provider Publisher RegionId RegionName ResourceID ResourceName ResourceType ServiceCategory "
    "ServiceName SkuId SkuPriceId SubAccountId SubAccountName Tags"
).split()
# ... and the final 1.0 specification's names of the columns the validator still calls by older ones.
REQUIRED_BY_SPEC = ["InvoiceIssuerName", "ProviderName", "PublisherName", "ResourceId"]
NOT_NULL = (
    "BilledCost BillingAccountId BillingCurrency BillingPeriodEnd BillingPeriodStart ChargeCategory "
    "ChargeFrequency ChargePeriodEnd ChargePeriodStart ContractedCost EffectiveCost InvoiceIssuer ListCost "
    "Provider Publisher ServiceCategory ServiceName"
).split()
DECIMAL = (
    "BilledCost ConsumedQuantity ContractedCost ContractedUnitPrice EffectiveCost ListCost ListUnitPrice "
    "PricingQuantity"
).split()
DATETIME = "BillingPeriodEnd BillingPeriodStart ChargePeriodEnd ChargePeriodStart".split()
ENUMS = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeClass": {"", "Correction"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"", "Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {
        "AI and Machine Learning",
        "Analytics",
        "Business Applications",
        "Compute",
        "Databases",
        "Developer Tools",
        "Multicloud",
        "Identity",
        "Integration",
        "Internet of Things",
        "Management and Governance",
        "Media",
        "Migration",
        "Mobile",
        "Networking",
        "Security",
        "Storage",
        "Web",
        "Other",
    },
}
# FOCUS's unit format: plural units, optionally after a power-of-ten multiplier.
FOCUS_UNITS = {"Hours", "Months", "GB-Months", "1000000 Tokens"}


@pytest.fixture
def export(tmp_path) -> Path:
    """Every kind of entry the platform books, exported: a task try, a day's frontier calls, storage
    over a month boundary, people's hours, a tool's month, and a reversal."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    t0 = datetime(2026, 10, 30, 23, 50, tzinfo=timezone.utc)
    capture.book_task_run(
        url,
        tmp_path / "spool",
        dag_id="distill__ticket_routing",
        run_id="r1",
        task_id="train_student",
        try_number=1,
        map_index=-1,
        queue="gpu",
        pool=None,
        resource=None,
        started_at=t0,
        ended_at=t0 + timedelta(minutes=25),
        workflow="ticket_routing",
        category="training_compute",
        price_book=BOOK,
    )
    with Ledger(url) as ledger:
        rows = [
            {
                "ts": "2026-10-29T10:00:00Z",
                "model": "frontier-large",
                "tokens_in": 800,
                "tokens_out": 60,
                "status": "ok",
                "call_id": f"c{i}",
            }
            for i in range(3)
        ]
        capture.book_frontier_calls(ledger, rows, BOOK, "ticket_routing")
        capture.book_storage(
            ledger,
            3_000_000,
            workflow="ticket_routing",
            price_book=BOOK,
            period_start=date(2026, 10, 28),
            period_end=date(2026, 11, 2),
            resource="storage:datasets",
        )
        hours = capture.book_manual(
            ledger,
            price_book=BOOK,
            workflow="ticket_routing",
            on=date(2026, 11, 3),
            quantity="6",
            person="ana",
            role="ml_engineer",
        )
        capture.book_manual(
            ledger,
            price_book=BOOK,
            workflow="ticket_routing",
            on=date(2026, 11, 1),
            quantity="1",
            person="ana",
            tooling="mlflow_server",
        )
        ledger.reverse(hours.id, "booked on the wrong workflow", "ana")
        return write_focus_csv(ledger.entries(), tmp_path / "costs_focus.csv")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _when(text: str) -> datetime:
    assert text.endswith("Z"), f"{text} is not UTC written with Z"
    return datetime.fromisoformat(text[:-1] + "+00:00")


def test_the_export_follows_the_focus_1_0_rules(export):
    rows = _rows(export)
    assert len(rows) == 7
    header = list(rows[0])
    assert header == list(FOCUS_COLUMNS)
    missing = [c for c in REQUIRED + REQUIRED_BY_SPEC if c not in header]
    assert missing == []
    assert all(c[0].isupper() or c.startswith("x_") for c in header)  # ours are x_ columns
    for row in rows:
        for column in NOT_NULL:
            assert row[column] != "", (column, row)
        for column in DECIMAL:
            Decimal(row[column])
        for column, allowed in ENUMS.items():
            assert row[column] in allowed, (column, row[column])
        assert row["BillingCurrency"] == "USD" and row["ConsumedUnit"] in FOCUS_UNITS
        assert row["PricingUnit"] == row["ConsumedUnit"]
        assert isinstance(json.loads(row["Tags"]), dict)
        start, end = _when(row["ChargePeriodStart"]), _when(row["ChargePeriodEnd"])
        billing_start, billing_end = _when(row["BillingPeriodStart"]), _when(row["BillingPeriodEnd"])
        assert start < end, "the end is exclusive, so it is after the start"
        assert billing_start <= start < billing_end
        assert Decimal(row["BilledCost"]) == Decimal(row["EffectiveCost"]) == Decimal(row["ListCost"])
    by_unit = {r["x_IdempotencyKey"].split(":")[0]: r for r in rows}
    task = by_unit["task"]
    assert (_when(task["ChargePeriodEnd"]) - _when(task["ChargePeriodStart"])) == timedelta(minutes=25)
    storage = by_unit["storage"]
    assert (storage["ChargePeriodStart"], storage["ChargePeriodEnd"]) == (
        "2026-10-28T00:00:00Z",
        "2026-11-02T00:00:00Z",
    )
    reversal = next(r for r in rows if r["x_ReversesEntryId"])
    assert reversal["ChargeClass"] == "Correction" and Decimal(reversal["BilledCost"]) < 0


@pytest.mark.skipif(
    not os.environ.get("FOCUS_VALIDATOR"),
    reason="set FOCUS_VALIDATOR to focus-validator's executable (see this module's docstring)",
)
def test_focus_validator_finds_no_failure(export):
    validator = Path(os.environ["FOCUS_VALIDATOR"])
    # It reads its currency list by a path relative to the working folder: its site-packages.
    site = next(validator.parent.parent.glob("lib/python3*/site-packages"))
    result = subprocess.run(
        [str(validator), "--data-file", str(export), "--validate-version", "1.0"],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "Validation succeeded." in result.stdout, result.stdout + result.stderr
