"""The promotion gate: challenger vs champion on the same frozen evaluation set.

Pure function of two metric dicts and the workflow's thresholds, so every decision can be
replayed from the numbers saved with the model version. A missing or NaN figure fails its
check: a model we cannot measure is never promoted.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

from ml.workflows import Gate


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


def decide(
    challenger: dict,
    champion: dict | None,
    gate: Gate,
    *,
    latency_sla_p99_ms: float,
    max_cost_per_1k_calls_usd: float | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """challenger/champion: {'macro_f1', 'per_class_f1': {label: f1}, 'latency_p99_ms', 'cost_per_1k_calls_usd'}."""
    checks = [_at_least("min_macro_f1", challenger.get("macro_f1"), gate.min_macro_f1, "macro-F1")]
    if champion is not None:
        # A champion figure that is missing or NaN gives a NaN floor, which no challenger meets.
        champion_f1 = champion.get("macro_f1")
        champion_f1 = float(champion_f1) if _finite(champion_f1) else float("nan")
        floor = champion_f1 - gate.max_macro_f1_drop
        checks.append(
            _at_least(
                "vs_champion_macro_f1",
                challenger.get("macro_f1"),
                floor,
                f"macro-F1 vs champion v{champion_version} (its {champion_f1:.4f} - margin {gate.max_macro_f1_drop})",
            )
        )
    per_class = challenger.get("per_class_f1") or {}
    worst = min(
        per_class.items(), key=lambda kv: kv[1] if _finite(kv[1]) else -1.0, default=(None, float("nan"))
    )
    checks.append(
        _at_least("per_class_f1_floor", worst[1], gate.per_class_f1_floor, f"worst class F1 ({worst[0]})")
    )
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
