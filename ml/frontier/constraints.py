"""The ninety-day test: how the frontier API behaved against the workflow's targets. No I/O.

Call-log rows (as the proxy writes them, or as an imported log holds them) over a window →
latency p50/p95/p99 of answered calls, error and timeout rates, availability (answered ÷ all),
tokens per call, cost per call from tokens × the price book (the logged cost_usd is never
trusted), and the month projected at the workflow's declared volume → `ml.breakeven.Constraints`,
and the seed's verdict: all inside range → the case for post-training does not close; otherwise
which fails, by how much. Nothing here assumes a short input: a 6-page contract's call is priced
and timed as recorded, tokens and all.

Beside them, the teacher's errors: where the workflow's task curates answers (ml/tasks/, its
`curate` and `TEACHER_ERROR_REASONS`), the answered calls of the window are curated exactly as
ingestion curates them, and the refusals that are the teacher's mistakes are counted by reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from ml.breakeven import Constraints
from ml.costs import unit_costs
from ml.costs.pricebook import PriceBook
from ml.evaluate.latency import percentile_ms
from ml.frontier.calllog import recorded_answer
from ml.tasks import task_module
from ml.workflows import Workflow

PERCENTILES = (50, 95, 99)
NOT_MEASURED = "not measured yet"


class NoCallsError(ValueError):
    """The window holds no call to measure; the message says how to get some."""


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest rank (q in percent), by the platform's one percentile method."""
    return percentile_ms(list(values), q / 100)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in PERCENTILES}


def _ts(row: dict) -> datetime:
    try:
        ts = datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise ValueError(
            f"call-log row {row.get('call_id', '(no call_id)')}: ts {row.get('ts')!r} is not an "
            "ISO 8601 time like 2026-08-01T09:30:00.000Z; fix or drop the row."
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def in_window(rows: Iterable[dict], now: datetime, window_days: int) -> list[dict]:
    """Rows in (now - window_days, now], each call once (a call can sit in two logs)."""
    since, seen, out = now - timedelta(days=window_days), set(), []
    for row in rows:
        key = row.get("call_id") or id(row)
        if key not in seen and since < _ts(row) <= now:
            seen.add(key)
            out.append(row)
    return out


@dataclass(frozen=True)
class Measurement:
    window_days: int
    since: str
    until: str
    calls: int
    ok_calls: int
    errors: int
    timeouts: int
    error_rate: float
    timeout_rate: float
    availability: float  # answered ÷ all calls; a call answered after retries counts as answered
    latency_ms: dict  # p50/p95/p99 of answered calls, retries and backoff included
    ttft_ms: dict  # the same for streamed calls' time to first token (None when none streamed)
    tokens_in_per_call: float  # mean over answered calls, as the provider counted them
    tokens_out_per_call: float
    cost_per_call_usd: Decimal
    calls_per_month_observed: float
    monthly_cost_usd: Decimal  # cost per call × the workflow's declared monthly_calls


def measure(
    rows: Iterable[dict],
    wf: Workflow,
    price_book: PriceBook,
    *,
    now: datetime,
    window_days: int = unit_costs.NINETY_DAY_WINDOW_DAYS,
) -> Measurement:
    if window_days < 1:
        raise ValueError(f"window_days={window_days} must be >= 1, e.g. 90.")
    rows = in_window(rows, now, window_days)
    if not rows:
        raise NoCallsError(
            f"{wf.name}: no frontier calls in the {window_days} days to {now:%Y-%m-%d}; route "
            "traffic through `mlops proxy`, import a call log (mlops data import), or widen --window-days."
        )
    ok = [r for r in rows if r.get("status") == "ok"]
    timeouts = sum(1 for r in rows if r.get("status") == "timeout")
    if not ok:
        raise ValueError(
            f"{wf.name}: none of {len(rows)} frontier calls in the window succeeded, so latency and "
            "cost cannot be measured; check the upstream URL and key (mlops config)."
        )
    per_call = unit_costs.measured_frontier_cost(ok, price_book).cost_per_call_usd
    return Measurement(
        window_days=window_days,
        since=(now - timedelta(days=window_days)).isoformat(timespec="seconds"),
        until=now.isoformat(timespec="seconds"),
        calls=len(rows),
        ok_calls=len(ok),
        errors=len(rows) - len(ok) - timeouts,
        timeouts=timeouts,
        error_rate=(len(rows) - len(ok) - timeouts) / len(rows),
        timeout_rate=timeouts / len(rows),
        availability=len(ok) / len(rows),
        latency_ms=_percentiles([float(r["latency_ms"]) for r in ok]),
        ttft_ms=_percentiles([float(r["ttft_ms"]) for r in ok if r.get("ttft_ms") is not None]),
        tokens_in_per_call=sum(int(r["tokens_in"]) for r in ok) / len(ok),
        tokens_out_per_call=sum(int(r["tokens_out"]) for r in ok) / len(ok),
        cost_per_call_usd=per_call,
        calls_per_month_observed=len(rows) / window_days * float(unit_costs.DAYS_PER_MONTH),
        monthly_cost_usd=per_call * wf.monthly_calls,
    )


def constraints(m: Measurement, wf: Workflow) -> Constraints:
    """The measurement as the break-even decision takes it."""
    return Constraints(
        p99_latency_ms=m.latency_ms["p99"],
        sla_ms=wf.latency_sla_p99_ms,
        monthly_cost_usd=m.monthly_cost_usd,
        monthly_budget_usd=wf.monthly_budget_usd,
        availability=m.availability,
        availability_target=wf.availability_target,
        proprietary_data=wf.proprietary_data,
        inference_cost_is_budget_line=wf.inference_cost_is_budget_line,
    )


def _usd(amount: Decimal) -> str:
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def verdict(c: Constraints) -> tuple[list[str], str]:
    """(failing constraints, the verdict in words with every number)."""
    checks = [
        (
            "latency",
            c.p99_latency_ms > c.sla_ms,
            f"p99 {c.p99_latency_ms:,.0f} ms against the {c.sla_ms:,.0f} ms SLA",
            f"p99 {c.p99_latency_ms:,.0f} ms is {(c.p99_latency_ms / c.sla_ms - 1):.0%} over the {c.sla_ms:,.0f} ms SLA",
        ),
        (
            "cost",
            c.monthly_cost_usd > c.monthly_budget_usd,
            f"{_usd(c.monthly_cost_usd)} a month against the {_usd(c.monthly_budget_usd)} budget",
            f"{_usd(c.monthly_cost_usd)} a month is {c.monthly_cost_usd / c.monthly_budget_usd - 1:.0%} over the "
            f"{_usd(c.monthly_budget_usd)} budget",
        ),
        (
            "reliability",
            c.availability < c.availability_target,
            f"availability {c.availability:.2%} against the {c.availability_target:.2%} target",
            f"availability {c.availability:.2%} is {(c.availability_target - c.availability) * 100:.2f} points "
            f"below the {c.availability_target:.2%} target",
        ),
    ]
    failing = [name for name, fails, _, _ in checks if fails]
    if not failing:
        inside = "; ".join(ok_text for _, _, ok_text, _ in checks)
        return (
            [],
            f"latency, cost and reliability are all inside range ({inside}): "
            "the case for post-training does not close",
        )
    fails = "; ".join(f"{name} fails: {fail_text}" for name, bad, _, fail_text in checks if bad)
    return failing, f"{fails}. Post-training may pay; the break-even report (mlops costs report) decides."


def teacher_errors(rows: Iterable[dict], wf: Workflow) -> dict | None:
    """The teacher's errors among the answered calls in rows, as the task's curation names them.

    None where the task does not curate answers (its module has no TEACHER_ERROR_REASONS) or no
    call was answered. Calls without a recorded answer (failed, or set aside for gold labels) are
    not answers: `answers` counts the rest, and `error_rate` is errors ÷ answers.
    """
    task = task_module(wf.task)
    reasons = getattr(task, "TEACHER_ERROR_REASONS", None)
    if reasons is None:
        return None
    answered = [r for r in rows if r.get("status") == "ok" and recorded_answer(r) is not None]
    if not answered:
        return None
    _, refused = task.curate(answered, wf.fields)
    counts = task.refusal_counts(refused)
    by_reason = {k: n for k, n in counts.items() if k in reasons}
    errors = sum(by_reason.values())
    return {
        "answers": len(answered),
        "errors": errors,
        "error_rate": errors / len(answered),
        "by_reason": by_reason,
        "other_refusals": {k: n for k, n in counts.items() if k not in reasons and n},
    }


def shadow_summary(rows: Iterable[dict], wf: Workflow) -> dict | None:
    """Shadow mode's evidence: agreement with the frontier, both latencies, both costs a month."""
    rows = list(rows)
    if not rows:
        return None
    judged = [r for r in rows if r.get("agree") is not None]
    student = sum((Decimal(str(r["student_cost_usd"])) for r in rows), Decimal(0)) / len(rows)
    frontier = sum((Decimal(str(r.get("frontier_cost_usd") or 0)) for r in rows), Decimal(0)) / len(rows)
    return {
        "requests": len(rows),
        "agreement": sum(r["agree"] for r in judged) / len(judged) if judged else None,
        "student_latency_ms": _percentiles([float(r["student_latency_ms"]) for r in rows]),
        "frontier_latency_ms": _percentiles([float(r["frontier_latency_ms"]) for r in rows]),
        "student_cost_per_call_usd": str(student),
        "frontier_cost_per_call_usd": str(frontier),
        "student_monthly_cost_usd": str(round(student * wf.monthly_calls, 2)),
        "frontier_monthly_cost_usd": str(round(frontier * wf.monthly_calls, 2)),
        "students": sorted({str(r.get("student")) for r in rows}),
    }


def report(
    rows: Iterable[dict],
    wf: Workflow,
    price_book: PriceBook,
    *,
    now: datetime,
    window_days: int = unit_costs.NINETY_DAY_WINDOW_DAYS,
    shadow_rows: Iterable[dict] = (),
) -> dict:
    """Everything `mlops frontier report` prints and frontier_constraints.json holds (JSON-ready).

    With no call in the window the report says so ("not measured yet", measured: null) rather than
    failing: a workflow trained on human labels has no frontier log until traffic goes through the proxy.
    """
    targets = {
        "latency_sla_p99_ms": wf.latency_sla_p99_ms,
        "monthly_budget_usd": str(wf.monthly_budget_usd),
        "availability_target": wf.availability_target,
        "monthly_calls": wf.monthly_calls,
    }
    rows = list(rows)
    try:
        m = measure(rows, wf, price_book, now=now, window_days=window_days)
    except NoCallsError as exc:
        return {
            "workflow": wf.name,
            "generated_at": now.isoformat(timespec="seconds"),
            "price_book_version": price_book.version,
            "verdict": f"{NOT_MEASURED}: {exc}",
            "constraints_failing": [],
            "all_inside_range": None,
            "measured": None,
            "teacher_errors": None,
            "window_days": window_days,
            "targets": targets,
            "shadow": shadow_summary(in_window(shadow_rows, now, window_days), wf),
        }
    c = constraints(m, wf)
    failing, text = verdict(c)
    measured = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(m).items()}
    return {
        "workflow": wf.name,
        "generated_at": now.isoformat(timespec="seconds"),
        "price_book_version": price_book.version,
        "verdict": text,
        "constraints_failing": failing,
        "all_inside_range": not failing,
        "measured": measured,
        "teacher_errors": teacher_errors(in_window(rows, now, window_days), wf),
        "targets": targets,
        "shadow": shadow_summary(in_window(shadow_rows, now, window_days), wf),
    }
