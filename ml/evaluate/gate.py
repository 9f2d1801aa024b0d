"""The promotion gate: challenger vs champion on the same frozen evaluation set.

Pure function of two metric dicts and the workflow's thresholds, so every decision can be
replayed from the numbers saved with the model version. The quality checks are the named metrics
the workflow declares (`gate.metrics`), whatever the task; latency and cost are every task's. A
missing or NaN figure fails its check: a model we cannot measure is never promoted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ml.workflows import Gate, MetricRule


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: list[Check] = field(default_factory=list)
    champion_version: str | None = None

    @property
    def reasons(self) -> list[str]:
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "champion_version": self.champion_version,
            "checks": [asdict(c) for c in self.checks],
            "reasons": self.reasons,
        }


def _finite(x) -> bool:
    # numbers.Real takes numpy floats too (np.float32 is not a float); a bool is never a metric.
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _at_least(name: str, observed, floor: float, what: str) -> Check:
    ok = bool(_finite(observed) and observed >= floor)
    shown = f"{observed:.4f}" if _finite(observed) else repr(observed)
    return Check(
        name,
        ok,
        float(observed) if _finite(observed) else None,
        floor,
        f"{what} {shown} {'>=' if ok else 'is below'} {floor:.4f}",
    )


def _judged(value, per_part: bool) -> tuple[object, str | None]:
    """(the figure judged, the part it is): a per-part metric is judged on its worst part, a
    non-finite part counting as the worst; a missing or empty one gives NaN."""
    if not per_part:
        return value, None
    parts = value if isinstance(value, Mapping) else {}
    part, worst = min(
        parts.items(), key=lambda kv: kv[1] if _finite(kv[1]) else -1.0, default=(None, float("nan"))
    )
    return worst, part


def _metric_checks(
    rule: MetricRule, challenger: dict, champion: dict | None, champion_version: str | None
) -> list[Check]:
    """`min_NAME` (`NAME_floor` for a per-part metric) and, with a champion, `vs_champion_NAME`."""
    observed, part = _judged(challenger.get(rule.name), rule.per_part)
    what = rule.what or rule.name
    checks = []
    if rule.min is not None:
        if rule.per_part:
            checks.append(_at_least(f"{rule.name}_floor", observed, rule.min, f"worst {what} ({part})"))
        else:
            checks.append(_at_least(f"min_{rule.name}", observed, rule.min, what))
    if champion is not None and rule.max_drop is not None:
        # A champion figure that is missing or NaN gives a NaN floor, which no challenger meets.
        theirs = _judged(champion.get(rule.name), rule.per_part)[0]
        theirs = float(theirs) if _finite(theirs) else float("nan")
        floor = theirs - rule.max_drop
        label = f"worst {what}" if rule.per_part else what
        checks.append(
            _at_least(
                f"vs_champion_{rule.name}",
                observed,
                floor,
                f"{label} vs champion v{champion_version} (its {theirs:.4f} - margin {rule.max_drop})",
            )
        )
    return checks


def decide(
    challenger: dict,
    champion: dict | None,
    gate: Gate,
    *,
    latency_sla_p99_ms: float,
    max_cost_per_1k_calls_usd: float | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """challenger/champion: the task's named metrics (`evaluate`), 'latency_p99_ms', 'cost_per_1k_calls_usd'.

    The metrics judged are the workflow's `gate.metrics` (Gate.judged_metrics; classification's
    default: macro_f1 at least min_macro_f1 and at most max_macro_f1_drop below the champion's,
    every class's F1 at least per_class_f1_floor), then the latency SLA and the cost per 1k calls.
    """
    checks = []
    for rule in gate.judged_metrics:
        checks += _metric_checks(rule, challenger, champion, champion_version)
    p99 = challenger.get("latency_p99_ms")
    ok = bool(_finite(p99) and p99 <= latency_sla_p99_ms)
    checks.append(
        Check(
            "latency_sla",
            ok,
            float(p99) if _finite(p99) else None,
            latency_sla_p99_ms,
            f"p99 latency {p99 if not _finite(p99) else round(p99, 2)} ms "
            f"{'<=' if ok else 'exceeds'} the {latency_sla_p99_ms} ms SLA",
        )
    )
    if max_cost_per_1k_calls_usd is not None:
        cost = challenger.get("cost_per_1k_calls_usd")
        ok = bool(_finite(cost) and cost <= max_cost_per_1k_calls_usd)
        checks.append(
            Check(
                "cost_per_1k_calls",
                ok,
                float(cost) if _finite(cost) else None,
                max_cost_per_1k_calls_usd,
                f"cost per 1k calls ${cost if not _finite(cost) else round(cost, 6)} "
                f"{'<=' if ok else 'exceeds'} ${max_cost_per_1k_calls_usd} (the frontier's)",
            )
        )
    return GateDecision(all(c.passed for c in checks), checks, champion_version)
