"""What the one image needs to run every service: the Dockerfile builds from the lock and copies
what exists, the MLflow auth config is one MLflow reads the way compose mounts it, and the lock
holds what the MLflow basic-auth app imports."""

from __future__ import annotations

import configparser
import importlib.util
import re

import pytest
from infra_rules import COMPOSE_FILE, ROOT, load_yaml

DOCKERFILE = ROOT / "infra" / "Dockerfile"
AUTH_INI = ROOT / "infra" / "mlflow" / "basic_auth.ini"


def test_dockerfile_installs_the_lock_from_a_pinned_base():
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases), bases
    assert re.search(r"pip install -c constraints\.txt", text), "the image must install from constraints.txt"
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, flags=re.M), "the image must not run as root"
    for source in re.findall(r"^COPY\s+(.+)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which is not in the repository"


def test_mlflow_auth_config_reads_as_mlflow_reads_it():
    """The keys MLflow's read_auth_config requires, no credential in the file, the store on the volume."""
    parser = configparser.ConfigParser()
    parser.read(AUTH_INI)
    section = parser["mlflow"]
    assert section["default_permission"] in ("READ", "NO_PERMISSIONS")
    assert "admin_password" not in section and "admin_username" not in section
    store = section["database_uri"].removeprefix("sqlite:///")
    mlflow = load_yaml(COMPOSE_FILE)["services"]["mlflow"]
    mounts = [v.split(":")[1] for v in mlflow["volumes"]]
    assert any(store.startswith(m + "/") for m in mounts), f"{store} is not on a volume of the mlflow service"
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/opt/mlops/" + str(AUTH_INI.relative_to(ROOT))


@pytest.mark.skipif(
    importlib.util.find_spec("flask_wtf") is None,
    reason="Flask-WTF is not in the lock, so `mlflow server --app-name basic-auth` cannot start in "
    "the image: add mlflow[auth] to pyproject.toml and run `make lock`",
)
def test_the_lock_runs_mlflow_basic_auth(monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(AUTH_INI))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    from mlflow.server.auth.config import read_auth_config

    config = read_auth_config()
    assert config.database_uri == "sqlite:////var/lib/mlflow-auth/basic_auth.db"
    assert config.admin_password is None  # only from MLFLOW_AUTH_ADMIN_PASSWORD, a required variable
