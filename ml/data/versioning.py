"""The versioned training data of one workflow: accepted batches, tracked with DVC.

`<data_dir>/<workflow>/` is a DVC repository (no git of its own: the state folder is not
source) holding `train.parquet` (every accepted batch, merged) and `eval.parquet` (the frozen
evaluation set). Each accept writes a new file, `dvc add`s and pushes it to the remote, then
appends one line to `versions.jsonl`, which is the commit point: a crash before it leaves the
batch unrecorded and a retry accepts it again (merging is idempotent).

A version is the DVC md5 of the file, so the remote alone can bring it back: `checkout`
restores a training version (the `dataset_version` tag of a model) and the frozen evaluation
set beside it from the remote, local or S3, even when the data folder is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from ml.data import contract
from ml.data.ingest import Batch

ROLES = ("train", "eval")
MD5_RE = re.compile(r"^[0-9a-f]{32}$")
MIN_PREFIX = 6  # a shorter prefix of an md5 names too many versions to be safe
REFUSED_FILE = "refused.parquet"  # rows curation refused (a task's teacher errors), beside the data


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
            raise DatasetError(
                f"{self.root.name}: no accepted {role} data yet; drop a batch and run ingest "
                f"(`mlops data import PATH{' --as eval' if role == 'eval' else ''}`)."
            )
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
                    "so every model is compared on the same examples; drop gold data as a training batch instead."
                )
            target = self.path(role)
            frame = batch.frame[list(batch.columns)]
            if target.exists():
                frame = pd.concat([pd.read_parquet(target), frame], ignore_index=True)
                frame = frame.drop_duplicates(subset=list(batch.key), keep="first")
            tmp = target.with_suffix(".parquet.tmp")
            frame.reset_index(drop=True).to_parquet(tmp, index=False)
            os.replace(tmp, target)
            refused = self._keep_refused(batch, role)

            repo = self._repo()
            repo.add(str(target))
            repo.push()
            md5 = yaml.safe_load(target.with_suffix(".parquet.dvc").read_text())["outs"][0]["md5"]
            record = {
                "version": md5,
                "role": role,
                "rows": len(frame),
                "batch": batch.path.name,
                "batch_sha256": batch.sha256,
                "batch_rows": len(batch.frame),
                "kind": batch.kind,
                "stats": batch.stats,
                **({"refused_rows": refused} if refused is not None else {}),
                "accepted_at": datetime.now(timezone.utc).isoformat(),
                **(extra or {}),
            }
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return record

    def refused(self) -> pd.DataFrame:
        """Every row curation refused in accepted batches, with batch, role, reason and detail."""
        path = self.root / REFUSED_FILE
        return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["batch", "role", "reason"])

    def _keep_refused(self, batch: Batch, role: str) -> int | None:
        # Refused rows are never trained on and never lost: one file beside the data, a retry of
        # the same batch replaces its own rows. Written before versions.jsonl, the commit point.
        if batch.refused is None:
            return None
        path = self.root / REFUSED_FILE
        rows = batch.refused.assign(batch=batch.path.name, batch_sha256=batch.sha256, role=role)
        if path.exists():
            kept = pd.read_parquet(path)
            rows = pd.concat([kept[kept["batch_sha256"] != batch.sha256], rows], ignore_index=True)
        tmp = path.with_suffix(".parquet.tmp")
        rows.reset_index(drop=True).to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return len(batch.refused)

    def source_url(self, version: str) -> str:
        """Where a version's bytes live: its object on the DVC remote (a path, or an s3:// URL)."""
        return f"{self.remote_url.rstrip('/')}/files/md5/{version[:2]}/{version[2:]}"

    def find(self, version: str) -> dict | None:
        """The record of the version whose md5 is `version` or starts with it (at least 6 characters).

        None when the log does not know it; raises DatasetError for an ambiguous or short prefix.
        """
        version = version.strip().lower()
        if len(version) < MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", version):
            raise DatasetError(
                f"{version!r} is not a dataset version: give its md5 or the first {MIN_PREFIX}+ of it "
                "(`mlops data versions` lists them; a model's dataset_version tag holds one)."
            )
        matches = {r["version"]: r for r in self.versions() if r["version"].startswith(version)}
        if len(matches) > 1:
            raise DatasetError(
                f"{version!r} matches {len(matches)} versions ({', '.join(v[:12] for v in matches)}); "
                "give more of the md5."
            )
        return next(iter(matches.values()), None)

    def checkout(self, version: str, out_dir: Path, *, eval_version: str | None = None) -> dict:
        """Restore a version's exact files from the DVC remote into `out_dir` (`train.parquet`, `eval.parquet`).

        `version` is a training version (a model's `dataset_version` tag) or an evaluation one.
        With a training version the frozen evaluation set comes too: `eval_version`, else the
        one the log records. A full md5 the log does not know (the data folder is gone) is taken
        as a training version. Files already in `out_dir` are never overwritten; the files land
        only once all of them were fetched and their md5 checked.
        """
        record = self.find(version)
        if record is None and not MD5_RE.match(version.strip().lower()):
            raise DatasetError(
                f"{self.root.name}: no dataset version starts with {version!r} here; with the data "
                "folder gone, give the full md5 (a model's dataset_version tag)."
            )
        role = record["role"] if record else "train"
        wanted = {role: record["version"] if record else version.strip().lower()}
        if role == "train":
            if eval_version is not None:
                found = self.find(eval_version)
                if found is not None and found["role"] != "eval":
                    raise DatasetError(
                        f"{eval_version!r} is a {found['role']} version, not an evaluation set."
                    )
                wanted["eval"] = found["version"] if found else eval_version.strip().lower()
            elif self.current("eval") is not None:
                wanted["eval"] = self.current("eval")["version"]
        bad = [v for v in wanted.values() if not MD5_RE.match(v)]
        if bad:
            raise DatasetError(
                f"{bad[0]!r} is not a full md5; give all 32 characters (`mlops data versions --json`)."
            )
        out_dir = Path(out_dir)
        clash = [out_dir / f"{r}.parquet" for r in wanted if (out_dir / f"{r}.parquet").exists()]
        if clash:
            raise DatasetError(
                f"{clash[0]} exists; remove it or choose another --out (nothing is overwritten)."
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {}
        with tempfile.TemporaryDirectory(prefix=".checkout-", dir=out_dir) as tmp:
            from dvc.exceptions import DvcException
            from dvc.repo import Repo

            repo = Repo.init(tmp, no_scm=True)
            with repo.config.edit() as conf:
                conf["remote"]["storage"] = {"url": self.remote_url}
                conf["core"]["remote"] = "storage"
            for r, md5 in wanted.items():
                out = {"md5": md5, "path": f"{r}.parquet", "hash": "md5"}
                Path(tmp, f"{r}.parquet.dvc").write_text(yaml.safe_dump({"outs": [out]}))
            try:
                Repo(tmp).pull(targets=[str(Path(tmp, f"{r}.parquet.dvc")) for r in wanted])
            except DvcException as exc:
                raise DatasetError(
                    f"version(s) {', '.join(v[:12] for v in wanted.values())} could not be fetched "
                    f"from the DVC remote {self.remote_url}: not there, or the remote cannot be read "
                    f"({type(exc).__name__}); check MLOPS_DVC_REMOTE_URL and the md5."
                ) from None
            for r, md5 in wanted.items():
                got = Path(tmp, f"{r}.parquet")
                if _md5(got) != md5:  # DVC checks too; a file handed over must be the version asked for
                    raise DatasetError(
                        f"{r}.parquet fetched for {md5[:12]} has md5 {_md5(got)[:12]}; the remote "
                        f"{self.remote_url} holds a damaged copy."
                    )
                files[r] = {
                    "version": md5,
                    "path": str(out_dir / f"{r}.parquet"),
                    "rows": len(pd.read_parquet(got, columns=[contract.TEXT])),
                }
            for r in wanted:
                shutil.move(str(Path(tmp, f"{r}.parquet")), str(out_dir / f"{r}.parquet"))
        return {"workflow": self.root.name, "version": wanted[role], "role": role, "files": files}


def _md5(path: Path) -> str:
    import hashlib

    h = hashlib.md5()  # noqa: S324 - DVC's content address, not a security hash
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
