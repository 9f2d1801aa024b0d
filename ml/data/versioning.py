"""The versioned training data of one workflow: accepted batches, tracked with DVC.

`<data_dir>/<workflow>/` is a DVC repository (no git of its own: the state folder is not
source) holding `train.parquet` (every accepted batch, merged) and `eval.parquet` (the frozen
evaluation set). Each accept writes a new file, `dvc add`s and pushes it to the remote, then
appends one line to `versions.jsonl`, which is the commit point: a crash before it leaves the
batch unrecorded and a retry accepts it again (merging is idempotent).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from ml.data import contract
from ml.data.ingest import Batch

ROLES = ("train", "eval")


class DatasetError(ValueError):
    """The dataset cannot take this batch, or has no data yet; the message says what to do."""


class DatasetStore:
    def __init__(self, root: Path, remote_url: str):
        self.root = Path(root)
        self.remote_url = remote_url
        self.log_path = self.root / "versions.jsonl"

    def path(self, role: str) -> Path:
        return self.root / f"{role}.parquet"

    @contextlib.contextmanager
    def _locked(self):
        # Mapped ingest tasks may accept batches in parallel; one writer at a time.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _repo(self):
        from dvc.repo import Repo  # heavy import, only when data is written

        if not (self.root / ".dvc").is_dir():
            Repo.init(str(self.root), no_scm=True)
        repo = Repo(str(self.root))
        with repo.config.edit() as conf:
            conf["remote"]["storage"] = {"url": self.remote_url}
            conf["core"]["remote"] = "storage"
        return repo

    def versions(self, role: str | None = None) -> list[dict]:
        if not self.log_path.exists():
            return []
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if role is None or r["role"] == role]

    def current(self, role: str = "train") -> dict | None:
        versions = self.versions(role)
        return versions[-1] if versions else None

    def accepted_batch(self, sha256: str) -> dict | None:
        return next((v for v in self.versions() if v["batch_sha256"] == sha256), None)

    def load(self, role: str = "train") -> pd.DataFrame:
        if self.current(role) is None:
            raise DatasetError(f"{self.root.name}: no accepted {role} data yet; drop a batch and run ingest "
                               f"(`mlops data import PATH{' --as eval' if role == 'eval' else ''}`).")
        return pd.read_parquet(self.path(role))

    def accept(self, batch: Batch, role: str = "train", extra: dict | None = None) -> dict:
        """Merge the batch into the role's file, version it with DVC, record it. Idempotent per batch."""
        if role not in ROLES:
            raise DatasetError(f"role {role!r} is not one of {ROLES}.")
        with self._locked():
            seen = self.accepted_batch(batch.sha256)
            if seen is not None:
                return {**seen, "already_accepted": True}
            if role == "eval" and self.current("eval") is not None:
                raise DatasetError(
                    f"{self.root.name}: the evaluation set is frozen (version {self.current('eval')['version'][:12]}) "
                    "so every model is compared on the same examples; drop gold data as a training batch instead.")
            target = self.path(role)
            frame = batch.frame[list(contract.COLUMNS)]
            if target.exists():
                frame = pd.concat([pd.read_parquet(target), frame], ignore_index=True)
                frame = frame.drop_duplicates(subset=[contract.TEXT, contract.LABEL], keep="first")
            tmp = target.with_suffix(".parquet.tmp")
            frame.reset_index(drop=True).to_parquet(tmp, index=False)
            os.replace(tmp, target)

            repo = self._repo()
            repo.add(str(target))
            repo.push()
            md5 = yaml.safe_load(target.with_suffix(".parquet.dvc").read_text())["outs"][0]["md5"]
            record = {
                "version": md5, "role": role, "rows": len(frame), "batch": batch.path.name,
                "batch_sha256": batch.sha256, "batch_rows": len(batch.frame), "kind": batch.kind,
                "stats": batch.stats, "accepted_at": datetime.now(timezone.utc).isoformat(), **(extra or {}),
            }
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return record
