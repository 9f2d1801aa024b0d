"""Serving commands: `mlops serve` (HTTP predictions from @champion) and `mlops predict FILE` (a batch)."""

from __future__ import annotations

from pathlib import Path

from ml.cli.common import add_json, add_workflow, emit, settings_and_workflow


def cmd_serve(args) -> int:
    import uvicorn

    from ml.serve import create_app

    settings, wf = settings_and_workflow(args)
    app = create_app(
        settings,
        wf,
        refresh_s=args.refresh_s,
        max_batch=args.max_batch,
        max_text_chars=args.max_text_chars,
        max_wait_ms=args.max_wait_ms,
        workers=args.workers,
        include_probs=not args.omit_probs,
    )
    print(
        f"serving {wf.model_name}@champion on http://{args.host}:{args.port}  (POST /predict; GET /livez, /readyz, "
        f"/health, /metrics, /docs); @champion is looked up every {args.refresh_s:g} s",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=args.access_log)
    return 0


def cmd_predict(args) -> int:
    from ml.serve import predict_file

    settings, wf = settings_and_workflow(args)
    summary = predict_file(
        settings, wf, Path(args.file), out=Path(args.out) if args.out else None, text_col=args.text_col
    )
    emit(
        args,
        summary,
        f"scored {summary['rows']} rows with {summary['model']} v{summary['model_version']} "
        f"in {summary['seconds']} s → {summary['out']}",
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="answer HTTP predictions from @champion; picks up a new champion without a restart"
    )
    add_workflow(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--refresh-s", type=float, default=10.0, help="look up @champion at most this often (seconds)"
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=256,
        help="most texts one request may carry, and one model call (micro-batches of concurrent requests)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="how long a micro-batch waits for requests still being read (a lone request never waits)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="model calls at once (default 1: each call uses every CPU, and concurrent requests share it as one "
        "micro-batch); the CPUs are divided among them",
    )
    p.add_argument(
        "--omit-probs",
        action="store_true",
        help="leave the probability vectors out of answers (a request may still ask: include_probs)",
    )
    p.add_argument(
        "--access-log", action="store_true", help="log one line per request (off: /metrics counts them)"
    )
    p.add_argument(
        "--max-text-chars",
        type=int,
        default=None,
        help="longest text accepted (default: the workflow's validation.max_text_chars)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "predict",
        help="score a CSV/Parquet/JSONL file with @champion; writes label, score, probs (extraction: fields, "
        "the JSON of each field's value, start, end and confidence)",
    )
    p.add_argument(
        "file", help="CSV, Parquet or JSONL file with a text column (an extraction model: the documents)"
    )
    p.add_argument("--out", help="where to write the scored file (default: FILE.predictions.<same type>)")
    p.add_argument("--text-col", help="the column holding the texts (default: the workflow's text_column)")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_predict)
