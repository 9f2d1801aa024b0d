"""The price book: the shipped file loads, prices are effective-dated, and mistakes name the fix."""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ml.costs.pricebook import PriceBook, PriceBookError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "infra" / "price_book.yaml"

BOOK = """\
version: 3
currency: USD
compute_hourly:
  cpu:
    - {from: 2026-01-01, usd: "0.10"}
    - {from: 2026-03-01, usd: "0.08"}
  gpu_a10g:
    - {from: 2026-01-01, usd: "1.006"}
queues: {default: cpu, gpu: gpu_a10g}
storage_gb_month:
  - {from: 2026-01-01, usd: "0.023"}
  - {from: 2026-07-01, usd: 0.021}
frontier_per_1m_tokens:
  frontier-large:
    - {from: 2026-01-01, input_usd: "3.00", output_usd: "15.00"}
    - {from: 2026-06-15, input_usd: "2.50", output_usd: "10.00"}
people_hourly:
  ml_engineer:
    - {from: 2026-01-01, usd: 110}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "price_book.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def book(tmp_path) -> PriceBook:
    return PriceBook.load(write(tmp_path, BOOK))


def test_shipped_price_book_loads_and_prices_every_section():
    book = PriceBook.load(SHIPPED)
    on = date(2026, 8, 1)
    assert book.version >= 1 and book.currency == "USD"
    assert book.compute_hour_usd("cpu", on) > 0
    # Every queue maps to a priced class, and the gpu queue to a GPU.
    assert book.resource_class_for_queue("default") == "cpu"
    assert book.resource_class_for_queue("gpu").startswith("gpu_")
    assert book.storage_gb_month_usd(on) == Decimal("0.023")
    # The demo call log was generated at these list prices; the two must agree.
    assert book.frontier_token_prices("frontier-large", on) == (Decimal("3.00"), Decimal("15.00"))
    assert {"ml_engineer", "data_engineer", "model_owner"} <= set(book.people_hourly)
    assert book.tooling_month_usd("airflow_control_plane", on) > 0
    for prices in book.compute_hourly.values():
        assert all(isinstance(v, Decimal) for p in prices for v in p.amounts.values())


@pytest.mark.parametrize(
    "lookup, on, expected",
    [
        # A price applies from its date (inclusive) until the next entry's date.
        (lambda b, d: b.compute_hour_usd("cpu", d), date(2026, 1, 1), Decimal("0.10")),
        (lambda b, d: b.compute_hour_usd("cpu", d), date(2026, 2, 28), Decimal("0.10")),
        (lambda b, d: b.compute_hour_usd("cpu", d), date(2026, 3, 1), Decimal("0.08")),
        (lambda b, d: b.compute_hour_usd("cpu", d), date(2030, 1, 1), Decimal("0.08")),
        (lambda b, d: b.compute_hour_usd("gpu_a10g", d), date(2026, 5, 5), Decimal("1.006")),
        (lambda b, d: b.storage_gb_month_usd(d), date(2026, 6, 30), Decimal("0.023")),
        # An unquoted YAML number is read through its literal, never as a binary float.
        (lambda b, d: b.storage_gb_month_usd(d), date(2026, 7, 1), Decimal("0.021")),
        (
            lambda b, d: b.frontier_token_prices("frontier-large", d),
            date(2026, 6, 14),
            (Decimal("3.00"), Decimal("15.00")),
        ),
        (
            lambda b, d: b.frontier_token_prices("frontier-large", d),
            date(2026, 6, 15),
            (Decimal("2.50"), Decimal("10.00")),
        ),
        (lambda b, d: b.person_hour_usd("ml_engineer", d), date(2026, 12, 31), Decimal("110")),
    ],
)
def test_prices_are_effective_dated(book, lookup, on, expected):
    assert lookup(book, on) == expected


@pytest.mark.parametrize(
    "lookup, message",
    [
        (
            lambda b: b.compute_hour_usd("gpu_h200", date(2026, 5, 1)),
            ["gpu_h200", "compute_hourly", "cpu, gpu_a10g", "price_book.yaml"],
        ),
        (
            lambda b: b.frontier_token_prices("gpt-9", date(2026, 5, 1)),
            ["gpt-9", "frontier_per_1m_tokens", "frontier-large"],
        ),
        (lambda b: b.person_hour_usd("cfo", date(2026, 5, 1)), ["cfo", "people_hourly", "ml_engineer"]),
        (lambda b: b.tooling_month_usd("wandb", date(2026, 5, 1)), ["wandb", "tooling_monthly", "none"]),
        # Before the first entry there is no price: say which date the book starts at.
        (
            lambda b: b.compute_hour_usd("cpu", date(2025, 12, 31)),
            ["compute_hourly.cpu", "2025-12-31", "2026-01-01", "earlier from"],
        ),
        (lambda b: b.storage_gb_month_usd(date(2025, 6, 1)), ["storage_gb_month", "2025-06-01"]),
    ],
)
def test_missing_prices_name_the_key_and_the_file(book, lookup, message):
    with pytest.raises(PriceBookError) as err:
        lookup(book)
    for part in message:
        assert part in str(err.value)


def test_a_datetime_is_not_a_day(book):
    with pytest.raises(TypeError, match="UTC day"):
        book.compute_hour_usd("cpu", datetime(2026, 5, 1, 12))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("version: 3", "version: three"), "version"),
        (lambda t: t.replace("currency: USD", "currency: EUR"), "currency"),
        (lambda t: t + "discounts: {}\n", "unknown key 'discounts'"),
        (
            lambda t: t.replace('- {from: 2026-03-01, usd: "0.08"}', '- {from: 2025-03-01, usd: "0.08"}'),
            "ascending",
        ),
        (
            lambda t: t.replace('- {from: 2026-03-01, usd: "0.08"}', '- {from: 2026-01-01, usd: "0.08"}'),
            "one per date",
        ),
        (
            lambda t: t.replace('{from: 2026-03-01, usd: "0.08"}', '{from: "March", usd: "0.08"}'),
            "YYYY-MM-DD",
        ),
        (lambda t: t.replace('usd: "0.08"', 'usd: "eight cents"'), "not a number"),
        (lambda t: t.replace('usd: "0.08"', 'usd: "-0.08"'), ">= 0"),
        (lambda t: t.replace('usd: "0.08"', 'eur: "0.08"'), "missing usd"),
        (lambda t: t.replace('output_usd: "15.00"', ""), "missing output_usd"),
        (lambda t: t.replace("gpu: gpu_a10g}", "gpu: gpu_h100}"), "queues.gpu names 'gpu_h100'"),
        (
            lambda t: t.replace("people_hourly:\n  ml_engineer:\n    - {from: 2026-01-01, usd: 110}\n", ""),
            "people_hourly",
        ),
        (lambda t: "just: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_books_are_rejected_with_the_fix(tmp_path, edit, message):
    path = write(tmp_path, edit(BOOK))
    with pytest.raises(PriceBookError, match=None) as err:
        PriceBook.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value) or "price_book.yaml" in str(err.value)


def test_a_missing_file_says_which_setting_to_change(tmp_path):
    with pytest.raises(PriceBookError, match="MLOPS_PRICE_BOOK_FILE"):
        PriceBook.load(tmp_path / "nope.yaml")
