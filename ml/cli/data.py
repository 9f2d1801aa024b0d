"""Data engineers' data commands: import a file, list dataset versions, inspect the quarantine."""

from __future__ import annotations

import shutil
from pathlib import Path

from ml.cli.common import add_json, add_workflow, emit, settings_and_workflow, table


def cmd_import(args) -> int:
    from ml.data.ingest import read_batch
    from ml.pipeline.ingest_validate import batch_reader, drop_dir_for

    settings, wf = settings_and_workflow(args)
    src = Path(args.path)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    text_col, label_col = args.text_col or wf.text_column, args.label_col or wf.label_column
    # fails early, copies nothing
    batch = read_batch(src, text_col=text_col, label_col=label_col, mask=False, curate=batch_reader(wf))
    drop = drop_dir_for(settings, wf) / ("eval" if args.role == "eval" else "")
    if batch.kind == "call_log" or (text_col, label_col) == (wf.text_column, wf.label_column):
        target = drop / src.name
        shutil.copyfile(src, target)  # raw bytes, so the archive keeps exactly what was given
    else:  # other column names: store it under the workflow's names, the original stays where it is
        target = drop / f"{src.stem}.parquet"
        batch.frame.rename(columns={"text": wf.text_column, "label": wf.label_column}).to_parquet(
            target, index=False
        )
    result = {
        "workflow": wf.name,
        "dropped": str(target),
        "kind": batch.kind,
        "rows": len(batch.frame),
        "role": args.role,
    }
    emit(
        args,
        result,
        f"dropped {target} ({batch.kind}, {len(batch.frame)} rows) for {wf.name}; "
        f"it is validated by the next ingest_validate__{wf.name} run (now: mlops run --only ingest_validate -w {wf.name})",
    )
    return 0


def cmd_versions(args) -> int:
    from ml.pipeline.ingest_validate import store_for

    settings, wf = settings_and_workflow(args)
    rows = [
        {
            "version": v["version"][:12],
            "role": v["role"],
            "rows": v["rows"],
            "batch": v["batch"],
            "accepted_at": v["accepted_at"][:19],
        }
        for v in store_for(settings, wf).versions()
    ]
    emit(
        args,
        store_for(settings, wf).versions(),
        table(rows, ["version", "role", "rows", "batch", "accepted_at"]),
    )
    return 0


def cmd_checkout(args) -> int:
    from ml.pipeline.ingest_validate import store_for

    settings, wf = settings_and_workflow(args)
    result = store_for(settings, wf).checkout(args.version, Path(args.out), eval_version=args.eval)
    emit(
        args,
        result,
        "\n".join(
            f"restored {f['path']} ({role} version {f['version'][:12]}, {f['rows']} rows)"
            for role, f in result["files"].items()
        ),
    )
    return 0


def cmd_quarantine(args) -> int:
    from ml.validation import quarantine as q

    settings, wf = settings_and_workflow(args)
    qdir = settings.quarantine_dir / wf.name
    if args.action == "list":
        items = q.list_quarantined(qdir)
        rows = [_brief(i) for i in items]
        emit(args, rows, table(rows, ["id", "file", "reason"]))
    elif args.action == "show":
        item = q.show(qdir, _need_id(args))
        emit(args, _full(item), "\n".join(f"{k}: {v}" for k, v in _full(item).items()))
    else:
        from ml.pipeline.ingest_validate import drop_dir_for

        target = q.release(qdir, _need_id(args), drop_dir_for(settings, wf))
        emit(args, {"released": str(target)}, f"released to {target}; the next ingest run validates it again")
    return 0


def _need_id(args) -> str:
    if not args.id:
        raise ValueError(
            f"`mlops data quarantine {args.action}` needs a batch ID; see `mlops data quarantine list"
            f"{' -w ' + args.workflow if args.workflow else ''}`"
        )
    return args.id


def _brief(item) -> dict:
    d = item if isinstance(item, dict) else vars(item)
    meta = d.get("meta") or d
    return {
        "id": d.get("id") or d.get("batch_id"),
        "file": Path(str(meta.get("original_path", meta.get("file", "")))).name,
        "reason": str(meta.get("reason", "")).splitlines()[0][:90] if meta.get("reason") else "",
    }


def _full(item) -> dict:
    d = item if isinstance(item, dict) else vars(item)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def register(sub) -> None:
    data = sub.add_parser(
        "data", help="import data, list dataset versions, inspect and release quarantined batches"
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    p = dsub.add_parser("import", help="check a file and drop it for the next ingest run")
    p.add_argument("path", help="a call log (JSONL) or labelled CSV / Parquet / JSONL file")
    p.add_argument("--text-col", help="name of the text column (default: the workflow's text_column)")
    p.add_argument("--label-col", help="name of the label column (default: the workflow's label_column)")
    p.add_argument(
        "--as",
        dest="role",
        choices=("train", "eval"),
        default="train",
        help="train (default) or eval: gold labels for the frozen evaluation set",
    )
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_import)

    p = dsub.add_parser("versions", help="every accepted batch and the DVC version of the dataset after it")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_versions)

    p = dsub.add_parser(
        "checkout", help="restore a dataset version's exact train and eval files from the DVC remote"
    )
    p.add_argument(
        "version", help="a dataset version (md5 or its first 6+ characters; a model's dataset_version tag)"
    )
    p.add_argument(
        "--out", required=True, help="folder to write train.parquet and eval.parquet into (never overwritten)"
    )
    p.add_argument(
        "--eval", help="the evaluation set's version (default: the frozen one in the dataset's log)"
    )
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_checkout)

    p = dsub.add_parser(
        "quarantine", help="list | show ID | release ID: batches the validation gate rejected"
    )
    p.add_argument("action", choices=("list", "show", "release"))
    p.add_argument("id", nargs="?", help="quarantined batch ID (from `list`)")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_quarantine)
