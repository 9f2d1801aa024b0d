"""Frontier instrumentation commands: `mlops proxy`, `mlops frontier report`, `mlops frontier export`."""

from __future__ import annotations

from datetime import datetime, timezone

from ml.cli.common import add_json, add_workflow, emit, settings_and_workflow, table
from ml.costs.unit_costs import NINETY_DAY_WINDOW_DAYS as NINETY_DAYS


def _ms(value) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def cmd_report(args) -> int:
    from ml.frontier import build_report

    settings, wf = settings_and_workflow(args)
    report = build_report(wf.name, window_days=args.window_days, settings=settings)
    m, t = report["measured"], report["targets"]
    if m is None:
        emit(args, report, f"{wf.name}: {report['verdict']}\nreport: {report['path']}")
        return 0
    rows = [
        {
            "measure": "latency p50 / p95 / p99",
            "measured": " / ".join(_ms(m["latency_ms"][p]) for p in ("p50", "p95", "p99")),
            "target": f"p99 <= {t['latency_sla_p99_ms']:,.0f} ms",
        },
        {
            "measure": "time to first token p50 / p95 (streamed)",
            "measured": " / ".join(_ms(m["ttft_ms"][p]) for p in ("p50", "p95")),
            "target": "",
        },
        {
            "measure": "tokens per call in / out",
            "measured": f"{m['tokens_in_per_call']:,.0f} / {m['tokens_out_per_call']:,.0f}",
            "target": "",
        },
        {"measure": "cost per call", "measured": f"${float(m['cost_per_call_usd']):.6f}", "target": ""},
        {
            "measure": f"cost per month at {t['monthly_calls']:,} calls",
            "measured": f"${float(m['monthly_cost_usd']):,.2f}",
            "target": f"<= ${float(t['monthly_budget_usd']):,.2f}",
        },
        {
            "measure": "availability",
            "measured": f"{m['availability']:.2%}",
            "target": f">= {t['availability_target']:.2%}",
        },
        {
            "measure": "error / timeout rate",
            "measured": f"{m['error_rate']:.2%} / {m['timeout_rate']:.2%}",
            "target": "",
        },
    ]
    if report.get("teacher_errors"):
        e = report["teacher_errors"]
        reasons = ", ".join(f"{k} {n}" for k, n in e["by_reason"].items() if n) or "none"
        rows.append(
            {
                "measure": "teacher errors (curation)",
                "measured": f"{e['error_rate']:.2%} ({reasons})",
                "target": "",
            }
        )
    lines = [
        f"{wf.name}, {m['calls']:,} calls from {m['since'][:10]} to {m['until'][:10]} ({m['window_days']} days):",
        "",
        table(rows, ["measure", "measured", "target"]),
        "",
        f"verdict: {report['verdict']}",
    ]
    if report["shadow"]:
        s = report["shadow"]
        agreement = "-" if s["agreement"] is None else f"{s['agreement']:.1%}"
        lines += [
            "",
            f"shadow ({s['requests']:,} requests, {', '.join(s['students'])}): agreement {agreement}, "
            f"p99 {_ms(s['student_latency_ms']['p99'])} vs {_ms(s['frontier_latency_ms']['p99'])}, "
            f"${float(s['student_monthly_cost_usd']):,.2f} vs ${float(s['frontier_monthly_cost_usd']):,.2f} a month",
        ]
    lines.append(f"report: {report['path']}")
    emit(args, report, "\n".join(lines))
    return 0


def cmd_export(args) -> int:
    from ml.frontier import export_for_curation

    settings, wf = settings_and_workflow(args)
    result = export_for_curation(wf.name, gold_share=args.gold_share, settings=settings)
    if result["exported_days"]:
        text = (
            f"exported {len(result['exported_days'])} day(s), {result['rows']:,} calls → {result['batch']}\n"
            f"set aside {result['gold_rows']:,} for gold labels → {result['gold_file']} "
            "(label them, then `mlops data import FILE --as eval`)"
        )
    else:
        text = (
            f"nothing exported: {result['waiting_labelled_rows']} labelled calls in completed days, "
            f"the batch needs {wf.validation.min_rows} (validation.min_rows)"
        )
    emit(args, result, text)
    return 0


def _shadow(settings, wf, book, log_dir):
    from ml import registry
    from ml.costs import unit_costs
    from ml.frontier.calllog import CallLog
    from ml.frontier.proxy import Shadow
    from ml.pipeline.cost_report import served_throughput

    champion = registry.version_by_alias(registry.configure(settings), wf.model_name, registry.CHAMPION)
    if champion is None:
        raise LookupError(
            f"--shadow needs a @champion of {wf.model_name}; run `mlops run --only distill` first, "
            "or start the proxy without --shadow."
        )
    client = registry.configure(settings)
    throughput = served_throughput(client.get_run(champion.run_id).data.metrics)
    if not throughput:
        raise LookupError(
            f"--shadow: {wf.model_name} v{champion.version} has no measured throughput "
            "(eval.served.throughput_calls_per_s); re-run distill, or start the proxy without --shadow."
        )
    return Shadow.for_model_dir(
        registry.download_weights(wf.model_name, champion.version),
        CallLog(log_dir / "shadow"),
        max_length=wf.training.max_length,
        student=f"{wf.model_name} v{champion.version}",
        student_cost_per_call_usd=unit_costs.student_cost_per_call_usd(
            wf, book, throughput, datetime.now(timezone.utc).date()
        ),
    )


def cmd_proxy(args) -> int:
    import uvicorn

    from ml.costs.pricebook import PriceBook
    from ml.frontier.calllog import CallLog, calllog_dir
    from ml.frontier.client import FrontierClient
    from ml.frontier.proxy import build_app

    settings, wf = settings_and_workflow(args)
    book = PriceBook.load(settings.price_book_file)
    log_dir = calllog_dir(settings.state_dir, wf.name)
    shadow = _shadow(settings, wf, book, log_dir) if args.shadow else None
    log = CallLog(log_dir)
    sinks = [log.append] + ([shadow.submit] if shadow else [])
    client = FrontierClient(
        args.upstream_url or settings.frontier_base_url,
        settings.frontier_api_key,
        workflow=wf.name,
        labels=wf.labels,
        fields=wf.fields,
        price_book=book,
        sinks=sinks,
        timeout_s=args.timeout_s,
        max_retries=args.max_retries,
        max_concurrency=args.max_concurrency,
        deadline_s=args.deadline_s,
    )
    print(
        f"mlops proxy: {wf.name} on http://{args.host}:{args.port}/v1 → {client.url}; "
        f"call log {log.directory}{'; shadow: ' + shadow.student if shadow else ''}",
        flush=True,
    )
    try:
        uvicorn.run(build_app(client), host=args.host, port=args.port, log_level="info")
    finally:
        if shadow:
            shadow.close()
        log.close()
    return 0


def register(sub) -> None:
    frontier = sub.add_parser(
        "frontier", help="the ninety-day test of the frontier API, and curation of its log"
    )
    fsub = frontier.add_subparsers(dest="frontier_command", required=True, metavar="ACTION")

    p = fsub.add_parser(
        "report", help="latency, cost and reliability against the SLA, budget and target; verdict"
    )
    p.add_argument(
        "--window-days",
        type=int,
        default=NINETY_DAYS,
        help=f"days of calls to measure (default {NINETY_DAYS})",
    )
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_report)

    p = fsub.add_parser(
        "export", help="completed days of the proxy's log → drop folder, and a gold-label sample"
    )
    p.add_argument(
        "--gold-share", type=float, default=0.05, help="share of answered calls set aside for gold labels"
    )
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("proxy", help="an OpenAI-compatible endpoint that records every frontier call")
    p.add_argument("--port", type=int, default=8400, help="port to listen on (default 8400)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--upstream-url", help="OpenAI-compatible base URL (default $MLOPS_FRONTIER_BASE_URL)")
    p.add_argument(
        "--timeout-s", type=float, default=30.0, help="per-attempt timeout in seconds (default 30)"
    )
    p.add_argument(
        "--max-retries", type=int, default=2, help="retries on 429/5xx/connection errors (default 2)"
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        help="calls in flight to the upstream at once; more are refused with 503 at once (default 64)",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="one call's deadline over all attempts (default: every attempt's timeout plus backoff)",
    )
    p.add_argument("--shadow", action="store_true", help="also score each request with the @champion student")
    add_workflow(p)
    p.set_defaults(func=cmd_proxy)
