"""Model owners' commands: list versions, show one with its gate decision, approve, reject, roll back."""

from __future__ import annotations

import json
import os

from ml.cli.common import add_json, add_workflow, emit, heavy_imports, settings_and_workflow, table


def _client(args):
    settings, wf = settings_and_workflow(args)
    with heavy_imports():
        from ml import registry

        return registry, registry.configure(settings), wf


def _version(client, wf, version):
    """The model version, or a LookupError naming the versions there are."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(wf.model_name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    from ml import registry

    try:
        known = [r["version"] for r in registry.list_versions(client, wf.model_name)]
    except MlflowException:
        known = []
    raise LookupError(
        f"{wf.model_name} has no version {version}; versions: {', '.join(known) or 'none yet'} "
        "(see `mlops models list`)."
    )


def _json_tag(tags: dict, key: str) -> dict | None:
    return json.loads(tags[key]) if tags.get(key) else None


def _approval_text(approval: dict | None, wait: dict | None, registry) -> str:
    if approval:
        return f"{approval['decision']} by {approval['who']} at {approval['at']}: {approval['why']}"
    if registry.is_waiting(wait):
        return f"waiting for a model owner (DAG run {wait['run_key']}) until {wait['deadline']}"
    if wait:
        return f"not decided; the DAG run stopped waiting ({wait.get('outcome')}, {wait.get('ended')})"
    return ""


def cmd_list(args) -> int:
    registry, client, wf = _client(args)
    rows = registry.list_versions(client, wf.model_name, wf.headline_metric)
    shown = [
        {
            **r,
            "aliases": ",".join("@" + a for a in r["aliases"]),
            "approval": (r["approval"] or {}).get("decision")
            or ("waiting" if registry.is_waiting(r["approval_wait"]) else ""),
        }
        for r in rows
    ]
    emit(
        args,
        rows,
        f"{wf.model_name}\n"
        + table(
            shown,
            [
                "version",
                "aliases",
                "gate",
                "approval",
                wf.headline_metric,
                "latency_p99_ms",
                "dataset_version",
                "created",
            ],
        ),
    )
    return 0


def _evaluation(run_id: str | None) -> dict | None:
    """The evaluation.json evaluate_and_gate logged on the training run: every number the gate saw."""
    if not run_id:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no bar on stderr
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation.json")
    except (MlflowException, OSError):
        return None  # a version registered outside the distill DAG
    return json.loads(open(path, encoding="utf-8").read())


def _number(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)  # a NaN is shown as what it is: the gate failed on it
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        # Costs per call are fractions of a cent: significant digits, not four decimals of zero.
        return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"
    return str(value)


def _numbers_lines(evaluation: dict) -> list[str]:
    """Challenger and champion side by side: every scalar, then the F1 of every class."""
    challenger, champion = evaluation.get("challenger") or {}, evaluation.get("champion") or {}
    versus = evaluation.get("decision", {}).get("champion_version")
    head = f"champion v{versus}" if champion else "champion"
    lines = [
        f"  numbers on the frozen eval set {evaluation.get('eval_version', '?')}:",
        f"    {'':26} {'challenger':>12} {head:>12}",
    ]
    scalars = [k for k, v in challenger.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for key in scalars:
        lines.append(f"    {key:26} {_number(challenger.get(key)):>12} {_number(champion.get(key)):>12}")
    for label, f1 in (challenger.get("per_class_f1") or {}).items():
        lines.append(
            f"    {'F1 ' + label:26} {_number(f1):>12} {_number((champion.get('per_class_f1') or {}).get(label)):>12}"
        )
    for key, value in (challenger.get("int8") or {}).items():
        lines.append(f"    {'int8 ' + key:26} {_number(value):>12}")
    if evaluation.get("frontier_cost_per_1k_calls_usd") is not None:
        lines.append(
            f"    {'frontier cost_per_1k_usd':26} {_number(evaluation['frontier_cost_per_1k_calls_usd']):>12}"
        )
    return lines


def cmd_show(args) -> int:
    registry, client, wf = _client(args)
    v = _version(client, wf, args.version)
    hidden = ("gate_decision", registry.APPROVAL_TAG, registry.WAIT_TAG)
    decision = _json_tag(v.tags, "gate_decision") or {}
    approval, wait = _json_tag(v.tags, registry.APPROVAL_TAG), _json_tag(v.tags, registry.WAIT_TAG)
    evaluation = _evaluation(v.run_id)
    info = {
        "model": wf.model_name,
        "version": str(v.version),
        "aliases": list(v.aliases),
        "run_id": v.run_id,
        "source": v.source,
        "tags": {k: val for k, val in v.tags.items() if k not in hidden},
        "gate": decision,
        "approval": approval,
        "approval_wait": wait,
        "evaluation": evaluation,
    }
    against = (
        f" against champion v{decision['champion_version']}"
        if decision.get("champion_version")
        else " (no champion: absolute thresholds)"
    )
    lines = [
        f"{wf.model_name} v{v.version}  {' '.join('@' + a for a in v.aliases)}",
        *(f"  {k}: {val}" for k, val in sorted(info["tags"].items())),
        f"  gate: {'PASSED' if decision.get('passed') else 'FAILED' if decision else 'not recorded'}"
        f"{against if decision else ''}",
        *(
            f"    {'ok  ' if c['passed'] else 'FAIL'} {c['detail']}  (observed {_number(c['observed'])}, "
            f"threshold {_number(c['threshold'])})"
            for c in decision.get("checks", [])
        ),
    ]
    if evaluation:
        lines += _numbers_lines(evaluation)
    approval_text = _approval_text(approval, wait, registry)
    if approval_text:
        lines.append(f"  approval: {approval_text}")
    # The exact training and evaluation files of this version, back from the DVC remote.
    train_md5 = v.tags.get("dataset_version")
    eval_md5 = v.tags.get("eval_dataset_version") or (evaluation or {}).get("eval_version")
    if train_md5:
        info["data_checkout"] = (
            f"mlops data checkout {train_md5}{f' --eval {eval_md5}' if eval_md5 else ''} "
            f"--out data-v{v.version} --workflow {wf.name}"
        )
        lines.append(f"  data: {info['data_checkout']}")
    emit(args, info, "\n".join(lines))
    return 0


def cmd_history(args) -> int:
    registry, client, wf = _client(args)
    rows = registry.alias_history(client, wf.model_name)
    emit(args, rows, table(rows, ["seq", "at", "alias", "from", "to", "kind", "who", "why"]))
    return 0


def cmd_approve(args) -> int:
    """Record the approval; move @champion here only when no DAG run waits for the version.

    A waiting run's promote task moves it (ml/registry.py explains the hand-over).
    """
    registry, client, wf = _client(args)
    v = _version(client, wf, args.version)
    version = str(v.version)
    gate = _json_tag(v.tags, "gate_decision") or {}
    if v.tags.get("gate") != "passed" and not args.override_gate:
        raise ValueError(
            f"v{version} failed its gate ({v.tags.get('gate') or 'no gate recorded'}); see "
            f"`mlops models show {version} -w {wf.name}`; pass --override-gate to promote it anyway (recorded)"
        )
    current = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    current_version = str(current.version) if current else None
    # Compare-and-set against the champion the gate compared with: a gate passed against another
    # champion says nothing about this one. Overriding the gate decides against what serves now.
    expected = current_version if args.override_gate or not gate else gate.get("champion_version")
    if current_version not in (expected, version):
        raise registry.PromotionConflict(
            f"@champion of {wf.model_name} is now v{current_version}, not v{expected} as when the gate of v{version} "
            f"compared them; nothing recorded. Re-run the gate (mlops run --only distill -w {wf.name}), or add --override-gate "
            "to promote it over the current champion anyway (recorded)."
        )
    reason = args.reason + (" (gate overridden)" if args.override_gate else "")
    previous = registry.decision_of(client, wf.model_name, version)
    record = registry.record_decision(client, wf.model_name, version, "approved", why=reason, who=args.who)
    wait = registry.wait_of(
        client, wf.model_name, version
    )  # read after writing the decision: see ml/registry.py
    if registry.is_waiting(wait):
        payload = {"version": version, "decision": record, "moved": False, "promoted_by": wait["run_key"]}
        emit(
            args,
            payload,
            f"v{version} approved by {record['who']}: {args.reason}\n"
            f"DAG run {wait['run_key']} is waiting for it and moves @champion at its next look "
            f"(within {registry.WAIT_POLL_MAX_S / 60:.0f} minutes): `mlops models history -w {wf.name}` shows it.",
        )
        return 0
    # No run waits: this command is the one that moves @champion.
    try:
        entry = registry.move_alias(
            client,
            wf.model_name,
            registry.CHAMPION,
            version,
            expected_from=expected,
            why=f"approved: {reason}",
            who=record["who"],
            kind="promote",
        )
    except registry.RegistryError as exc:
        # A decision is recorded only with the move it causes: nothing moved, so nothing stays.
        registry.withdraw_decision(client, wf.model_name, version, record, previous)
        raise type(exc)(f"{exc} Nothing recorded on v{version}.") from None
    if entry.get("unchanged"):
        registry.withdraw_decision(client, wf.model_name, version, record, previous)
        payload = {"version": version, "decision": None, "moved": False, "unchanged": True, "move": entry}
        emit(
            args,
            payload,
            f"unchanged: v{version} is @champion already (since {entry.get('at', '?')}, "
            f"{entry.get('who', '?')}: {entry.get('why', '?')}); nothing recorded",
        )
        return 0
    payload = {"version": version, "decision": record, "moved": True, "move": entry}
    emit(
        args,
        payload,
        f"@champion of {wf.model_name}: v{entry['from']} → v{entry['to']} ({entry['who']}: {args.reason})",
    )
    return 0


def cmd_reject(args) -> int:
    registry, client, wf = _client(args)
    v = _version(client, wf, args.version)
    version = str(v.version)
    record = registry.record_decision(
        client, wf.model_name, version, "rejected", why=args.reason, who=args.who
    )
    wait = registry.wait_of(client, wf.model_name, version)
    lines = [f"v{version} rejected by {record['who']}: {args.reason}"]
    if registry.is_waiting(wait):
        lines.append(f"DAG run {wait['run_key']} ends at its next look with promote skipped.")
    if registry.CHAMPION in v.aliases:
        lines.append(
            f"v{version} is @champion and keeps serving: `mlops models rollback --reason TEXT -w {wf.name}` to replace it."
        )
    emit(args, {"version": version, "decision": record, "promoted_by": None}, "\n".join(lines))
    return 0


def cmd_rollback(args) -> int:
    registry, client, wf = _client(args)
    entry = registry.rollback(client, wf.model_name, why=args.reason, who=args.who)
    if entry.get("unchanged"):
        # Another rollback of the same champion moved it first: that one is the recorded decision.
        emit(
            args,
            {**entry, "moved": False},
            f"unchanged: @champion of {wf.model_name} is v{entry['to']} already, "
            f"moved there by {entry.get('who', '?')} at {entry.get('at', '?')} ({entry.get('why', '?')}); "
            "your reason was not recorded",
        )
        return 0
    emit(
        args,
        {**entry, "moved": True},
        f"@champion of {wf.model_name} rolled back: v{entry['from']} → v{entry['to']} "
        f"({entry['who']}: {args.reason})",
    )
    return 0


def register(sub) -> None:
    models = sub.add_parser(
        "models", help="list, show, approve, reject and roll back model versions (MLflow registry)"
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for name, func, helptext in (
        ("list", cmd_list, "every version with its aliases and gate result"),
        ("history", cmd_history, "every alias move: who, when, from, to, why"),
    ):
        p = msub.add_parser(name, help=helptext)
        add_workflow(p)
        add_json(p)
        p.set_defaults(func=func)
    p = msub.add_parser("show", help="one version: lineage tags and the gate decision with its numbers")
    p.add_argument("version", type=int, help="the model version number (see `mlops models list`)")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_show)
    for name, func, helptext in (
        (
            "approve",
            cmd_approve,
            "approve VERSION: a DAG run waiting for it promotes it, otherwise this moves "
            "@champion (compare-and-set against the champion its gate saw)",
        ),
        ("reject", cmd_reject, "record that VERSION must not serve; a DAG run waiting for it skips promote"),
    ):
        p = msub.add_parser(name, help=helptext)
        p.add_argument("version", type=int, help="the model version number (see `mlops models list`)")
        p.add_argument("--reason", required=True, help="why; recorded with the decision")
        p.add_argument("--who", help="who decides (default: $MLOPS_USER or the login name)")
        if name == "approve":
            p.add_argument(
                "--override-gate",
                action="store_true",
                help="promote even though the gate failed, or compared it with a champion that has "
                "changed since; decided against what serves now, and recorded",
            )
        add_workflow(p)
        add_json(p)
        p.set_defaults(func=func)
    p = msub.add_parser(
        "rollback", help="move @champion back to the champion before it (again: one further back)"
    )
    p.add_argument("--reason", required=True, help="why; recorded in the alias history")
    p.add_argument("--who", help="who decides (default: $MLOPS_USER or the login name)")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_rollback)
