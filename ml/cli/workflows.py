"""`mlops workflows`: list the declared workflows, show one's every setting, or declare one from a data file.

`init` is the path a new user takes with their own labelled file: it reads the labels from the
file (any text: spaces, `?`, `/`, accents), writes them quoted into the workflows file with the
data's own labels as the teacher, and checks the whole file loads before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import yaml

from ml.cli.common import add_json, emit, table
from ml.config import load_settings
from ml.workflows import NAME_RE, Workflow, WorkflowError, label_problem, load_workflows

MIN_LABELS = 2


def cmd_list(args) -> int:
    settings = load_settings()
    workflows = load_workflows(settings.workflows_file)
    rows = [
        {
            "name": w.name,
            "teacher": f"{w.teacher.kind}:{w.teacher.model}",
            "base_model": w.base_model,
            "retrain": " + ".join(
                x for x in (w.schedule.cron, "new data" if w.schedule.on_new_data else None) if x
            ),
            "sla_p99_ms": w.latency_sla_p99_ms,
            "approval": w.gate.approval,
        }
        for w in workflows.values()
    ]
    emit(args, rows, f"{settings.workflows_file}\n" + table(rows, list(rows[0])))
    return 0


def settings_rows(obj, prefix: str = "") -> list[dict]:
    """Every setting of a workflow, dotted key → value and help, sections expanded."""
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += settings_rows(value, f"{prefix}{f.name}.")
        else:
            shown = list(value) if isinstance(value, tuple) else value
            rows.append({"key": prefix + f.name, "value": shown, "help": f.metadata.get("help", "")})
    return rows


def cmd_show(args) -> int:
    settings = load_settings()
    workflows = load_workflows(settings.workflows_file)
    if args.name not in workflows:
        raise LookupError(
            f"unknown workflow {args.name!r}; {settings.workflows_file} declares: {', '.join(workflows)}"
        )
    wf = workflows[args.name]
    metrics = {rule.name: rule.to_dict() for rule in wf.gate.judged_metrics}
    rows = settings_rows(wf)
    for row in rows:
        if row["key"] == "gate.metrics":  # what the gate judges, declared or the task's default
            row["value"] = metrics
    width = max(len(r["key"]) for r in rows)
    lines = [
        f"{args.name} in {settings.workflows_file}",
        f"  task: {wf.task}" + (f" (fields: {', '.join(wf.fields)})" if wf.fields else ""),
        "  gate judges: "
        + "; ".join(_describe_rule(rule) for rule in wf.gate.judged_metrics)
        + f"; p99 latency <= {wf.latency_sla_p99_ms:g} ms; cost per 1k calls <= the frontier's (where priced)",
    ]
    for r in rows:
        value = json.dumps(r["value"], ensure_ascii=False, default=str)
        lines.append(
            f"  {r['key']:<{width}}  {value}" + (f"\n  {'':<{width}}    {r['help']}" if r["help"] else "")
        )
    emit(
        args,
        {"name": args.name, "task": wf.task, "gate_metrics": metrics, "settings": rows},
        "\n".join(lines),
    )
    return 0


def _describe_rule(rule) -> str:
    what = f"worst {rule.what or rule.name}" if rule.per_part else rule.what or rule.name
    parts = [f">= {rule.min:g}"] if rule.min is not None else []
    if rule.max_drop is not None:
        parts.append(f"at most {rule.max_drop:g} below the champion's")
    return f"{rule.name} ({what}) " + ", ".join(parts)


def _quoted(text: str) -> str:
    # A JSON string is a YAML double-quoted scalar: yes, no, 1.10, "a: b", "#x" all stay text.
    return json.dumps(text, ensure_ascii=False)


def workflow_entry(
    name: str, labels: list[str], text_col: str, label_col: str, source: Path, n_rows: int
) -> str:
    """The YAML text of one workflow under `workflows:`, every label quoted."""
    label_lines = "".join(f"      - {_quoted(label)}\n" for label in labels)
    return (
        f"\n  {name}:\n"
        f"    description: {_quoted(f'from {source.name}: {n_rows} rows, {len(labels)} labels')}\n"
        f"    labels:\n{label_lines}"
        f"    text_column: {_quoted(text_col)}\n"
        f"    label_column: {_quoted(label_col)}\n"
        "    teacher: {kind: labels}   # the labels in the file are the targets (one-hot)\n"
        "    # Every other setting has a default; see them with `mlops workflows show "
        f"{name}`, e.g.\n"
        "    # training: {max_epochs: 10, patience: 2, student_layers: 3}\n"
    )


def cmd_init(args) -> int:
    from ml.data.ingest import read_batch

    settings = load_settings()
    path = Path(settings.workflows_file)
    if not NAME_RE.match(args.name):
        raise WorkflowError(
            f"workflow name {args.name!r} must be lower_snake_case, 2-41 characters, e.g. my_intents."
        )
    # Names only: a file with no workflow yet (just `workflows:`) is where a first user starts;
    # the whole file is checked after the entry is added.
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{path}: not valid YAML ({exc}); fix it before adding a workflow.") from None
    existing = (doc or {}).get("workflows") or {} if isinstance(doc, dict) else {}
    if args.name in existing:
        raise WorkflowError(f"{path} already declares {args.name!r}; choose another name or edit that entry.")
    source = Path(args.source)
    if not source.is_file():
        raise FileNotFoundError(
            f"{source}: no such file; give a labelled CSV, Parquet or JSONL file with --from."
        )
    batch = read_batch(source, text_col=args.text_col, label_col=args.label_col, mask=False)
    found = batch.frame["label"].dropna()
    labels = sorted({str(v) for v in found})
    for label in labels:
        problem = label_problem(label)
        if problem:
            raise WorkflowError(
                f"{source.name}: label {label!r} in column {args.label_col!r} {problem}; "
                "fix it in the file, then run init again."
            )
    if len(labels) < MIN_LABELS:
        raise WorkflowError(
            f"{source.name}: column {args.label_col!r} holds {len(labels)} distinct label(s); a "
            f"classifier needs at least {MIN_LABELS}. Is --label-col the right column?"
        )
    entry = workflow_entry(args.name, labels, args.text_col, args.label_col, source, len(batch.frame))
    before = path.read_text(encoding="utf-8") if path.is_file() else "workflows:\n"
    text = before + ("" if before.endswith("\n") else "\n") + entry
    # Written beside the file, loaded whole, then renamed over it: a file that would not load
    # (or an entry YAML placed under another key) is never left behind.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        declared = load_workflows(tmp)
        if args.name not in declared or list(declared[args.name].labels) != labels:
            raise WorkflowError(
                f"{path}: the appended entry does not load as workflow {args.name!r} (the file may "
                "end with another top-level key); add it under `workflows:` by hand:\n" + entry
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    wf: Workflow = declared[args.name]
    steps = [
        f"mlops data import {source} -w {wf.name}",
        f"mlops data import TEST_FILE -w {wf.name} --as eval   # a frozen, held-out test set",
        f"mlops run -w {wf.name}",
    ]
    emit(
        args,
        {"workflow": wf.name, "file": str(path), "labels": labels, "rows": len(batch.frame), "next": steps},
        f"declared workflow {wf.name!r} in {path}: {len(labels)} labels from {source.name} "
        f"({len(batch.frame)} rows), teacher: the file's labels.\nNext:\n  " + "\n  ".join(steps),
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "workflows", help="list the declared workflows; show one; declare one from a data file"
    )
    add_json(p)
    p.set_defaults(func=cmd_list)
    wsub = p.add_subparsers(dest="workflows_command", metavar="ACTION")

    q = wsub.add_parser("list", help="the declared workflows and their schedules (the default)")
    add_json(q)
    q.set_defaults(func=cmd_list)

    q = wsub.add_parser("show", help="every setting of one workflow, its value and what it means")
    q.add_argument("name", help="the workflow's name")
    add_json(q)
    q.set_defaults(func=cmd_show)

    q = wsub.add_parser(
        "init", help="declare a workflow from a labelled file (labels read from it, quoted safely)"
    )
    q.add_argument("name", help="the new workflow's name, lower_snake_case")
    q.add_argument(
        "--from", dest="source", required=True, metavar="FILE", help="a labelled CSV, Parquet or JSONL file"
    )
    q.add_argument("--text-col", default="text", help="the column holding the text")
    q.add_argument("--label-col", default="label", help="the column holding the label")
    add_json(q)
    q.set_defaults(func=cmd_init)
