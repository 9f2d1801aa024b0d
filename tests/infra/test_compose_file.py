"""docker-compose.yml keeps the production rules: no literal secrets, pinned images, health checks,
ports on 127.0.0.1 only, a GPU worker for the gpu queue, authentication on, and MLOPS_* settings
that point the platform at the compose services. Each rule also runs on a copy with one
deliberate mistake, to show it catches that mistake."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from infra_rules import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    MINIO_INIT,
    compose_auth_problems,
    compose_gpu_problems,
    compose_healthcheck_problems,
    compose_image_problems,
    compose_platform_problems,
    compose_port_problems,
    compose_secret_problems,
    dag_queues,
    env_example_problems,
    load_yaml,
    required_variables,
)

from ml.config import ENV_PREFIX, Settings

KNOWN_SETTINGS = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def mutated(compose: dict, change) -> dict:
    bad = copy.deepcopy(compose)
    change(bad["services"])
    return bad


def set_env(service: str, key: str, value: str):
    def change(services):
        # Services that share the anchored environment get their own copy first.
        services[service]["environment"] = {**services[service]["environment"], key: value}

    return change


def caught(problems: list[str], fragment: str) -> bool:
    return any(fragment in p for p in problems)


def test_the_stack_has_every_production_service(compose):
    expected = {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "mlflow",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-worker-gpu",
    }
    assert expected <= set(compose["services"])
    assert (
        compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    )


def test_no_literal_secrets(compose):
    assert compose_secret_problems(compose) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (set_env("postgres", "POSTGRES_PASSWORD", "hunter2"), "POSTGRES_PASSWORD is 'hunter2'"),
        (
            set_env(
                "airflow-worker",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "postgresql+psycopg2://mlops:hunter2@postgres:5432/airflow",
            ),
            "literal password 'hunter2'",
        ),
        (
            set_env("mlflow", "MLFLOW_AUTH_ADMIN_PASSWORD", "${MLFLOW_ADMIN_PASSWORD:-password1234}"),
            "has a default or none",
        ),
        (
            lambda s: s["redis"].update(command=["redis-server", "--requirepass", "hunter2"]),
            "--requirepass 'hunter2'",
        ),
    ],
    ids=["env-literal", "url-password", "defaulted-variable", "command-password"],
)
def test_secret_rule_catches(compose, change, fragment):
    assert caught(compose_secret_problems(mutated(compose, change)), fragment)


def test_images_are_pinned(compose):
    assert compose_image_problems(compose) == []


@pytest.mark.parametrize(
    "image, fragment",
    [
        ("redis", "has no tag"),
        ("redis:latest", "moving tag 'latest'"),
        ("localhost:5000/redis", "has no tag"),
    ],
)
def test_image_rule_catches(compose, image, fragment):
    bad = mutated(compose, lambda s: s["redis"].update(image=image))
    assert caught(compose_image_problems(bad), fragment)


def test_the_platform_image_tag_is_the_package_version(compose):
    import tomllib

    version = tomllib.loads((COMPOSE_FILE.parent / "pyproject.toml").read_text())["project"]["version"]
    assert compose["services"]["airflow-worker"]["image"] == f"mlops-posttrain:{version}"


def test_every_long_running_service_has_a_health_check(compose):
    assert compose_healthcheck_problems(compose) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda s: s["redis"].pop("healthcheck"), "redis: a long-running service without a health check"),
        (
            lambda s: s["mlflow"].update(healthcheck={"test": ["CMD", "true"]}),
            "mlflow: a long-running service",
        ),
        (
            lambda s: s["airflow-worker"].update(depends_on={"postgres": {"condition": "service_started"}}),
            "depends on postgres without condition service_healthy",
        ),
        (
            lambda s: [svc.get("depends_on", {}).pop("minio-init", None) for svc in s.values()],
            "minio-init: a one-shot job",
        ),
    ],
    ids=["missing", "trivial", "not-awaited-healthy", "one-shot-not-awaited"],
)
def test_health_check_rule_catches(compose, change, fragment):
    assert caught(compose_healthcheck_problems(mutated(compose, change)), fragment)


def test_only_the_uis_publish_ports_and_only_on_localhost(compose):
    assert compose_port_problems(compose) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda s: s["mlflow"].update(ports=["5000:5000"]), "published on every interface"),
        (lambda s: s["postgres"].update(ports=["127.0.0.1:5432:5432"]), "postgres: publishes port 5432"),
        (
            lambda s: s["minio"].update(ports=[{"target": 9001, "published": "9001", "host_ip": "0.0.0.0"}]),
            "published on every interface",
        ),
    ],
    ids=["all-interfaces", "database-published", "long-syntax"],
)
def test_port_rule_catches(compose, change, fragment):
    assert caught(compose_port_problems(mutated(compose, change)), fragment)


def test_training_is_routed_to_a_worker_holding_a_gpu(compose):
    queues = dag_queues()
    assert "gpu" in queues, "dags/ routes no task to the gpu queue: the GPU worker would sit idle"
    assert compose_gpu_problems(compose, queues) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda s: s["airflow-worker-gpu"].pop("deploy"), "listens on queue gpu without reserving a GPU"),
        (
            lambda s: s["airflow-worker-gpu"].update(
                command=["airflow", "celery", "worker", "--queues", "cpu"]
            ),
            "queue 'gpu' (used in dags/) has no Celery worker",
        ),
        (
            lambda s: s["airflow-worker"].update(deploy=copy.deepcopy(s["airflow-worker-gpu"]["deploy"])),
            "airflow-worker: reserves a GPU but does not listen on queue gpu",
        ),
    ],
    ids=["no-reservation", "no-gpu-worker", "gpu-on-the-wrong-worker"],
)
def test_gpu_rule_catches(compose, change, fragment):
    assert caught(compose_gpu_problems(mutated(compose, change), dag_queues()), fragment)


def test_authentication_is_on_and_mlflow_refuses_pickles(compose):
    assert compose_auth_problems(compose) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            set_env("airflow-api-server", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True"),
            "SIMPLE_AUTH_MANAGER_ALL_ADMINS must be False",
        ),
        (
            lambda s: s["airflow-api-server"].update(command=["airflow", "api-server"]),
            "must write the admin password",
        ),
        (
            lambda s: s["mlflow"].update(
                command=[c for c in s["mlflow"]["command"] if "basic-auth" not in c]
            ),
            "lacks '--app-name basic-auth'",
        ),
        (set_env("mlflow", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true"), "mlflow: MLFLOW_ALLOW_PICKLE"),
        (
            lambda s: s["mlflow"].update(
                command=[c for c in s["mlflow"]["command"] if "artifacts-destination" not in c]
            ),
            "lacks '--artifacts-destination s3://'",
        ),
    ],
    ids=[
        "airflow-all-admins",
        "no-admin-password",
        "mlflow-no-auth",
        "pickle-allowed",
        "artifacts-not-proxied",
    ],
)
def test_auth_rule_catches(compose, change, fragment):
    assert caught(compose_auth_problems(mutated(compose, change)), fragment)


def test_platform_settings_point_at_the_compose_services(compose):
    assert compose_platform_problems(compose, KNOWN_SETTINGS, MINIO_INIT.read_text()) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            set_env("airflow-worker", "MLOPS_LEDGER_URL", "sqlite:////opt/mlops-state/ledger.db"),
            "MLOPS_LEDGER_URL",
        ),
        (
            set_env("airflow-worker", "MLOPS_DVC_REMOTE_URL", "s3://datasets"),
            "not an s3:// bucket that minio-init",
        ),
        (
            set_env("airflow-worker", "MLOPS_MLFLOW_URI", "http://mlflow:5000"),
            "MLOPS_MLFLOW_URI is not a platform setting",
        ),
        (set_env("airflow-worker", "MLOPS_MLFLOW_ARTIFACT_ROOT", "s3://mlflow"), "proxied by the server"),
    ],
    ids=["sqlite-ledger", "unknown-bucket", "misspelt-setting", "artifacts-direct-to-s3"],
)
def test_platform_rule_catches(compose, change, fragment):
    problems = compose_platform_problems(mutated(compose, change), KNOWN_SETTINGS, MINIO_INIT.read_text())
    assert caught(problems, fragment)


def test_the_workers_settings_load_in_the_platform(compose):
    """The resolved worker environment is accepted by ml/config.py as it would be in the container."""
    from ml.config import load_settings

    env = {
        k: v
        for k, v in compose["services"]["airflow-worker-gpu"]["environment"].items()
        if k.startswith("MLOPS_")
    }
    env = {
        k: v.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in infra/.env}", "pw")
        for k, v in env.items()
    }
    settings = load_settings(env)
    assert settings.ledger_url.startswith("postgresql+psycopg2://mlops:pw@postgres:5432/ledger")
    assert settings.dvc_remote_url == "s3://dvc" and settings.device == "cuda"


def test_every_required_variable_is_documented(compose):
    required = required_variables(compose)
    assert len(required) >= 10
    assert env_example_problems(ENV_EXAMPLE.read_text(), required) == []


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (
            lambda text: text.replace("REDIS_PASSWORD=\n", ""),
            "REDIS_PASSWORD is required by docker-compose.yml",
        ),
        (
            lambda text: text.replace("REDIS_PASSWORD=\n", "REDIS_PASSWORD=changeme\n"),
            "has the value 'changeme'",
        ),
        (lambda text: text + "\nUNUSED_TOKEN=\n", "UNUSED_TOKEN has no comment"),
    ],
    ids=["undocumented", "example-secret", "uncommented"],
)
def test_env_example_rule_catches(compose, edit, fragment):
    required = required_variables(compose)
    assert caught(env_example_problems(edit(ENV_EXAMPLE.read_text()), required), fragment)


def test_the_platform_account_reaches_exactly_the_buckets_minio_init_creates():
    import json
    import re

    created = set(
        re.findall(r"mc mb --ignore-existing (.+)", MINIO_INIT.read_text())[0].replace("local/", "").split()
    )
    policy = json.loads((MINIO_INIT.parent / "mlops-buckets-policy.json").read_text())
    resources = {
        r.removeprefix("arn:aws:s3:::").split("/")[0] for s in policy["Statement"] for r in s["Resource"]
    }
    assert created == resources == {"mlflow", "dvc"}
    assert all(
        s["Effect"] == "Allow" and not any(a in ("s3:*", "admin:*") for a in s["Action"])
        for s in policy["Statement"]
    )
