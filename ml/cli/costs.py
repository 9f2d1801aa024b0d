"""Cost reviewers' commands: the ledger, manual entries, the break-even report, FOCUS export."""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import asdict
from datetime import date, datetime, timezone
from decimal import Decimal

from ml.cli.common import add_json, add_workflow, emit, settings_and_workflow, table


def _ledger(settings):
    from ml.costs.ledger import Ledger

    return Ledger(settings.ledger_url)


def cmd_report(args) -> int:
    from ml.costs.report import summary_lines
    from ml.costs.review_page import usd
    from ml.pipeline.cost_report import build_report

    settings, wf = settings_and_workflow(args)
    path = settings.reports_dir / wf.name / "breakeven.json"
    if args.refresh or not path.exists():
        build_report(wf.name)
    report = json.loads(path.read_text())
    headline, *basis = summary_lines(report)
    lines = [
        f"{wf.name}: {headline}",
        *(f"  {b}" for b in basis),
        "",
        *(f"  - {r}" for r in report["reasons"]),
        "",
    ]
    if not report.get("pending"):
        lines += [
            table(
                [{"category": k, "usd": usd(Decimal(v))} for k, v in report["ledger_totals_usd"].items()],
                ["category", "usd"],
            ),
            "",
            table(
                [
                    {
                        "view": "compute only (naive)",
                        **report["naive"],
                        "saving_at_horizon_usd": usd(Decimal(report["naive"]["saving_at_horizon_usd"])),
                    },
                    {
                        "view": "fully loaded",
                        **report["fully_loaded"],
                        "saving_at_horizon_usd": usd(
                            Decimal(report["fully_loaded"]["saving_at_horizon_usd"])
                        ),
                    },
                ],
                ["view", "break_even_month", "saving_at_horizon_usd", "break_even_calls_per_month"],
            ),
            "",
            f"HTML: {path.with_suffix('.html')}   FOCUS CSV: {path.parent / 'costs_focus.csv'}",
        ]
    emit(args, report, "\n".join(lines))
    return 0


def cmd_entries(args) -> int:
    settings, wf = settings_and_workflow(args)
    with _ledger(settings) as ledger:
        entries = ledger.entries(workflow=None if args.all else wf.name, category=args.category)
    rows = [
        {k: (str(v) if not isinstance(v, (int, type(None))) else v) for k, v in asdict(e).items()}
        for e in entries
    ]
    emit(
        args,
        rows,
        table(
            [{**r, "amount": f"{Decimal(r['amount']):.4f}"} for r in rows],
            ["id", "occurred_at", "category", "resource", "quantity", "unit", "amount", "source"],
        ),
    )
    return 0


def cmd_add(args) -> int:
    from ml.costs.capture import book_manual, manual_quantity
    from ml.costs.pricebook import PriceBook

    settings, wf = settings_and_workflow(args)
    try:
        quantity = manual_quantity(
            args.quantity, "hours" if args.role else "months" if args.tooling else "units"
        )
    except ValueError as exc:  # "quantity -3 must be ..." → "--quantity -3 must be ..."
        raise ValueError(f"--{exc}") from None
    on = _booking_day(args.on)
    with _ledger(settings) as ledger:
        entry = book_manual(
            ledger,
            price_book=PriceBook.load(settings.price_book_file),
            workflow=wf.name,
            on=on,
            quantity=quantity,
            person=args.who or settings.user or getpass.getuser(),
            role=args.role,
            tooling=args.tooling,
            unit_price_usd=args.unit_price,
            unit=args.unit,
            resource=args.resource,
            category=args.category,
            description=args.description or "",
            idempotency_key=args.key,
        )
    emit(
        args,
        {k: str(v) for k, v in asdict(entry).items()},
        f"booked #{entry.id}: {entry.quantity} {entry.unit} × ${entry.unit_price} = ${entry.amount:.2f} ({entry.category})",
    )
    return 0


def _booking_day(raw: str | None) -> date:
    """--on as a UTC day, not in the future: the ledger books what was spent, not what is planned."""
    today = datetime.now(timezone.utc).date()
    if raw is None:
        return today
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(
            f"--on {raw!r} is not a date; write it as YYYY-MM-DD, e.g. {today.isoformat()}."
        ) from None
    if day > today:
        raise ValueError(
            f"--on {day} is in the future (today is {today} UTC); book a cost on or after the day "
            "it is spent."
        )
    return day


def cmd_reverse(args) -> int:
    settings, _ = settings_and_workflow(args)
    with _ledger(settings) as ledger:
        entry = ledger.reverse(args.entry_id, args.reason, args.who or settings.user or getpass.getuser())
    emit(
        args,
        {k: str(v) for k, v in asdict(entry).items()},
        f"booked reversing entry #{entry.id} for #{args.entry_id}",
    )
    return 0


def cmd_export(args) -> int:
    from ml.costs.report import FOCUS_COLUMNS, focus_rows, write_focus_csv

    settings, wf = settings_and_workflow(args)
    with _ledger(settings) as ledger:
        ledger.check_intact()  # a tampered ledger is not exported as if it were the books
        entries = ledger.entries(workflow=wf.name)
    if args.out:
        write_focus_csv(entries, args.out)
        print(f"wrote {len(entries)} rows to {args.out}")
    else:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=FOCUS_COLUMNS)
        writer.writeheader()
        writer.writerows(focus_rows(entries))
    return 0


def cmd_verify(args) -> int:
    settings, _ = settings_and_workflow(args)
    with _ledger(settings) as ledger:
        tampered = ledger.verify()
        n = len(ledger.entries())
    doc = {"entries": n, "intact": not tampered, "tampered": [asdict(t) for t in tampered]}
    text = (
        f"ledger intact: {n} entries, each matching its payload hash"
        if not tampered
        else "\n".join(
            [f"ledger TAMPERED: {len(tampered)} of {n} entries changed outside the ledger"]
            + [f"  #{t.id} {t.idempotency_key}: {t.problem}" for t in tampered]
        )
    )
    emit(args, doc, text)
    return 0 if not tampered else 1


def cmd_flush(args) -> int:
    from ml.costs.capture import flush_spool

    settings, _ = settings_and_workflow(args)
    n = flush_spool(settings.ledger_url, settings.state_dir / "spool", settings.price_book_file)
    emit(args, {"flushed": n}, f"flushed {n} spooled entries into the ledger")
    return 0


def register(sub) -> None:
    costs = sub.add_parser(
        "costs", help="the cost ledger, manual entries, the break-even report, FOCUS export"
    )
    csub = costs.add_subparsers(dest="costs_command", required=True, metavar="ACTION")

    p = csub.add_parser("report", help="break-even of frontier API vs. post-training, and the verdict")
    p.add_argument(
        "--refresh", action="store_true", help="recompute from the ledger now (else the last cost_report run)"
    )
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_report)

    p = csub.add_parser("entries", help="ledger entries of the workflow")
    p.add_argument("--category", help="only this category (e.g. training_compute, people)")
    p.add_argument("--all", action="store_true", help="every workflow")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_entries)

    p = csub.add_parser(
        "add", help="book people's hours (--role), a tool (--tooling) or an invoice line (--unit-price)"
    )
    p.add_argument(
        "--quantity", required=True, help="hours for --role, months for --tooling, units for --unit-price"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--role", help="price book role, e.g. ml_engineer, data_engineer, model_owner, annotator"
    )
    who.add_argument("--tooling", help="price book tool, e.g. airflow_control_plane")
    who.add_argument(
        "--unit-price", help="USD per unit of an invoice line (needs --unit, --resource, --category)"
    )
    p.add_argument("--unit")
    p.add_argument("--resource")
    p.add_argument("--category", help="ledger category (default: people / tooling)")
    p.add_argument("--on", help="date the cost occurred, YYYY-MM-DD (default today)")
    p.add_argument("--who", help="who books it (default: $MLOPS_USER or the login name)")
    p.add_argument("--description")
    p.add_argument("--key", help="idempotency key, e.g. a timesheet or invoice id")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_add)

    p = csub.add_parser(
        "reverse", help="book a reversing entry (the ledger is append-only; nothing is edited)"
    )
    p.add_argument("entry_id", type=int)
    p.add_argument("--reason", required=True)
    p.add_argument("--who")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_reverse)

    p = csub.add_parser("export", help="the ledger as CSV with FinOps FOCUS column names")
    p.add_argument("--format", choices=("focus",), default="focus")
    p.add_argument("--out", help="file to write (default: stdout)")
    add_workflow(p)
    p.set_defaults(func=cmd_export)

    p = csub.add_parser(
        "verify", help="check every ledger entry against its payload hash; exit 1 naming any tampered"
    )
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_verify)

    p = csub.add_parser("flush", help="move entries spooled while the ledger was unreachable into it")
    add_workflow(p)
    add_json(p)
    p.set_defaults(func=cmd_flush)
