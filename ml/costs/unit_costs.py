"""The one cost model: what a frontier call costs, and what a month of self-hosted serving costs.

Every reader of a cost figure calls this module: the gate (cost per 1,000 calls), the break-even
(month by month), the ninety-day constraint report, the proxy's shadow log and the ledger's
frontier capture. Pure Decimal arithmetic; the price book is passed in, nothing is read here.

Two rules, stated once:

- A frontier call is priced at its own model and its own UTC day, from the price book. A mean
  cost per call is the mean of those prices, never all tokens at one model's price.
- Serving is rented by the replica-hour, not by the call. A month of serving is
  max(min_replicas, replicas needed for the peak rate) x instance hour x HOURS_PER_MONTH, the
  peak being the month's average rate x peak_to_average, and one replica serving the measured
  throughput. The per-call cost is derived from that month, so a small volume pays the always-on
  floor (two replicas of the cheapest class: $147.17 a month at $0.1008 an hour), however fast
  the model is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import ROUND_CEILING, Decimal, InvalidOperation

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # providers price per million tokens
SECONDS_PER_HOUR = Decimal(3600)
# A month as clouds bill it: 8,760 hours a year / 12. Days follow from it, so a month is one length.
HOURS_PER_MONTH = Decimal(730)
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
SECONDS_PER_MONTH = HOURS_PER_MONTH * SECONDS_PER_HOUR
NINETY_DAY_WINDOW_DAYS = 90  # the seed's "ninety-day test" of the frontier model in production
BILLABLE_STATUSES = ("ok",)  # a failed or rate-limited call is not billed by the provider


def as_decimal(value, name: str) -> Decimal:
    """A non-negative finite Decimal; floats go through str() so 0.1 stays 0.1."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a number; pass e.g. Decimal('12.50') or '12.50'.")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"{name}={value!r} is not a number; pass e.g. Decimal('12.50') or '12.50'.")
    if number < 0:
        raise ValueError(f"{name}={value!r} is negative; costs, volumes and measurements are >= 0.")
    return number


# Frontier ---------------------------------------------------------------------------------


def frontier_call_usd(tokens_in, tokens_out, price_in_per_1m_usd, price_out_per_1m_usd) -> Decimal:
    """One call's tokens x the provider's prices per million tokens."""
    tokens_in, tokens_out = as_decimal(tokens_in, "tokens_in"), as_decimal(tokens_out, "tokens_out")
    price_in = as_decimal(price_in_per_1m_usd, "price_in_per_1m_usd")
    price_out = as_decimal(price_out_per_1m_usd, "price_out_per_1m_usd")
    return (tokens_in * price_in + tokens_out * price_out) / TOKENS_PER_PRICE_UNIT


def priced_call_usd(price_book, model: str, on: date, tokens_in, tokens_out) -> Decimal:
    """One call at its own model and day, from the price book (PriceBookError when unpriced)."""
    price_in, price_out = price_book.frontier_token_prices(str(model), on)
    return frontier_call_usd(tokens_in, tokens_out, price_in, price_out)


def call_day(row: dict) -> date:
    """The UTC day of a call-log row's ts (a naive ts is taken as UTC)."""
    ts = (
        row["ts"]
        if isinstance(row["ts"], datetime)
        else datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00"))
    )
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).date()


@dataclass(frozen=True)
class FrontierCost:
    """The frontier side of the books: cost per call and where that figure comes from."""

    cost_per_call_usd: Decimal
    basis: str  # "measured" (a call log) or "declared" (the workflow's frontier: section)
    calls: int  # calls priced (0 for a declaration)
    detail: str  # e.g. "1,200 calls, each at its own model and day" or "frontier-large, 800 in / 60 out"

    def to_json(self) -> dict:
        return {
            "cost_per_call_usd": str(self.cost_per_call_usd),
            "basis": self.basis,
            "calls": self.calls,
            "detail": self.detail,
        }


def measured_frontier_cost(rows: Iterable[dict], price_book) -> FrontierCost | None:
    """Mean cost of the billable calls in rows, each at its own model and day; None without any."""
    total, calls, models = Decimal(0), 0, set()
    for row in rows:
        if str(row.get("status") or "ok") not in BILLABLE_STATUSES:
            continue
        total += priced_call_usd(
            price_book, row["model"], call_day(row), int(row["tokens_in"]), int(row["tokens_out"])
        )
        calls += 1
        models.add(str(row["model"]))
    if calls == 0:
        return None
    return FrontierCost(
        total / calls,
        "measured",
        calls,
        f"{calls:,} calls to {', '.join(sorted(models))}, each at its own model and day",
    )


def declared_frontier_cost(
    model: str, tokens_in_per_call, tokens_out_per_call, price_book, on: date
) -> FrontierCost:
    """The workflow's declared frontier use (model, tokens per call) priced on `on`."""
    cost = priced_call_usd(price_book, model, on, tokens_in_per_call, tokens_out_per_call)
    return FrontierCost(
        cost,
        "declared",
        0,
        f"declared, not measured: {model}, {tokens_in_per_call} tokens in / "
        f"{tokens_out_per_call} out per call, priced on {on.isoformat()}",
    )


# Serving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingPlan:
    """How the student is served: what one replica sustains and costs, and the always-on floor."""

    throughput_calls_per_s: Decimal  # one replica, measured
    instance_hour_usd: Decimal  # the price book's hourly rate of the serving class
    min_replicas: int = 2
    peak_to_average: Decimal = Decimal(3)

    def __post_init__(self):
        throughput = as_decimal(self.throughput_calls_per_s, "throughput_calls_per_s")
        if throughput == 0:
            raise ValueError(
                "throughput_calls_per_s=0 must be > 0; pass the throughput measured on one replica."
            )
        object.__setattr__(self, "throughput_calls_per_s", throughput)
        object.__setattr__(self, "instance_hour_usd", as_decimal(self.instance_hour_usd, "instance_hour_usd"))
        if (
            isinstance(self.min_replicas, bool)
            or not isinstance(self.min_replicas, int)
            or self.min_replicas < 1
        ):
            raise ValueError(f"min_replicas={self.min_replicas!r} must be a whole number >= 1.")
        peak = as_decimal(self.peak_to_average, "peak_to_average")
        if peak < 1:
            raise ValueError(
                f"peak_to_average={self.peak_to_average!r} must be >= 1 (peak rate over the average)."
            )
        object.__setattr__(self, "peak_to_average", peak)

    def replicas(self, calls_per_month) -> int:
        """max(min_replicas, ceil(peak calls per second / one replica's throughput))."""
        peak_per_s = as_decimal(calls_per_month, "calls_per_month") / SECONDS_PER_MONTH * self.peak_to_average
        needed = int((peak_per_s / self.throughput_calls_per_s).to_integral_value(ROUND_CEILING))
        return max(self.min_replicas, needed)

    def usd_per_month(self, calls_per_month) -> Decimal:
        return self.replicas(calls_per_month) * self.instance_hour_usd * HOURS_PER_MONTH

    def floor_usd_per_month(self) -> Decimal:
        """What serving costs with no traffic at all: the always-on replicas."""
        return self.min_replicas * self.instance_hour_usd * HOURS_PER_MONTH

    def cost_per_call_usd(self, calls_per_month) -> Decimal:
        calls = as_decimal(calls_per_month, "calls_per_month")
        if calls == 0:
            raise ValueError(
                "calls_per_month=0: a cost per call needs some calls; the month costs "
                f"{self.usd_per_month(0)} regardless."
            )
        return self.usd_per_month(calls) / calls

    def to_json(self, calls_per_month) -> dict:
        return {
            "throughput_calls_per_s": str(self.throughput_calls_per_s),
            "instance_hour_usd": str(self.instance_hour_usd),
            "min_replicas": self.min_replicas,
            "peak_to_average": str(self.peak_to_average),
            "replicas": self.replicas(calls_per_month),
            "usd_per_month": str(self.usd_per_month(calls_per_month)),
            "floor_usd_per_month": str(self.floor_usd_per_month()),
            "cost_per_call_usd": str(self.cost_per_call_usd(calls_per_month)) if calls_per_month else None,
        }


def serving_plan(wf, price_book, throughput_calls_per_s, on: date) -> ServingPlan:
    """The workflow's serving plan: its serving class's price on `on` and its serving: keys."""
    return ServingPlan(
        throughput_calls_per_s=as_decimal(throughput_calls_per_s, "throughput_calls_per_s"),
        instance_hour_usd=price_book.compute_hour_usd(wf.serving_resource, on),
        min_replicas=wf.serving.min_replicas,
        peak_to_average=as_decimal(wf.serving.peak_to_average, "peak_to_average"),
    )


def student_cost_per_call_usd(wf, price_book, throughput_calls_per_s, on: date) -> Decimal:
    """What one call costs on the student at the workflow's declared volume: the gate's and the report's figure."""
    return serving_plan(wf, price_book, throughput_calls_per_s, on).cost_per_call_usd(wf.monthly_calls)
