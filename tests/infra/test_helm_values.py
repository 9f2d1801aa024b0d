"""The Kubernetes path keeps the compose rules: the Airflow chart values (infra/helm) and the
MLflow manifests (infra/k8s) hold no secrets, pin the one platform image, authenticate, and send
the training queue to pods that request an NVIDIA GPU.

The values are written for the official apache-airflow/airflow chart and checked here by parsing;
the chart itself is not rendered (no helm and no chart on this machine)."""

from __future__ import annotations

import copy

import pytest
from infra_rules import (
    COMPOSE_FILE,
    HELM_VALUES,
    K8S_DIR,
    dag_queues,
    helm_auth_problems,
    helm_gpu_problems,
    helm_image_problems,
    helm_secret_problems,
    k8s_problems,
    load_yaml,
    load_yaml_documents,
)


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(HELM_VALUES)


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return [doc for path in sorted(K8S_DIR.glob("*.yaml")) for doc in load_yaml_documents(path)]


def locked_airflow_version() -> str:
    constraints = (COMPOSE_FILE.parent / "constraints.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in constraints if line.startswith("apache-airflow=="))


def compose_image() -> str:
    return load_yaml(COMPOSE_FILE)["services"]["airflow-worker"]["image"]


def mutated(tree, change):
    bad = copy.deepcopy(tree)
    change(bad)
    return bad


def caught(problems: list[str], fragment: str) -> bool:
    return any(fragment in p for p in problems)


def gpu_set(values: dict) -> dict:
    return next(s for s in values["workers"]["celery"]["sets"] if s["queue"] == "gpu")


def test_helm_values_hold_no_secrets(values):
    assert helm_secret_problems(values) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda v: v.update(fernetKey="ZmFrZQ=="), "fernetKey is set in the values"),
        (lambda v: v["data"].update(brokerUrl="redis://:hunter2@redis:6379/0"), "data.brokerUrl is set"),
        (lambda v: v["redis"].update(enabled=True), "redis.enabled must be false"),
        (lambda v: v["createUserJob"].update(enabled=True), "default user is admin/admin"),
        (
            lambda v: v["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}),
            "AWS_SECRET_ACCESS_KEY must come from a Secret",
        ),
        (
            lambda v: v["env"].append(
                {"name": "MLOPS_LEDGER_URL", "value": "postgresql://mlops:hunter2@db/ledger"}
            ),
            "literal password 'hunter2'",
        ),
    ],
    ids=["fernet-key", "broker-url", "bundled-redis", "default-user", "env-secret", "url-password"],
)
def test_helm_secret_rule_catches(values, change, fragment):
    assert caught(helm_secret_problems(mutated(values, change)), fragment)


def test_helm_pins_the_same_image_as_compose(values):
    assert helm_image_problems(values, compose_image(), locked_airflow_version()) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda v: v["images"]["airflow"].update(tag="latest"), "moving tag 'latest'"),
        (lambda v: v["images"]["airflow"].update(tag=None), "no image"),
        (lambda v: v.update(defaultAirflowTag="3.3.2"), "the migration job would run another image"),
        (lambda v: v.update(airflowVersion="3.1.3"), "is not the locked Airflow"),
    ],
    ids=["latest", "no-tag", "migration-image", "airflow-version"],
)
def test_helm_image_rule_catches(values, change, fragment):
    assert caught(
        helm_image_problems(mutated(values, change), compose_image(), locked_airflow_version()), fragment
    )


def test_training_queue_goes_to_pods_that_request_a_gpu(values):
    assert helm_gpu_problems(values, dag_queues()) == []
    pods = gpu_set(values)
    assert pods["resources"]["limits"]["nvidia.com/gpu"] >= 1
    # Extended resources: Kubernetes requires request == limit when both are given.
    assert pods["resources"]["requests"]["nvidia.com/gpu"] == pods["resources"]["limits"]["nvidia.com/gpu"]
    assert any(t.get("key") == "nvidia.com/gpu" for t in pods["tolerations"])


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda v: gpu_set(v)["resources"]["limits"].pop("nvidia.com/gpu"), "requests no nvidia.com/gpu"),
        (
            lambda v: v["workers"]["celery"].update(sets=[]),
            "queue 'gpu' (used in dags/) has no Celery worker set",
        ),
        (lambda v: v.update(executor="KubernetesExecutor"), "has no CeleryExecutor"),
        (lambda v: v["workers"]["celery"].update(enableDefault=False), "queue 'default' (used in dags/)"),
    ],
    ids=["no-gpu-request", "no-gpu-set", "no-celery", "no-default-set"],
)
def test_helm_gpu_rule_catches(values, change, fragment):
    assert caught(helm_gpu_problems(mutated(values, change), dag_queues()), fragment)


def test_helm_authentication_is_on(values):
    assert helm_auth_problems(values) == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            lambda v: v["config"]["core"].update(simple_auth_manager_all_admins="True"),
            "all_admins must be False",
        ),
        (
            lambda v: v["apiServer"].update(args=["bash", "-c", "exec airflow api-server"]),
            "must write the admin password",
        ),
        (
            lambda v: v["apiServer"].update(
                env=[{"name": "AIRFLOW_ADMIN_PASSWORD", "value": "hunter2hunter2"}]
            ),
            "AIRFLOW_ADMIN_PASSWORD must come from a Secret",
        ),
        (
            lambda v: v.update(
                env=[e for e in v["env"] if e["name"] != "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
            ),
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION must be false",
        ),
        (
            lambda v: v["config"]["core"].update(simple_auth_manager_users="ops:admin"),
            "AIRFLOW_ADMIN_USER is not a user",
        ),
    ],
    ids=[
        "all-admins",
        "no-password-writer",
        "literal-admin-password",
        "pickle-allowed",
        "admin-user-mismatch",
    ],
)
def test_helm_auth_rule_catches(values, change, fragment):
    assert caught(helm_auth_problems(mutated(values, change)), fragment)


def test_helm_platform_settings_are_known(values):
    import dataclasses

    from ml.config import ENV_PREFIX, Settings

    known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    names = {e["name"] for e in values["env"] if e["name"].startswith(ENV_PREFIX)}
    assert names and names <= known
    assert "mlops-platform" in values["extraEnvFrom"]


def test_mlflow_manifests_keep_the_rules(manifests):
    assert {d["kind"] for d in manifests} >= {"Deployment", "Service", "PersistentVolumeClaim"}
    assert k8s_problems(manifests) == []


def test_airflow_reaches_mlflow_through_the_service(values, manifests):
    """The tracking URI in the values names the MLflow Service and port, and MLflow accepts that Host."""
    uri = next(e["value"] for e in values["env"] if e["name"] == "MLOPS_MLFLOW_TRACKING_URI")
    host_port = uri.removeprefix("http://")
    service = next(d for d in manifests if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow")
    assert host_port == f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert host_port in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")


def _mlflow_container(docs):
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            lambda docs: _mlflow_container(docs).update(image="registry.example.com/mlops-posttrain:latest"),
            "moving tag",
        ),
        (lambda docs: _mlflow_container(docs).pop("livenessProbe"), "no livenessProbe"),
        (
            lambda docs: _mlflow_container(docs).update(
                args=[a for a in _mlflow_container(docs)["args"] if "basic-auth" not in a]
            ),
            "lacks '--app-name basic-auth'",
        ),
        (
            lambda docs: _mlflow_container(docs)["env"].append(
                {"name": "MLFLOW_AUTH_ADMIN_PASSWORD", "value": "x"}
            ),
            "MLFLOW_AUTH_ADMIN_PASSWORD must come from a Secret",
        ),
    ],
    ids=["latest", "no-probe", "no-auth", "literal-password"],
)
def test_k8s_rule_catches(manifests, change, fragment):
    assert caught(k8s_problems(mutated(manifests, change)), fragment)
