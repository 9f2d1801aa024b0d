"""The MLflow model registry: versions, aliases, alias history, rollback.

Aliases, not the deprecated stages: `@challenger` is the newest candidate, `@champion` is what
serves. Every alias move is appended to the registered model's history (tags named
`alias_history.<seq>`), so the registry alone answers "who moved champion, when, and why".
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml.config import is_url

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "alias_history."


class RegistryError(RuntimeError):
    """A registry action cannot be done; the message says why and what to do."""


class PromotionConflict(RegistryError):
    """@champion moved since the gate looked at it: re-run the gate against the new champion."""


def configure(settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient()


def ensure_experiment(settings, workflow: str) -> str:
    """One experiment per workflow, its artifacts under the configured artifact root."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(workflow)
    if exp is not None:
        return exp.experiment_id
    root = settings.mlflow_artifact_root
    # A URL root (s3://, mlflow-artifacts:/ of a proxying server) is used as is; a local folder
    # becomes an absolute file:// URI.
    location = f"{root.rstrip('/')}/{workflow}" if is_url(root) else (Path(root) / workflow).resolve().as_uri()
    try:
        return client.create_experiment(workflow, artifact_location=location, tags={"workflow": workflow})
    except MlflowException:  # created concurrently
        return client.get_experiment_by_name(workflow).experiment_id


def version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(client: MlflowClient, name: str, model_uri: str, run_id: str, *, idempotency_key: str,
             tags: dict[str, str]) -> str:
    """Create a model version once per idempotency key (an Airflow retry or re-run returns the same one).

    Two concurrent registrations may both create a version; afterwards both look again and the
    lowest version holding the key wins, the other deletes its own (never aliased) version.
    """
    query = f"name='{name}' and tags.idempotency_key='{idempotency_key}'"
    existing = client.search_model_versions(query)
    if existing:
        return str(min(existing, key=lambda v: int(v.version)).version)
    try:
        client.create_registered_model(name, tags={"workflow": tags.get("workflow", "")})
    except MlflowException:
        pass  # exists already
    mv = client.create_model_version(name, model_uri, run_id=run_id,
                                     tags={**tags, "idempotency_key": idempotency_key})
    winners = sorted(client.search_model_versions(query), key=lambda v: int(v.version))
    if winners and str(winners[0].version) != str(mv.version):
        client.delete_model_version(name, str(mv.version))
        return str(winners[0].version)
    return str(mv.version)


def _history(client: MlflowClient, name: str) -> list[dict]:
    tags = client.get_registered_model(name).tags
    entries = [json.loads(v) for k, v in tags.items() if k.startswith(HISTORY_PREFIX)]
    return sorted(entries, key=lambda e: e["seq"])


def alias_history(client: MlflowClient, name: str) -> list[dict]:
    try:
        return _history(client, name)
    except MlflowException:
        raise RegistryError(f"no registered model {name!r}; train a first version (mlops run) first.") from None


def move_alias(client: MlflowClient, name: str, alias: str, to_version: str, *, expected_from: str | None,
               why: str, who: str | None = None) -> dict:
    """Compare-and-set: move `alias` only if it still points at `expected_from`; record the move."""
    # MLflow returns versions as int or str depending on the store: compare them as strings.
    current = version_by_alias(client, name, alias)
    current_version = str(current.version) if current else None
    expected_from = None if expected_from is None else str(expected_from)
    to_version = str(to_version)
    if current_version != expected_from:
        raise PromotionConflict(
            f"@{alias} of {name} is now v{current_version}, not v{expected_from} as when the decision was made; "
            "re-run the gate against the new champion.")
    client.set_registered_model_alias(name, alias, to_version)
    seq = len(_history(client, name)) + 1
    entry = {"seq": seq, "alias": alias, "from": current_version, "to": to_version, "why": why,
             "who": who or os.environ.get("MLOPS_USER") or getpass.getuser(),  # the `user` setting
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{seq:06d}", json.dumps(entry))
    return entry


def rollback(client: MlflowClient, name: str, *, why: str, who: str | None = None) -> dict:
    """Move @champion back to the version it held before its last move."""
    moves = [e for e in _history(client, name) if e["alias"] == CHAMPION]
    if not moves or moves[-1]["from"] is None:
        raise RegistryError(f"{name}: @champion has no previous version to roll back to.")
    return move_alias(client, name, CHAMPION, moves[-1]["from"], expected_from=moves[-1]["to"],
                      why=f"rollback: {why}", who=who)


def download_weights(name: str, version: str) -> Path:
    """Local folder of a version's Hugging Face weights (safetensors), wherever the artifacts live."""
    from mlflow.models import Model

    root = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    artifacts = Model.load(str(root)).flavors["python_function"]["artifacts"]
    return root / artifacts["model_dir"]["path"]


def list_versions(client: MlflowClient, name: str) -> list[dict]:
    out = []
    # search results do not carry aliases on every store; the registered model does.
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    for v in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        out.append({"version": str(v.version), "aliases": sorted(aliases.get(str(v.version), [])), "run_id": v.run_id,
                    "created": datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds"),
                    "gate": v.tags.get("gate"), "macro_f1": v.tags.get("macro_f1"),
                    "dataset_version": v.tags.get("dataset_version")})
    return out
