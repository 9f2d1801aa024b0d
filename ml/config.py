"""Typed platform settings: embedded defaults under one state folder, `MLOPS_*` overrides.

Every field can be set through the environment as ``MLOPS_<FIELD NAME IN CAPITALS>``;
production points the same fields at PostgreSQL and S3. A value that does not parse fails
at start with a message naming the variable, never half-way through a run.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "MLOPS_"
# MLOPS_* variables that are not settings: `mlops run` hands them to the processes it starts
# (ml/train/progress.py), so a task must not refuse them as unknown settings.
NOT_SETTINGS = frozenset({"MLOPS_PROGRESS_FILE"})

# The repository root when installed editable (`pip install -e .`), which is how the
# Makefile installs. MLOPS_PROJECT_DIR overrides it for wheels installed elsewhere.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting is invalid; the message names the environment variable and the fix."""


# A scheme of two or more characters: s3://, http://, and MLflow's proxied "mlflow-artifacts:/",
# which has no "//". A single letter is a Windows drive ("C:\\"), i.e. a path.
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def is_url(value: str) -> bool:
    """True for a URL (a remote store), False for a local path."""
    return bool(_URL_SCHEME_RE.match(str(value)))


def _help(text: str, default=dataclasses.MISSING):
    if default is dataclasses.MISSING:
        return field(default=None, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Settings:
    project_dir: Path = _help("Repository root: holds dags/, plugins/, infra/.", _PACKAGE_PARENT)
    state_dir: Path = _help(
        "Every piece of local state lives under this folder (default PROJECT_DIR/.mlops)."
    )
    workflows_file: Path = _help(
        "The versioned declaration of workflows (default PROJECT_DIR/dags/workflows.yaml)."
    )
    price_book_file: Path = _help(
        "The versioned price book YAML (default PROJECT_DIR/infra/price_book.yaml)."
    )
    mlflow_tracking_uri: str = _help("MLflow tracking + registry URI (default SQLite in the state folder).")
    mlflow_artifact_root: str = _help(
        "Where new MLflow experiments store artifacts (default a local folder)."
    )
    ledger_url: str = _help("SQLAlchemy URL of the cost ledger (default SQLite in the state folder).")
    dvc_remote_url: str = _help("DVC remote for the versioned training data (a folder, or s3://bucket/path).")
    airflow_home: Path = _help(
        "AIRFLOW_HOME used by `mlops` when it runs Airflow (default STATE_DIR/airflow)."
    )
    device: str = _help("Training device: auto (CUDA when present), cuda or cpu.", "auto")
    torch_threads: int = _help("CPU threads for torch; 0 lets torch decide.", 0)
    seed: int = _help("Seed for data splits, initialisation and training order.", 42)
    git_sha: str = _help("Code version recorded on every model (default: read from git).", "")
    user: str = _help("Name recorded with approvals and rollbacks (default: the login name).", "")
    frontier_base_url: str = _help(
        "OpenAI-compatible base URL `mlops proxy` forwards to, e.g. https://api.openai.com/v1.", ""
    )
    # Never in repr(), logs or the call log; `mlops config` must mask it too.
    frontier_api_key: str = field(
        default="",
        repr=False,
        metadata={
            "help": "API key `mlops proxy` sends upstream as a Bearer token (keep it in .env, never in code)."
        },
    )

    def __post_init__(self):
        # Derived defaults are filled here so that overriding STATE_DIR moves everything.
        def setdefault(name, value):
            if getattr(self, name) in (None, ""):
                object.__setattr__(self, name, value)

        project = Path(self.project_dir)
        object.__setattr__(self, "project_dir", project)
        setdefault("state_dir", project / ".mlops")
        state = Path(self.state_dir).resolve()
        object.__setattr__(self, "state_dir", state)
        setdefault("workflows_file", project / "dags" / "workflows.yaml")
        setdefault("price_book_file", project / "infra" / "price_book.yaml")
        setdefault("mlflow_tracking_uri", f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
        setdefault("mlflow_artifact_root", str(state / "mlflow" / "artifacts"))
        setdefault("ledger_url", f"sqlite:///{state / 'ledger.db'}")
        setdefault("dvc_remote_url", str(state / "dvc-remote"))
        setdefault("airflow_home", state / "airflow")
        for name in ("workflows_file", "price_book_file", "airflow_home"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.device not in ("auto", "cuda", "cpu"):
            raise SettingsError(f"{ENV_PREFIX}DEVICE={self.device!r} is not one of auto, cuda, cpu.")
        if self.torch_threads < 0:
            raise SettingsError(
                f"{ENV_PREFIX}TORCH_THREADS={self.torch_threads} must be 0 (auto) or positive."
            )
        for name in ("mlflow_tracking_uri", "ledger_url"):
            if "://" not in getattr(self, name):
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()}={getattr(self, name)!r} is not a URL; "
                    "use e.g. sqlite:////abs/path.db or postgresql://user@host/db."
                )

    # Folders under the state folder; each stage owns one.
    @property
    def drop_dir(self) -> Path:
        return self.state_dir / "drop"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def quarantine_dir(self) -> Path:
        return self.state_dir / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def ensure_dirs(self) -> None:
        for d in (
            self.state_dir,
            self.drop_dir,
            self.data_dir,
            self.quarantine_dir,
            self.reports_dir,
            self.runs_dir,
            self.airflow_home,
        ):
            d.mkdir(parents=True, exist_ok=True)
        if self.mlflow_tracking_uri.startswith("sqlite:///"):
            Path(self.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        if not is_url(self.mlflow_artifact_root):
            Path(self.mlflow_artifact_root).mkdir(parents=True, exist_ok=True)


def state_note(settings: Settings, environ: dict[str, str] | None = None) -> str | None:
    """Why the state folder may not be the one meant, or None when it holds state.

    A mistyped MLOPS_STATE_DIR is not an error (a new state folder is how every install starts)
    but must not pass silently: a command reading it would show an empty registry or ledger as
    if that were the truth. "Holds state" means a dataset or an Airflow metadata DB is there.
    """
    env = os.environ if environ is None else environ
    state = settings.state_dir
    origin = (
        f"{ENV_PREFIX}STATE_DIR={env[ENV_PREFIX + 'STATE_DIR']}"
        if env.get(ENV_PREFIX + "STATE_DIR")
        else "the default"
    )
    if not state.exists():
        return (
            f"state folder {state} ({origin}) does not exist: this is a new, empty state. "
            f"If you meant an existing one, check {ENV_PREFIX}STATE_DIR."
        )
    data = settings.data_dir
    has_data = data.is_dir() and next((p for p in data.rglob("*") if p.is_file()), None) is not None
    if not has_data and not (settings.airflow_home / "airflow.db").exists():
        return (
            f"state folder {state} ({origin}) holds no dataset and no Airflow run yet (new or empty). "
            f"If you expected data here, check {ENV_PREFIX}STATE_DIR."
        )
    return None


def _parse(name: str, raw: str, typ):
    var = ENV_PREFIX + name.upper()
    try:
        if typ in (int, "int"):
            return int(raw)
        if typ in (Path, "Path"):
            if not raw.strip():
                raise ValueError("empty path")
            return Path(raw).expanduser()
        return raw
    except ValueError as exc:
        raise SettingsError(
            f"{var}={raw!r} is invalid ({exc}); expected {getattr(typ, '__name__', typ)}."
        ) from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from embedded defaults overridden by MLOPS_* variables."""
    env = os.environ if environ is None else environ
    known = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = sorted(
        k
        for k in env
        if k.startswith(ENV_PREFIX) and k not in NOT_SETTINGS and k[len(ENV_PREFIX) :].lower() not in known
    )
    if unknown:
        raise SettingsError(
            f"Unknown setting {unknown[0]}; known: {', '.join(ENV_PREFIX + n.upper() for n in known)}."
        )
    values = {}
    for name, f in known.items():
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = _parse(name, env[var], f.type)
    return Settings(**values)


def describe() -> list[tuple[str, str]]:
    """(variable, help) for every setting, for `mlops config` and the README."""
    return [(ENV_PREFIX + f.name.upper(), f.metadata["help"]) for f in dataclasses.fields(Settings)]


def settings_env(settings: Settings) -> dict[str, str]:
    """The MLOPS_* variables that make `load_settings()` in a child process return `settings`."""
    return {ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name)) for f in dataclasses.fields(Settings)}
