"""Model owners' commands: list versions, show one with its gate decision, approve, reject, roll back."""

from __future__ import annotations

import json

from ml.cli.common import add_json, add_workflow, emit, settings_and_workflow, table


def _client(args):
    from ml import registry

    settings, wf = settings_and_workflow(args)
    return registry, registry.configure(settings), wf


def cmd_list(args) -> int:
    registry, client, wf = _client(args)
    rows = registry.list_versions(client, wf.model_name)
    shown = [{**r, "aliases": ",".join("@" + a for a in r["aliases"])} for r in rows]
    emit(args, rows, f"{wf.model_name}\n" + table(shown, ["version", "aliases", "gate", "macro_f1", "dataset_version", "created"]))
    return 0


def cmd_show(args) -> int:
    registry, client, wf = _client(args)
    v = client.get_model_version(wf.model_name, str(args.version))
    decision = json.loads(v.tags.get("gate_decision", "{}"))
    info = {"model": wf.model_name, "version": str(v.version), "aliases": list(v.aliases), "run_id": v.run_id,
            "source": v.source, "tags": {k: val for k, val in v.tags.items() if k != "gate_decision"},
            "gate": decision}
    lines = [f"{wf.model_name} v{v.version}  {' '.join('@' + a for a in v.aliases)}",
             *(f"  {k}: {val}" for k, val in sorted(info["tags"].items())),
             f"  gate: {'PASSED' if decision.get('passed') else 'FAILED'}",
             *(f"    {'ok  ' if c['passed'] else 'FAIL'} {c['detail']}" for c in decision.get("checks", []))]
    emit(args, info, "\n".join(lines))
    return 0


def cmd_history(args) -> int:
    registry, client, wf = _client(args)
    rows = registry.alias_history(client, wf.model_name)
    emit(args, rows, table(rows, ["seq", "at", "alias", "from", "to", "who", "why"]))
    return 0


def cmd_approve(args) -> int:
    registry, client, wf = _client(args)
    v = client.get_model_version(wf.model_name, str(args.version))
    if v.tags.get("gate") != "passed" and not args.override_gate:
        raise ValueError(f"v{v.version} failed its gate ({v.tags.get('gate')}); see `mlops models show {v.version}`; "
                         "pass --override-gate to promote it anyway (recorded)")
    current = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    entry = registry.move_alias(client, wf.model_name, registry.CHAMPION, v.version,
                                expected_from=str(current.version) if current else None,
                                why=f"approved: {args.reason}" + (" (gate overridden)" if args.override_gate else ""),
                                who=args.who)
    client.set_model_version_tag(wf.model_name, v.version, "approval", json.dumps(
        {"decision": "approved", "who": entry["who"], "why": args.reason, "at": entry["at"]}))
    emit(args, entry, f"@champion of {wf.model_name}: v{entry['from']} → v{entry['to']} ({entry['who']}: {args.reason})")
    return 0


def cmd_reject(args) -> int:
    registry, client, wf = _client(args)
    v = client.get_model_version(wf.model_name, str(args.version))
    import getpass
    from datetime import datetime, timezone

    record = {"decision": "rejected", "who": args.who or getpass.getuser(), "why": args.reason,
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    client.set_model_version_tag(wf.model_name, v.version, "approval", json.dumps(record))
    emit(args, record, f"v{v.version} rejected by {record['who']}: {args.reason}")
    return 0


def cmd_rollback(args) -> int:
    registry, client, wf = _client(args)
    entry = registry.rollback(client, wf.model_name, why=args.reason, who=args.who)
    emit(args, entry, f"@champion of {wf.model_name} rolled back: v{entry['from']} → v{entry['to']}")
    return 0


def register(sub) -> None:
    models = sub.add_parser("models", help="list, show, approve, reject and roll back model versions (MLflow registry)")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for name, func, helptext in (("list", cmd_list, "every version with its aliases and gate result"),
                                 ("history", cmd_history, "every alias move: who, when, from, to, why")):
        p = msub.add_parser(name, help=helptext)
        add_workflow(p)
        add_json(p)
        p.set_defaults(func=func)
    p = msub.add_parser("show", help="one version: lineage tags and the gate decision with its numbers")
    p.add_argument("version", type=int)
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_show)
    for name, func, helptext in (("approve", cmd_approve, "promote VERSION to @champion (a model owner's decision)"),
                                 ("reject", cmd_reject, "record that VERSION must not serve")):
        p = msub.add_parser(name, help=helptext)
        p.add_argument("version", type=int)
        p.add_argument("--reason", required=True, help="why; recorded with the decision")
        p.add_argument("--who", help="who decides (default: $MLOPS_USER or the login name)")
        if name == "approve":
            p.add_argument("--override-gate", action="store_true", help="promote even though the gate failed")
        add_workflow(p)
        add_json(p)
        p.set_defaults(func=func)
    p = msub.add_parser("rollback", help="move @champion back to the version it held before")
    p.add_argument("--reason", required=True, help="why; recorded in the alias history")
    p.add_argument("--who", help="who decides (default: $MLOPS_USER or the login name)")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_rollback)
