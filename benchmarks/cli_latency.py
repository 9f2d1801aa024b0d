"""How long a model owner waits for `mlops models list` and `mlops models show`, as a ratio to a bare Python start.

Each command runs N times as a user runs it (`python -m ml.cli …` in a fresh subprocess) on a
prepared state of its own: a SQLite MLflow registry holding three versions of the first
workflow's model (a tiny models-from-code pyfunc), one of them @champion with its gate decision
and an evaluation.json on its run, as the distill DAG leaves them. The reference is
`python -c pass` with the same interpreter: the ratios say how many bare Python starts a command
costs on this machine. CPU seconds (user + system) are reported beside wall seconds: on a shared,
loaded machine they say what the command costs, the wall time what its user waited. Commands and
reference alternate, so a noisy neighbour slows all alike.

Run: `.venv/bin/python benchmarks/cli_latency.py [--n 10]`; writes benchmarks/results/cli_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_RUNS = 200  # a benchmark of bounded length

TINY_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""

# Done in a subprocess of its own, so the benchmark process imports nothing it measures.
PREPARE = """
import json, sys
from pathlib import Path
import mlflow
from ml import registry
from ml.config import load_settings
from ml.workflows import load_workflows

settings = load_settings()
settings.ensure_dirs()
wf = next(iter(load_workflows(settings.workflows_file).values()))
client = registry.configure(settings)
code = settings.state_dir / "tiny_model.py"
code.write_text(sys.argv[1])
decision = {
    "passed": True,
    "champion_version": None,
    "checks": [{"name": "min_macro_f1", "passed": True, "detail": "macro F1 0.91 >= 0.6",
                "observed": 0.91, "threshold": 0.6}],
}
evaluation = {"eval_version": "2a5adf77", "challenger": {"macro_f1": 0.91, "latency_p99_ms": 9.6,
              "per_class_f1": {label: 0.9 for label in wf.labels}}, "champion": None,
              "decision": decision}
with mlflow.start_run(experiment_id=registry.ensure_experiment(settings, wf.name)) as run:
    info = mlflow.pyfunc.log_model(name="model", python_model=str(code), pip_requirements=[])
    mlflow.log_dict(evaluation, "evaluation.json")
versions = [
    registry.register(client, wf.model_name, info.model_uri, run.info.run_id, idempotency_key=f"k{i}",
                      tags={"gate": "passed", "gate_decision": json.dumps(decision), "macro_f1": "0.91",
                            "dataset_version": "0123456789abcdef", "workflow": wf.name})
    for i in (1, 2, 3)
]
registry.move_alias(client, wf.model_name, registry.CHAMPION, versions[0], expected_from=None, why="benchmark")
print(versions[0])
"""


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_s(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run: on a loaded machine the CPU time is
    what the command costs, the wall time what its user waits."""
    cpu, start = children_cpu_s(), time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed, children_cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help=f"runs per command (at most {MAX_RUNS})")
    parser.add_argument("--out", default="benchmarks/results/cli_latency.json")
    parser.add_argument(
        "--state", help="prepare the state in this (new) folder and keep it, e.g. for -X importtime"
    )
    args = parser.parse_args()
    if not 1 <= args.n <= MAX_RUNS:
        parser.error(f"--n must be in 1..{MAX_RUNS}")

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        env.update(
            MLOPS_STATE_DIR=str(Path(args.state).resolve() if args.state else Path(tmp) / "state"),
            MLOPS_WORKFLOWS_FILE=str(ROOT / "dags" / "workflows.yaml"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        prepared = subprocess.run(
            [sys.executable, "-c", PREPARE, TINY_MODEL],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if prepared.returncode != 0:
            raise SystemExit(f"preparing the state failed:\n{prepared.stderr[-3000:]}")
        champion = prepared.stdout.strip().splitlines()[-1]
        commands = {
            "python_c_pass": [sys.executable, "-c", "pass"],
            "models_list": [sys.executable, "-m", "ml.cli", "models", "list"],
            "models_show": [sys.executable, "-m", "ml.cli", "models", "show", champion],
        }
        names = list(commands)
        for name in names:  # warm-up: the page cache, the first-run bytecode compilation
            timed_s(commands[name], env)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.n):
            for name in names[i % 3 :] + names[: i % 3]:  # each command goes first in turn
                w, c = timed_s(commands[name], env)
                wall[name].append(w)
                cpu[name].append(c)

    median = {k: statistics.median(v) for k, v in wall.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    bare = median["python_c_pass"]
    report = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "n": args.n,
        "median_s": median,
        "min_s": {k: min(v) for k, v in wall.items()},
        "median_cpu_s": median_cpu,
        "ratio_to_python_start": {k: v / bare for k, v in median.items() if k != "python_c_pass"},
        "cpu_ratio_to_python_start": {
            k: v / median_cpu["python_c_pass"] for k, v in median_cpu.items() if k != "python_c_pass"
        },
    }
    print(f"{'command':<16}{'median s':>10}{'min s':>8}{'cpu s':>8}{'÷ python -c pass':>18}")
    for name in names:
        print(
            f"{name:<16}{median[name]:>10.2f}{report['min_s'][name]:>8.2f}{median_cpu[name]:>8.2f}"
            f"{median[name] / bare:>18.1f}"
        )
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
