"""Break-even: the frontier API against a post-trained small model, fully loaded. No I/O.

Post-training swaps a per-call API price for a cheaper per-call serving cost, and pays for the
swap with a one-time set-up and a recurring MLOps bill (curation, evaluation, retraining to keep
current, storage, tooling, people). This module prices both sides month by month, puts the naive
answer (compute only) beside the fully loaded one, varies what moves the answer most, and turns
the ninety-day measurements into a verdict with its reasons.

Money is Decimal from the first conversion to the last; only display text is rounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation

from ml.costs.unit_costs import TOKENS_PER_PRICE_UNIT, ServingPlan, frontier_call_usd  # noqa: F401 (re-exported)

# Ledger categories. frontier_api and serving are the two per-call sides, which the arithmetic
# derives from measured per-call costs × volume; the rest is the MLOps spend post-training adds.
CATEGORIES = (
    "frontier_api",
    "serving",
    "data_curation",
    "evaluation",
    "training_compute",
    "versioning_storage",
    "keeping_current",
    "people",
    "tooling",
)
MLOPS_CATEGORIES = CATEGORIES[2:]
COMPUTE_CATEGORIES = ("training_compute",)  # the naive estimate counts only these
RETRAIN_CATEGORIES = ("training_compute", "keeping_current")  # recurring spend that scales with retrains
SET_UP_CATEGORIES = ("data_curation", "training_compute")  # spent once, by default, in an observed window
SENSITIVITY_PARAMETERS = ("volume", "frontier_price", "retrain_frequency", "people_time")


def _decimal(value, name: str) -> Decimal:
    """A non-negative finite Decimal; floats go through str() so 0.1 stays 0.1, not 0.1000000000000000055."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        number = None
    if number is None or not number.is_finite() or isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a number; pass e.g. Decimal('12.50') or '12.50'.")
    if number < 0:
        raise ValueError(f"{name}={value!r} is negative; costs, volumes and measurements are >= 0.")
    return number


def _growth(growth_per_month) -> Decimal:
    try:
        growth = Decimal(str(growth_per_month))
    except InvalidOperation:
        growth = Decimal("NaN")
    if not growth.is_finite() or growth <= -1:
        raise ValueError(f"growth_per_month={growth_per_month!r} must be a number > -1, e.g. 0.05 for +5%.")
    return growth


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def frontier_cost_per_call_usd(
    tokens_in_per_call, tokens_out_per_call, price_in_per_1m_usd, price_out_per_1m_usd
) -> Decimal:
    """Mean tokens per call × the provider's prices per million tokens (ml.costs.unit_costs prices it)."""
    return frontier_call_usd(
        tokens_in_per_call, tokens_out_per_call, price_in_per_1m_usd, price_out_per_1m_usd
    )


def monthly_volumes(calls_per_month, growth_per_month, months: int) -> list[int]:
    """Calls in months 1..months, compounding growth_per_month from calls_per_month in month 1."""
    calls, growth = _decimal(calls_per_month, "calls_per_month"), _growth(growth_per_month)
    if not _whole(months) or months < 0:
        raise ValueError(f"months={months!r} must be a whole number >= 0.")
    return [int((calls * (1 + growth) ** m).to_integral_value(ROUND_HALF_EVEN)) for m in range(months)]


@dataclass(frozen=True)
class MlopsSpend:
    """Post-training spend by ledger category: spent once to set up, and then every month."""

    one_time_usd: Mapping[str, Decimal] = field(default_factory=dict)
    recurring_usd_per_month: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("one_time_usd", "recurring_usd_per_month"):
            amounts = getattr(self, name)
            unknown = sorted(set(amounts) - set(MLOPS_CATEGORIES))
            if unknown:
                raise ValueError(
                    f"{name} has unknown category {unknown[0]!r}; use one of "
                    f"{', '.join(MLOPS_CATEGORIES)} (frontier_api and serving are priced per call)."
                )
            object.__setattr__(self, name, {c: _decimal(v, f"{name}[{c!r}]") for c, v in amounts.items()})

    def _sums(self, categories: Iterable[str]) -> tuple[Decimal, Decimal]:
        keep = set(categories)
        return (
            sum((v for c, v in self.one_time_usd.items() if c in keep), Decimal(0)),
            sum((v for c, v in self.recurring_usd_per_month.items() if c in keep), Decimal(0)),
        )

    def compute_only(self) -> tuple[Decimal, Decimal]:
        """(one_time_usd, recurring_usd_per_month) as a compute-only estimate sees them."""
        return self._sums(COMPUTE_CATEGORIES)

    def fully_loaded(self) -> tuple[Decimal, Decimal]:
        """(one_time_usd, recurring_usd_per_month) with people, curation, keeping current, tooling..."""
        return self._sums(MLOPS_CATEGORIES)

    def scaled(self, categories: Iterable[str], factor, *, one_time=True, recurring=True) -> MlopsSpend:
        keep, k = set(categories), _decimal(factor, "factor")

        def scale(amounts, on):
            return {c: v * k if on and c in keep else v for c, v in amounts.items()}

        return MlopsSpend(scale(self.one_time_usd, one_time), scale(self.recurring_usd_per_month, recurring))


def spend_from_category_totals(
    totals_usd_by_category: Mapping[str, Decimal],
    observed_months,
    one_time_categories: Iterable[str] = SET_UP_CATEGORIES,
) -> MlopsSpend:
    """Per-category ledger totals over an observed window → one-time and monthly MLOps spend.

    The assumption, stated: a category in one_time_categories was spent once, to set up, and will
    not recur; every other category recurs at its observed monthly average (total ÷ observed_months).
    frontier_api and serving are dropped: the arithmetic prices them per call × volume, and adding
    them here would count them twice. Where the split differs (people's set-up hours, say), build
    MlopsSpend directly.
    """
    months = _decimal(observed_months, "observed_months")
    if months == 0:
        raise ValueError("observed_months=0 must be > 0: the length of the window the totals cover.")
    unknown = sorted(set(totals_usd_by_category) - set(CATEGORIES))
    if unknown:
        raise ValueError(
            f"unknown category {unknown[0]!r}; the ledger's categories are {', '.join(CATEGORIES)}."
        )
    once = set(one_time_categories)
    mlops = {
        c: _decimal(v, f"totals_usd_by_category[{c!r}]")
        for c, v in totals_usd_by_category.items()
        if c in MLOPS_CATEGORIES
    }
    return MlopsSpend(
        {c: v for c, v in mlops.items() if c in once},
        {c: v / months for c, v in mlops.items() if c not in once},
    )


@dataclass(frozen=True)
class BreakEvenInputs:
    """One workflow's volume and prices; MLOps spend as totals, or as a `spend` breakdown."""

    calls_per_month: Decimal  # month 1, as measured
    growth_per_month: Decimal  # compound, 0.05 = +5% a month
    frontier_cost_per_call_usd: Decimal  # ml.costs.unit_costs: each call at its own model and day
    # Serving: a ServingPlan (replicas rented by the hour, the always-on floor; what the platform
    # uses), or a flat per-call price (a managed endpoint billed by the call).
    self_hosted_cost_per_call_usd: Decimal | None = None
    one_time_usd: Decimal | None = None  # set-up: curation, first training, people's set-up hours
    recurring_mlops_usd_per_month: Decimal | None = (
        None  # keeping current, evaluation, storage, tooling, people
    )
    horizon_months: int = 24
    serving_fixed_usd_per_month: Decimal = Decimal(0)  # a minimum instance that runs whatever the volume
    # By category: derives the two totals above when they are None; the naive view and the
    # retrain/people sensitivity need it.
    spend: MlopsSpend | None = None
    serving: ServingPlan | None = None

    def __post_init__(self):
        if (self.serving is None) == (self.self_hosted_cost_per_call_usd is None):
            raise ValueError(
                "pass serving=ServingPlan(...) (replicas by the hour) or self_hosted_cost_per_call_usd "
                "(a per-call price), exactly one."
            )
        if self.serving is not None and not isinstance(self.serving, ServingPlan):
            raise ValueError(f"serving={self.serving!r} must be a ml.costs.unit_costs.ServingPlan.")
        for name in ("calls_per_month", "frontier_cost_per_call_usd", "serving_fixed_usd_per_month"):
            object.__setattr__(self, name, _decimal(getattr(self, name), name))
        if self.self_hosted_cost_per_call_usd is not None:
            object.__setattr__(
                self,
                "self_hosted_cost_per_call_usd",
                _decimal(self.self_hosted_cost_per_call_usd, "self_hosted_cost_per_call_usd"),
            )
        object.__setattr__(self, "growth_per_month", _growth(self.growth_per_month))
        if not _whole(self.horizon_months) or self.horizon_months < 1:
            raise ValueError(f"horizon_months={self.horizon_months!r} must be a whole number >= 1, e.g. 24.")
        totals = self.spend.fully_loaded() if self.spend is not None else (None, None)
        for name, total in zip(("one_time_usd", "recurring_mlops_usd_per_month"), totals):
            given = getattr(self, name)
            if given is None and total is None:
                raise ValueError(f"{name} is missing; pass it, or pass spend=MlopsSpend(...) to derive it.")
            value = total if given is None else _decimal(given, name)
            if total is not None and value != total:
                raise ValueError(
                    f"{name}={given} disagrees with spend's total {total}; pass one or the other."
                )
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class MonthRow:
    month: int
    calls: int
    frontier_usd: Decimal
    post_training_usd: Decimal  # serving + recurring MLOps + fixed serving (+ one-time in month 1)
    cumulative_frontier_usd: Decimal
    cumulative_post_training_usd: Decimal
    cumulative_saving_usd: Decimal
    serving_usd: Decimal = Decimal(0)  # this month's serving alone


@dataclass(frozen=True)
class BreakEvenResult:
    inputs: BreakEvenInputs
    rows: list[MonthRow]
    break_even_month: int | None  # first month cumulative post-training <= cumulative frontier
    cumulative_saving_at_horizon_usd: Decimal
    break_even_calls_per_month: int | None  # steady volume whose saving covers recurring spend


def break_even(inputs: BreakEvenInputs) -> BreakEvenResult:
    rows, cumulative_frontier, cumulative_post, first = [], Decimal(0), Decimal(0), None
    recurring_usd = inputs.recurring_mlops_usd_per_month + inputs.serving_fixed_usd_per_month
    volumes = monthly_volumes(inputs.calls_per_month, inputs.growth_per_month, inputs.horizon_months)
    for month, calls in enumerate(volumes, start=1):
        frontier = calls * inputs.frontier_cost_per_call_usd
        serving = serving_usd(inputs, calls)
        post = serving + recurring_usd
        post += inputs.one_time_usd if month == 1 else 0
        cumulative_frontier, cumulative_post = cumulative_frontier + frontier, cumulative_post + post
        if first is None and cumulative_post <= cumulative_frontier:
            first = month
        rows.append(
            MonthRow(
                month,
                calls,
                frontier,
                post,
                cumulative_frontier,
                cumulative_post,
                cumulative_frontier - cumulative_post,
                serving,
            )
        )
    return BreakEvenResult(
        inputs, rows, first, rows[-1].cumulative_saving_usd, _calls_needed(inputs, recurring_usd)
    )


def serving_usd(inputs: BreakEvenInputs, calls) -> Decimal:
    """A month of serving at this volume: the plan's replica-hours, or calls × a per-call price."""
    if inputs.serving is not None:
        return inputs.serving.usd_per_month(calls)
    return calls * inputs.self_hosted_cost_per_call_usd


def _calls_needed(inputs: BreakEvenInputs, recurring_usd: Decimal) -> int | None:
    """The smallest steady monthly volume whose saving over the frontier covers the recurring bill."""

    def covers(calls: int) -> bool:
        return calls * inputs.frontier_cost_per_call_usd - serving_usd(inputs, calls) >= recurring_usd

    if inputs.serving is None:
        saving_per_call_usd = inputs.frontier_cost_per_call_usd - inputs.self_hosted_cost_per_call_usd
        # No volume pays back a recurring bill when each call costs more self-hosted than on the API.
        return (
            int((recurring_usd / saving_per_call_usd).to_integral_value(ROUND_CEILING))
            if saving_per_call_usd > 0
            else None
        )
    # Replicas are whole, so the saving is a saw-tooth in the volume: double until it covers, then
    # bisect to a crossing. When a frontier call costs no more than a replica's share per call
    # past the floor, nothing up to a quadrillion calls covers it: None.
    high = 1
    while not covers(high):
        high *= 2
        if high > 10**15:
            return None
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if covers(middle) else (middle, high)
    return high


def _require_spend(inputs: BreakEvenInputs, what: str) -> MlopsSpend:
    if inputs.spend is None:
        raise ValueError(
            f"{what} needs the spend by category; pass spend=MlopsSpend(...) to BreakEvenInputs "
            "(spend_from_category_totals builds it from the ledger totals)."
        )
    return inputs.spend


def naive_vs_fully_loaded(inputs: BreakEvenInputs) -> tuple[BreakEvenResult, BreakEvenResult]:
    """(compute only, fully loaded): the gap between them is what the naive estimate leaves out."""
    one_time, recurring = _require_spend(inputs, "the naive (compute only) view").compute_only()
    naive = replace(inputs, one_time_usd=one_time, recurring_mlops_usd_per_month=recurring, spend=None)
    return break_even(naive), break_even(inputs)


@dataclass(frozen=True)
class SensitivityRow:
    parameter: str
    factor: Decimal
    break_even_month: int | None
    cumulative_saving_at_horizon_usd: Decimal


def _varied(inputs: BreakEvenInputs, parameter: str, factor: Decimal) -> BreakEvenInputs:
    if parameter == "volume":
        return replace(inputs, calls_per_month=inputs.calls_per_month * factor)
    if parameter == "frontier_price":  # both token prices move together, so the per-call cost scales
        return replace(inputs, frontier_cost_per_call_usd=inputs.frontier_cost_per_call_usd * factor)
    if parameter == "retrain_frequency":  # retraining twice as often doubles what recurs, not the set-up
        spend = inputs.spend.scaled(RETRAIN_CATEGORIES, factor, one_time=False)
    else:
        spend = inputs.spend.scaled(("people",), factor)
    return replace(inputs, spend=spend, one_time_usd=None, recurring_mlops_usd_per_month=None)


def sensitivity(
    inputs: BreakEvenInputs,
    factors=(Decimal("0.5"), Decimal(1), Decimal(2)),
    parameters: Iterable[str] = SENSITIVITY_PARAMETERS,
) -> list[SensitivityRow]:
    """Break-even month and saving at the horizon with one parameter scaled by each factor."""
    parameters = list(parameters)
    unknown = [p for p in parameters if p not in SENSITIVITY_PARAMETERS]
    if unknown:
        raise ValueError(
            f"unknown sensitivity parameter {unknown[0]!r}; use some of {', '.join(SENSITIVITY_PARAMETERS)}."
        )
    by_category = [p for p in parameters if p in ("retrain_frequency", "people_time")]
    if by_category:
        _require_spend(inputs, f"varying {' and '.join(by_category)}")
    rows = []
    for parameter in parameters:
        for raw in factors:
            factor = _decimal(raw, "factor")
            result = break_even(_varied(inputs, parameter, factor))
            rows.append(
                SensitivityRow(
                    parameter, factor, result.break_even_month, result.cumulative_saving_at_horizon_usd
                )
            )
    return rows


def pays(result: BreakEvenResult) -> bool:
    """Post-training pays within the horizon: it breaks even, and is not behind again at the end."""
    return result.break_even_month is not None and result.cumulative_saving_at_horizon_usd >= 0


@dataclass(frozen=True)
class FlipPoint:
    parameter: str
    factor: Decimal  # the parameter × factor is the first value (to 0.01) at which the answer flips
    pays_now: bool

    @property
    def text(self) -> str:
        what = {
            "volume": "the declared volume",
            "frontier_price": "the frontier price",
            "people_time": "the people time",
            "retrain_frequency": "the retraining frequency",
        }[self.parameter]
        return f"at {self.factor}× {what} it {'no longer pays' if self.pays_now else 'would pay'}"


# Which way each parameter has to move to make post-training look worse: more volume and a
# dearer frontier help it; more people time and more retraining hurt it.
_HURTS_WHEN = {"volume": "down", "frontier_price": "down", "people_time": "up", "retrain_frequency": "up"}
_FLIP_STEP = Decimal("0.01")
_WALK_STEP = Decimal("0.97")


def flip_points(
    inputs: BreakEvenInputs, parameters: Iterable[str] = SENSITIVITY_PARAMETERS
) -> list[FlipPoint]:
    """For each parameter alone, the factor nearest to 1 at which the answer (pays within the
    horizon or not) flips; the parameters nearest to flipping first.

    Found on the break-even function itself: a walk outward from 1 in 3% steps finds the first
    factor with the other answer (replicas are whole, so the answer need not flip only once), then
    bisection pins the crossing to 0.01. A parameter the answer does not turn on within
    [1/1000, 1000] is left out; retrain_frequency and people_time need the spend by category.
    """
    base = pays(break_even(inputs))
    out = []
    for parameter in parameters:
        if parameter in ("retrain_frequency", "people_time") and inputs.spend is None:
            continue
        worse = _HURTS_WHEN[parameter] == "down"
        # Walking toward "worse" flips a paying answer; toward "better" flips a losing one.
        downward = worse if base else not worse
        step, limit = (_WALK_STEP, Decimal("0.001")) if downward else (1 / _WALK_STEP, Decimal(1000))
        near, far = Decimal(1), None  # same answer as base at near, flipped at far
        while near != limit:
            factor = max(near * step, limit) if downward else min(near * step, limit)
            if pays(break_even(_varied(inputs, parameter, factor))) != base:
                far = factor
                break
            near = factor
        if far is None:
            continue
        for _ in range(60):
            middle = (near + far) / 2
            if pays(break_even(_varied(inputs, parameter, middle))) == base:
                near = middle
            else:
                far = middle
            if abs(far - near) < _FLIP_STEP / 4:
                break
        # Round outward to a factor that is flipped for certain, then state it to two places.
        factor = far.quantize(_FLIP_STEP, rounding=ROUND_DOWN if downward else ROUND_UP)
        if pays(break_even(_varied(inputs, parameter, factor))) == base:
            factor = far
        out.append(
            FlipPoint(parameter, factor.normalize() if factor == factor.to_integral() else factor, base)
        )
    return sorted(out, key=lambda f: abs(f.factor.ln()))


def _usd(amount: Decimal) -> str:
    places = 0 if abs(amount) >= 100 else 2
    return f"{'-' if amount < 0 else ''}${abs(amount):,.{places}f}"


@dataclass(frozen=True)
class Constraints:
    """The ninety-day test: the frontier model measured in production against its targets."""

    p99_latency_ms: float
    sla_ms: float
    monthly_cost_usd: Decimal
    monthly_budget_usd: Decimal
    availability: float  # share of calls answered, 0.999 = 99.9%
    availability_target: float
    proprietary_data: bool
    inference_cost_is_budget_line: bool  # the cost reviewer's call: is this spend a line someone owns?
    error_rate: float | None = None
    error_rate_max: float | None = None

    def __post_init__(self):
        for name in ("monthly_cost_usd", "monthly_budget_usd"):
            object.__setattr__(self, name, _decimal(getattr(self, name), name))
        if self.sla_ms <= 0 or self.p99_latency_ms < 0 or self.monthly_budget_usd == 0:
            raise ValueError(
                f"sla_ms={self.sla_ms!r} and monthly_budget_usd={self.monthly_budget_usd} must be > 0, "
                f"p99_latency_ms={self.p99_latency_ms!r} >= 0."
            )
        for name in ("availability", "availability_target", "error_rate", "error_rate_max"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name}={value!r} must be a share in [0, 1], e.g. 0.999 for 99.9%.")
        if (self.error_rate is None) != (self.error_rate_max is None):
            raise ValueError("error_rate and error_rate_max go together; pass both or neither.")


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "post-training pays from month N" or "stay on the frontier API"
    reasons: list[str]  # the deciding reason first, each with its number
    constraints_failing: list[str]  # of latency, cost, reliability
    post_training_pays: bool


def _over(value, limit) -> str:
    return f"{(value - limit) / limit * 100:,.0f}%"


def _fail_text(failing: list[str]) -> str:
    if len(failing) == 1:
        return f"{failing[0]} fails"
    return f"{', '.join(failing[:-1])} and {failing[-1]} fail"


def _constraint_reasons(c: Constraints) -> tuple[list[str], list[str]]:
    failing, reasons, latency = [], [], f"p99 latency {c.p99_latency_ms:,.0f} ms"
    if c.p99_latency_ms > c.sla_ms:
        failing.append("latency")
        reasons.append(f"{latency} exceeds the {c.sla_ms:,.0f} ms SLA by {_over(c.p99_latency_ms, c.sla_ms)}")
    else:
        reasons.append(f"{latency} is inside the {c.sla_ms:,.0f} ms SLA")
    if c.monthly_cost_usd > c.monthly_budget_usd:
        failing.append("cost")
        reasons.append(
            f"monthly cost {_usd(c.monthly_cost_usd)} exceeds the {_usd(c.monthly_budget_usd)} budget "
            f"by {_over(c.monthly_cost_usd, c.monthly_budget_usd)}"
        )
    else:
        reasons.append(
            f"monthly cost {_usd(c.monthly_cost_usd)} is inside the {_usd(c.monthly_budget_usd)} budget"
        )
    unreliable = c.availability < c.availability_target
    reasons.append(
        f"availability {c.availability:.2%} {'is below' if unreliable else 'meets'} "
        f"the {c.availability_target:.2%} target"
    )
    if c.error_rate is not None:
        too_many = c.error_rate > c.error_rate_max
        unreliable = unreliable or too_many
        reasons.append(
            f"error rate {c.error_rate:.2%} {'exceeds' if too_many else 'is inside'} "
            f"the {c.error_rate_max:.2%} maximum"
        )
    if unreliable:
        failing.append("reliability")
    return failing, reasons


def _break_even_text(result: BreakEvenResult) -> str:
    horizon = result.inputs.horizon_months
    if result.break_even_month is None:
        return (
            f"does not break even within {horizon} months "
            f"(cumulative saving {_usd(result.cumulative_saving_at_horizon_usd)})"
        )
    return (
        f"breaks even in month {result.break_even_month} and saves "
        f"{_usd(result.cumulative_saving_at_horizon_usd)} over {horizon} months"
    )


NOT_MEASURED = (
    "the ninety-day test is not measured yet (no frontier call logged): latency, cost and "
    "reliability against the targets are unknown"
)


def decide(
    constraints: Constraints | None, full_result: BreakEvenResult, naive_result: BreakEvenResult | None = None
) -> Verdict:
    """The seed's frame: post-training pays only when a measured constraint fails, the data or the
    volume make it matter, and the fully loaded arithmetic breaks even within the horizon.

    constraints=None (nothing measured yet) gives the arithmetic's answer, marked as such.
    """
    c, full = constraints, full_result
    if c is None:
        reasons = [NOT_MEASURED, f"fully loaded, post-training {_break_even_text(full)}"]
        if naive_result is not None:
            reasons.append(f"counting compute only, it {_break_even_text(naive_result)}")
        if pays(full):
            return Verdict(
                f"the arithmetic pays from month {full.break_even_month}; the ninety-day test is not "
                "measured yet",
                reasons,
                [],
                False,
            )
        return Verdict(
            "stay on the frontier API",
            [f"post-training does not pay within {full.inputs.horizon_months} months"] + reasons,
            [],
            False,
        )
    failing, reasons = _constraint_reasons(c)
    reasons.append(f"the use case touches {'' if c.proprietary_data else 'no '}proprietary data")
    reasons.append(
        f"inference cost ({_usd(c.monthly_cost_usd)} a month) "
        f"{'is' if c.inference_cost_is_budget_line else 'is not'} a budget line"
    )
    reasons.append(f"fully loaded, post-training {_break_even_text(full)}")
    if naive_result is not None:
        reasons.append(f"counting compute only, it {_break_even_text(naive_result)}")

    def stay(why: str) -> Verdict:
        return Verdict("stay on the frontier API", [why] + reasons, failing, False)

    if not failing:
        saving = full.cumulative_saving_at_horizon_usd
        return stay(
            "latency, cost and reliability are all inside range, so the case for post-training does not "
            "close"
            + (
                f", even though the arithmetic saves {_usd(saving)} over {full.inputs.horizon_months} months"
                if saving > 0
                else ""
            )
        )
    if not c.proprietary_data and not c.inference_cost_is_budget_line:
        return stay(
            f"{_fail_text(failing)}, but with no proprietary data and inference cost not a "
            "budget line a general provider remains the right call"
        )
    if full.break_even_month is None:
        return stay(f"post-training does not break even within {full.inputs.horizon_months} months")
    if full.cumulative_saving_at_horizon_usd < 0:  # possible when volume shrinks after an early crossing
        return stay(
            f"post-training breaks even in month {full.break_even_month} but is "
            f"{_usd(-full.cumulative_saving_at_horizon_usd)} behind by month {full.inputs.horizon_months}"
        )
    return Verdict(
        f"post-training pays from month {full.break_even_month}",
        [
            f"{_fail_text(failing)} on the frontier API and the fully loaded cost breaks even "
            f"in month {full.break_even_month}"
        ]
        + reasons,
        failing,
        True,
    )
