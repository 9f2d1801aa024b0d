"""The rules the production files keep, as functions that return the problems they find.

Each rule reads parsed YAML (docker-compose.yml, the Helm values, the Kubernetes manifests) and
returns a list of sentences naming the service, the key and what is wrong; an empty list means
the file keeps the rule. The tests run every rule on the real files, and on a copy with one
deliberate mistake, so that each rule is shown to catch what it is for.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "infra" / ".env.example"
HELM_VALUES = ROOT / "infra" / "helm" / "airflow-values.yaml"
K8S_DIR = ROOT / "infra" / "k8s"
MINIO_INIT = ROOT / "infra" / "minio" / "init.sh"
DAGS_DIR = ROOT / "dags"

# Airflow's [operators] default_queue: tasks that name no queue go here.
DEFAULT_QUEUE = "default"
# Services that publish a port, and the port: the two UIs. Anything else stays inside.
PUBLISHED_PORTS = {"airflow-api-server": 8080, "mlflow": 5000}

# Names whose value is a credential. Usernames are not secrets; passwords, keys and tokens are.
SECRET_NAME_RE = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|TOKEN|FERNET_KEY|ACCESS_KEY|KEY_ID|REDISCLI_AUTH)$")
# A required compose variable: ${NAME:?message}. Compose stops, naming it, when it is unset or empty.
REQUIRED_VAR_RE = re.compile(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]*\}")
# Any compose interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?msg}, ... ($$ escapes).
ANY_VAR_RE = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)([^}]*)\}")
# user:password@ inside a URL.
URL_PASSWORD_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s]+)@")
# A command-line flag that takes a password as its next argument.
PASSWORD_FLAG_RE = re.compile(r"^--?[a-z-]*pass[a-z-]*$")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- helpers ---------------------------------------------------------------------------------------


def _strings(node, path=""):
    """(path, string) for every string anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _env_dict(env) -> dict[str, str]:
    """A service's environment as a dict, from either compose form (mapping or KEY=VALUE list)."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): ("" if v is None else str(v)) for k, v in env.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)


def _is_required_reference(value: str) -> bool:
    return bool(REQUIRED_VAR_RE.search(value))


def _command_list(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _worker_queues(service: dict) -> set[str]:
    """Queues a `celery worker` service listens on (--queues/-q), or set() for other services."""
    command = _command_list(service)
    if "worker" not in command:
        return set()
    for flag in ("--queues", "-q"):
        if flag in command and command.index(flag) + 1 < len(command):
            return set(command[command.index(flag) + 1].split(","))
    return {DEFAULT_QUEUE}  # a Celery worker without --queues serves Airflow's default queue


def _gpu_reservations(service: dict) -> list[dict]:
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []
    return [d for d in devices if "gpu" in (d.get("capabilities") or [])]


def _one_shot_services(compose: dict) -> set[str]:
    return {name for name, svc in compose["services"].items() if str(svc.get("restart", "")) == "no"}


def _image_tag_problem(where: str, image: str | None) -> str | None:
    if not image:
        return f"{where}: no image"
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all ("redis", "host:5000/redis")
        return f"{where}: image {image!r} has no tag; pin one"
    if tag in ("latest", "stable", "main", "master"):
        return f"{where}: image {image!r} uses the moving tag {tag!r}; pin a version"
    return None


# -- the DAGs: which queues must be served ---------------------------------------------------------


def dag_queues(dags_dir: Path = DAGS_DIR) -> set[str]:
    """Every queue a task in dags/ is routed to: `queue=` in any call, or a "queue" dict key."""
    queues: set[str] = set()
    for path in sorted(dags_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if (
                        kw.arg == "queue"
                        and isinstance(kw.value, ast.Constant)
                        and isinstance(kw.value.value, str)
                    ):
                        queues.add(kw.value.value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "queue"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        queues.add(value.value)
    return queues


# -- docker-compose.yml ----------------------------------------------------------------------------


def compose_secret_problems(compose: dict) -> list[str]:
    """No literal secret: secret-named variables, URL passwords and password flags are ${VAR:?...}."""
    problems = []
    for name, svc in compose["services"].items():
        for key, value in _env_dict(svc.get("environment")).items():
            if SECRET_NAME_RE.search(key) and not _is_required_reference(value):
                problems.append(f"{name}: {key} is {value!r}, not a required variable ${{VAR:?...}}")
        command = _command_list(svc)
        for flag, value in zip(command, command[1:]):
            if PASSWORD_FLAG_RE.match(flag) and not _is_required_reference(value):
                problems.append(f"{name}: command passes {flag} {value!r}, not a required variable")
    for where, text in _strings(compose):
        # A required reference's message may hold spaces: mask it before reading URLs.
        masked = REQUIRED_VAR_RE.sub("REQUIRED_VARIABLE", text)
        for match in URL_PASSWORD_RE.finditer(masked):
            password = match.group(1)
            if password != "REQUIRED_VARIABLE" and not password.startswith("$$"):
                problems.append(f"{where}: URL with the literal password {password!r}")
        for match in ANY_VAR_RE.finditer(text):
            if not match.group(2).startswith(":?"):
                problems.append(
                    f"{where}: ${{{match.group(1)}{match.group(2)}}} has a default or none; "
                    f"use ${{{match.group(1)}:?explain}}"
                )
    return problems


def compose_image_problems(compose: dict) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        problem = _image_tag_problem(f"service {name}", svc.get("image"))
        if problem:
            problems.append(problem)
    return problems


def compose_healthcheck_problems(compose: dict) -> list[str]:
    """Long-running services have a real health check; one-shot jobs are awaited to completion."""
    problems = []
    services = compose["services"]
    one_shot = _one_shot_services(compose)
    awaited = {
        dep
        for svc in services.values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }
    for name, svc in services.items():
        if name in one_shot:
            if name not in awaited:
                problems.append(
                    f"{name}: a one-shot job (restart: no) that nothing waits for "
                    "with condition service_completed_successfully"
                )
            continue
        check = svc.get("healthcheck") or {}
        test = check.get("test")
        if not test or check.get("disable") or test in (["NONE"], ["CMD", "true"], ["CMD-SHELL", "true"]):
            problems.append(f"{name}: a long-running service without a health check")
        for dep, cond in (svc.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dep in one_shot else "service_healthy"
            if not isinstance(cond, dict) or cond.get("condition") != wanted:
                problems.append(f"{name}: depends on {dep} without condition {wanted}")
    return problems


def compose_port_problems(compose: dict) -> list[str]:
    """Only the UIs publish a port, and only on 127.0.0.1."""
    problems = []
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                host_ip, published = port.get("host_ip"), port.get("published")
            else:
                parts = str(port).split(":")
                host_ip, published = (parts[0], parts[1]) if len(parts) == 3 else (None, parts[0])
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {port!r} is published on every interface; bind 127.0.0.1")
            if PUBLISHED_PORTS.get(name) != int(published):
                problems.append(f"{name}: publishes port {published}, which nothing outside needs")
    return problems


def compose_gpu_problems(compose: dict, queues: set[str]) -> list[str]:
    """Every DAG queue has a worker; the gpu worker reserves an NVIDIA GPU and only it does."""
    problems = []
    served: dict[str, list[str]] = {}
    for name, svc in compose["services"].items():
        listens = _worker_queues(svc)
        for queue in listens:
            served.setdefault(queue, []).append(name)
        gpus = _gpu_reservations(svc)
        if "gpu" in listens:
            if not gpus:
                problems.append(
                    f"{name}: listens on queue gpu without reserving a GPU "
                    "(deploy.resources.reservations.devices)"
                )
            for device in gpus:
                if device.get("driver") != "nvidia" or int(device.get("count", 0) or 0) < 1:
                    problems.append(f"{name}: GPU reservation {device} is not one or more NVIDIA GPUs")
        elif gpus:
            problems.append(f"{name}: reserves a GPU but does not listen on queue gpu")
    for queue in sorted(queues | {DEFAULT_QUEUE}):
        if queue not in served:
            problems.append(f"queue {queue!r} (used in dags/) has no Celery worker listening on it")
    return problems


def _service_env(compose: dict, service: str) -> dict[str, str]:
    return _env_dict(compose["services"][service].get("environment"))


def compose_auth_problems(compose: dict) -> list[str]:
    """Airflow and MLflow authenticate; MLflow refuses pickles; artifacts are proxied to S3."""
    problems = []
    airflow_services = [
        n
        for n, s in compose["services"].items()
        if any(k.startswith("AIRFLOW__") for k in _env_dict(s.get("environment")))
    ]
    for name in airflow_services:
        env = _service_env(compose, name)
        if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() != "false":
            problems.append(
                f"{name}: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS must be False (auth off otherwise)"
            )
        if env.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "").lower() != "false":
            problems.append(f"{name}: MLFLOW_ALLOW_PICKLE_DESERIALIZATION must be false")
    api = compose["services"].get("airflow-api-server")
    if api is None:
        problems.append("no airflow-api-server service")
    else:
        command = " ".join(_command_list(api))
        if "airflow_admin_password.py" not in command or "airflow api-server" not in command:
            problems.append(
                "airflow-api-server: must write the admin password "
                "(infra/airflow_admin_password.py) and then exec airflow api-server"
            )
        if not _is_required_reference(
            _service_env(compose, "airflow-api-server").get("AIRFLOW_ADMIN_PASSWORD", "")
        ):
            problems.append("airflow-api-server: AIRFLOW_ADMIN_PASSWORD must be a required variable")
    mlflow = compose["services"].get("mlflow")
    if mlflow is None:
        return problems + ["no mlflow service"]
    args = " ".join(_command_list(mlflow)).replace("=", " ")
    for wanted in ("--app-name basic-auth", "--serve-artifacts", "--artifacts-destination s3://"):
        if wanted not in args:
            problems.append(f"mlflow: command lacks {wanted!r}")
    env = _service_env(compose, "mlflow")
    if not _is_required_reference(env.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")):
        problems.append("mlflow: MLFLOW_AUTH_ADMIN_PASSWORD must be a required variable")
    if env.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "").lower() != "false":
        problems.append("mlflow: MLFLOW_ALLOW_PICKLE_DESERIALIZATION must be false")
    if not env.get("MLFLOW_BACKEND_STORE_URI", "").startswith("postgresql"):
        problems.append("mlflow: MLFLOW_BACKEND_STORE_URI must be PostgreSQL")
    return problems


def compose_platform_problems(compose: dict, known_settings: set[str], minio_init: str) -> list[str]:
    """The MLOPS_* settings point at the compose services: PostgreSQL, MLflow, the MinIO buckets."""
    problems = []
    services = compose["services"]
    mlflow_port = next(
        (
            int(str(c).rsplit("=", 1)[-1])
            for c in _command_list(services.get("mlflow", {}))
            if str(c).startswith("--port=")
        ),
        5000,
    )
    buckets = set(re.findall(r"local/([a-z0-9.-]+)", minio_init))
    destination = next(
        (
            c.split("=", 1)[1]
            for c in _command_list(services.get("mlflow", {}))
            if c.startswith("--artifacts-destination=")
        ),
        "",
    )
    if destination and destination.removeprefix("s3://").split("/")[0] not in buckets:
        problems.append(f"mlflow: artifacts bucket {destination} is not created by infra/minio/init.sh")
    for name, svc in services.items():
        env = _env_dict(svc.get("environment"))
        platform = {k: v for k, v in env.items() if k.startswith("MLOPS_")}
        if not platform:
            continue
        for key in sorted(set(platform) - known_settings):
            problems.append(f"{name}: {key} is not a platform setting (ml/config.py would refuse to start)")
        if not platform.get("MLOPS_LEDGER_URL", "").startswith(
            "postgresql"
        ) or "@postgres:" not in platform.get("MLOPS_LEDGER_URL", ""):
            problems.append(f"{name}: MLOPS_LEDGER_URL must be the compose PostgreSQL")
        if platform.get("MLOPS_MLFLOW_TRACKING_URI") != f"http://mlflow:{mlflow_port}":
            problems.append(f"{name}: MLOPS_MLFLOW_TRACKING_URI must be http://mlflow:{mlflow_port}")
        if not platform.get("MLOPS_MLFLOW_ARTIFACT_ROOT", "").startswith("mlflow-artifacts:"):
            problems.append(
                f"{name}: MLOPS_MLFLOW_ARTIFACT_ROOT must be mlflow-artifacts:/ (proxied by the server)"
            )
        remote = platform.get("MLOPS_DVC_REMOTE_URL", "")
        if not remote.startswith("s3://") or remote.removeprefix("s3://").split("/")[0] not in buckets:
            problems.append(
                f"{name}: MLOPS_DVC_REMOTE_URL {remote!r} is not an s3:// bucket that minio-init creates"
            )
        if not env.get("AWS_ENDPOINT_URL", "").startswith("http://minio:"):
            problems.append(f"{name}: AWS_ENDPOINT_URL must point DVC at the MinIO service")
    return problems


def required_variables(compose: dict) -> set[str]:
    """Names of every ${NAME:?...} in the compose file's values (comments do not count)."""
    return {name for _, text in _strings(compose) for name in REQUIRED_VAR_RE.findall(text)}


def env_example_problems(env_example_text: str, required: set[str]) -> list[str]:
    """Every required variable is in infra/.env.example, empty, under a comment that explains it."""
    problems = []
    lines = env_example_text.splitlines()
    documented = {}
    for i, line in enumerate(lines):
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if not match:
            continue
        name, value = match.groups()
        documented[name] = value
        if value.strip():
            problems.append(
                f"infra/.env.example: {name} has the value {value!r}; leave it empty "
                "so nobody runs with an example secret"
            )
        j = i - 1
        while j >= 0 and re.match(r"^[A-Z][A-Z0-9_]*=", lines[j]):
            j -= 1  # variables grouped under one comment
        if j < 0 or not lines[j].startswith("#"):
            problems.append(f"infra/.env.example: {name} has no comment above it saying what it is")
    for name in sorted(required - set(documented)):
        problems.append(f"infra/.env.example: {name} is required by docker-compose.yml but not documented")
    for name in sorted(set(documented) - required):
        problems.append(f"infra/.env.example: {name} is documented but docker-compose.yml does not use it")
    return problems


# -- Helm values -----------------------------------------------------------------------------------

# Chart keys that would put a secret (or the chart's default password) into the values file.
HELM_FORBIDDEN_LITERALS = (
    "fernetKey",
    "apiSecretKey",
    "jwtSecret",
    "webserverSecretKey",
    "data.metadataConnection",
    "data.resultBackendConnection",
    "data.brokerUrl",
    "redis.password",
)


def _get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _env_lists(node, path=""):
    """(path, list) for every `env:` list of {name, value|valueFrom} in a values or manifest tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "env" and isinstance(value, list):
                yield here, value
            else:
                yield from _env_lists(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _env_lists(value, f"{path}[{i}]")


def k8s_env_secret_problems(tree) -> list[str]:
    """Secret-named env entries come from a Secret (valueFrom.secretKeyRef), never `value:`."""
    problems = []
    for where, entries in _env_lists(tree):
        for entry in entries:
            name = str(entry.get("name", ""))
            if SECRET_NAME_RE.search(name) and not (entry.get("valueFrom") or {}).get("secretKeyRef"):
                problems.append(f"{where}: {name} must come from a Secret (valueFrom.secretKeyRef)")
    for where, text in _strings(tree):
        for match in URL_PASSWORD_RE.finditer(text):
            problems.append(f"{where}: URL with the literal password {match.group(1)!r}")
    return problems


def helm_secret_problems(values: dict) -> list[str]:
    problems = [
        f"{key} is set in the values; give the chart a Secret name instead"
        for key in HELM_FORBIDDEN_LITERALS
        if _get(values, key) not in (None, "", {})
    ]
    for component in ("postgresql", "redis"):
        if _get(values, f"{component}.enabled") is not False:
            problems.append(f"{component}.enabled must be false: the bundled one ships a default password")
    for secret_name in (
        "data.metadataSecretName",
        "data.brokerUrlSecretName",
        "fernetKeySecretName",
        "apiSecretKeySecretName",
        "jwtSecretName",
    ):
        if not _get(values, secret_name):
            problems.append(f"{secret_name} is not set: the chart would generate or default it")
    if (
        _get(values, "createUserJob.enabled") is not False
        or _get(values, "webserver.defaultUser.enabled") is not False
    ):
        problems.append(
            "createUserJob and webserver.defaultUser must be disabled (the chart's default user is admin/admin)"
        )
    return problems + k8s_env_secret_problems(values)


def helm_image_problems(values: dict, compose_image: str, airflow_version: str) -> list[str]:
    problems = []
    repo, tag = _get(values, "images.airflow.repository"), _get(values, "images.airflow.tag")
    problem = _image_tag_problem("images.airflow", f"{repo}:{tag}" if repo and tag else None)
    if problem:
        problems.append(problem)
    default = f"{_get(values, 'defaultAirflowRepository')}:{_get(values, 'defaultAirflowTag')}"
    if default != f"{repo}:{tag}":
        problems.append(
            f"defaultAirflowRepository/Tag {default} differ from images.airflow {repo}:{tag}: "
            "the migration job would run another image"
        )
    if str(tag) != compose_image.rpartition(":")[2]:
        problems.append(
            f"images.airflow.tag {tag} is not the compose image's tag ({compose_image}): one image"
        )
    if str(_get(values, "airflowVersion")) != airflow_version:
        problems.append(
            f"airflowVersion {_get(values, 'airflowVersion')} is not the locked Airflow {airflow_version}"
        )
    return problems


def helm_gpu_problems(values: dict, queues: set[str]) -> list[str]:
    """A Celery worker set per DAG queue; the gpu set's pods request an NVIDIA GPU."""
    problems = []
    if "CeleryExecutor" not in str(values.get("executor", "")):
        problems.append(
            f"executor {values.get('executor')!r} has no CeleryExecutor: the queues route nothing"
        )
    celery = _get(values, "workers.celery") or {}
    served = set()
    if celery.get("enableDefault") is not False:
        served |= set(str(celery.get("queue") or DEFAULT_QUEUE).split(","))
    for worker_set in celery.get("sets") or []:
        set_queues = set(str(worker_set.get("queue", "")).split(","))
        served |= set_queues
        limits = (worker_set.get("resources") or {}).get("limits") or {}
        gpus = int(limits.get("nvidia.com/gpu", 0) or 0)
        if "gpu" in set_queues and gpus < 1:
            problems.append(
                f"worker set {worker_set.get('name')}: queue gpu but resources.limits "
                "requests no nvidia.com/gpu"
            )
        if gpus and "gpu" not in set_queues:
            problems.append(f"worker set {worker_set.get('name')}: holds a GPU but does not serve queue gpu")
    for queue in sorted(queues | {DEFAULT_QUEUE}):
        if queue not in served:
            problems.append(f"queue {queue!r} (used in dags/) has no Celery worker set")
    return problems


def helm_auth_problems(values: dict) -> list[str]:
    problems = []
    if str(_get(values, "config.core.simple_auth_manager_all_admins")).lower() != "false":
        problems.append("config.core.simple_auth_manager_all_admins must be False (auth off otherwise)")
    args = " ".join(_get(values, "apiServer.args") or [])
    if "airflow_admin_password.py" not in args or "airflow api-server" not in args:
        problems.append("apiServer.args must write the admin password, then exec airflow api-server")
    api_env = {e.get("name"): e for e in _get(values, "apiServer.env") or []}
    if not (api_env.get("AIRFLOW_ADMIN_PASSWORD", {}).get("valueFrom") or {}).get("secretKeyRef"):
        problems.append("apiServer.env: AIRFLOW_ADMIN_PASSWORD must come from a Secret")
    users = [
        u.split(":")[0] for u in str(_get(values, "config.core.simple_auth_manager_users") or "").split(",")
    ]
    if api_env.get("AIRFLOW_ADMIN_USER", {}).get("value") not in users:
        problems.append(
            "apiServer.env: AIRFLOW_ADMIN_USER is not a user in config.core.simple_auth_manager_users, "
            "so its password would be generated and logged instead"
        )
    env = {e.get("name"): e.get("value") for e in values.get("env") or []}
    if str(env.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")).lower() != "false":
        problems.append("env: MLFLOW_ALLOW_PICKLE_DESERIALIZATION must be false")
    return problems


# -- Kubernetes manifests --------------------------------------------------------------------------


def k8s_problems(documents: list[dict]) -> list[str]:
    """Pinned images, probes on every long-running container, MLflow with auth and proxied artifacts."""
    problems = k8s_env_secret_problems(documents)
    for doc in documents:
        if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        name = doc["metadata"]["name"]
        for container in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{doc['kind']} {name}, container {container['name']}"
            problem = _image_tag_problem(where, container.get("image"))
            if problem:
                problems.append(problem)
            for probe in ("readinessProbe", "livenessProbe"):
                if not container.get(probe):
                    problems.append(f"{where}: no {probe}")
            command = " ".join(container.get("command") or []) + " " + " ".join(container.get("args") or [])
            if "mlflow server" in command:
                args = command.replace("=", " ")
                for wanted in ("--app-name basic-auth", "--serve-artifacts", "--artifacts-destination s3://"):
                    if wanted not in args:
                        problems.append(f"{where}: lacks {wanted!r}")
                env = {e["name"]: e for e in container.get("env") or []}
                if (
                    str((env.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION") or {}).get("value")).lower()
                    != "false"
                ):
                    problems.append(f"{where}: MLFLOW_ALLOW_PICKLE_DESERIALIZATION must be false")
                if not (env.get("MLFLOW_AUTH_ADMIN_PASSWORD") or {}).get("valueFrom"):
                    problems.append(f"{where}: MLFLOW_AUTH_ADMIN_PASSWORD must come from a Secret")
    return problems
