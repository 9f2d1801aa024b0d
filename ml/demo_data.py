"""Demo data: ninety days of a frontier model routing support tickets, plus a human-labelled gold set.

Nothing here pretends to be a real customer. It exists so that every stage of the platform
(ingest, validate, mask PII, distil, evaluate, keep the books) has input that behaves like the
real thing: imbalanced intents, neighbouring intents that share words, tickets that ask for two
things, typos, personal data, a teacher that is wrong in plausible ways, and an API log with
errors, timeouts and a long latency tail.

Every draw comes from `random.Random` instances seeded from `seed`, so the same arguments give
byte-identical files on any machine.
"""

from __future__ import annotations

import csv
import json
import math
import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

# Share of traffic per intent, roughly power-law like a real help desk: password resets and
# "where is my parcel" dominate, privacy requests are rare but still above 2% of rows.
LABEL_SHARES = {
    "password_reset": 0.15,
    "shipping_delay": 0.13,
    "billing_refund": 0.11,
    "account_login": 0.09,
    "order_missing_item": 0.07,
    "payment_failed": 0.07,
    "subscription_cancel": 0.06,
    "product_question": 0.06,
    "bug_report": 0.05,
    "billing_invoice": 0.04,
    "order_damaged": 0.04,
    "shipping_address_change": 0.035,
    "subscription_upgrade": 0.03,
    "feature_request": 0.025,
    "account_delete": 0.024,
    "data_privacy": 0.021,
}
LABELS: tuple[str, ...] = tuple(LABEL_SHARES)

# Intents a human (or a frontier model) confuses with each other; the teacher's mistakes and the
# second intent of mixed tickets are drawn mostly from here.
NEIGHBOURS = {
    "billing_refund": ("subscription_cancel", "billing_invoice", "order_damaged"),
    "billing_invoice": ("billing_refund", "payment_failed"),
    "payment_failed": ("billing_invoice", "subscription_upgrade"),
    "subscription_cancel": ("billing_refund", "account_delete"),
    "subscription_upgrade": ("payment_failed", "product_question"),
    "account_login": ("password_reset", "bug_report"),
    "password_reset": ("account_login",),
    "account_delete": ("data_privacy", "subscription_cancel"),
    "shipping_delay": ("order_missing_item", "shipping_address_change"),
    "shipping_address_change": ("shipping_delay",),
    "order_damaged": ("order_missing_item", "billing_refund"),
    "order_missing_item": ("shipping_delay", "order_damaged"),
    "product_question": ("feature_request", "subscription_upgrade"),
    "bug_report": ("account_login", "feature_request"),
    "feature_request": ("product_question", "bug_report"),
    "data_privacy": ("account_delete",),
}

# Several phrasings per intent. Some deliberately borrow a neighbour's words ("refund" in a
# cancellation, "can't log in" in a password reset) because real tickets do.
TEMPLATES = {
    "billing_refund": [
        "I'd like a refund for order {order}.",
        "Please refund the {amount} you charged me on {date}.",
        "I was charged twice for the {product}, I want my money back.",
        "refund please",
        "Can I get my money back? The {product} wasn't what I expected.",
        "You billed me {amount} after I cancelled, please refund it.",
        "How long does a refund take to show up on my card?",
        "Requesting a refund for the {plan} plan, charged {amount} on {date}.",
    ],
    "billing_invoice": [
        "Can you send me an invoice for order {order}?",
        "I need a VAT invoice for the {amount} charge on {date}.",
        "The invoice is missing our company address.",
        "where can i download my invoices",
        "Please resend the receipt for {order} to {email}.",
        "Our finance team needs invoices for the last three months of the {plan} plan.",
        "The amount on the invoice doesn't match what I was charged ({amount}).",
    ],
    "payment_failed": [
        "My payment keeps getting declined.",
        "Card {card} was declined but my bank says it's fine.",
        "Checkout fails with 'payment could not be processed'.",
        "payment failed again",
        "I tried to pay {amount} for order {order} and it says transaction failed.",
        "Why did my renewal payment fail? My card is valid.",
        "The charge shows as pending on my card but your site says the payment failed.",
    ],
    "subscription_cancel": [
        "Please cancel my subscription.",
        "I want to cancel the {plan} plan before the next billing date.",
        "How do I stop auto-renewal?",
        "cancel my subscription asap",
        "Cancel my membership and make sure I'm not charged again.",
        "I no longer need the {plan} plan, please end it on {date}.",
        "Don't renew my subscription next month.",
    ],
    "subscription_upgrade": [
        "How do I upgrade to the {plan} plan?",
        "We need more seats, can we move from Basic to {plan}?",
        "What's the price difference if I upgrade mid-cycle?",
        "upgrade to {plan}",
        "I'd like to switch to annual billing on the {plan} plan.",
        "Tried to upgrade to {plan} but the payment page errored.",
    ],
    "account_login": [
        "I can't log in to my account.",
        "The login page just spins and never loads.",
        "It says my account is locked after too many attempts.",
        "cant sign in",
        "I keep getting 'invalid credentials' even though my password is right.",
        "The two-factor code never arrives so I can't get into my account. My number is {phone}.",
        "Logged out on every device and can't get back in, my email is {email}.",
    ],
    "password_reset": [
        "How do I reset my password?",
        "Forgot my password.",
        "The password reset link has expired.",
        "I never receive the reset email at {email}.",
        "pw reset pls",
        "The reset link says invalid token when I click it.",
        "I need to change my password, I can't log in.",
    ],
    "account_delete": [
        "Please delete my account.",
        "I want my account and all my data removed.",
        "How do I close my account permanently?",
        "delete account {email}",
        "Remove my profile, I won't be using the service anymore.",
    ],
    "shipping_delay": [
        "Where is my order {order}?",
        "My package was supposed to arrive on {date} and it's still not here.",
        "Tracking hasn't updated in a week.",
        "order {order} late",
        "It's been 10 days, when will my {product} ship?",
        "Delivery is delayed again, this is the third time.",
    ],
    "shipping_address_change": [
        "I need to change the delivery address for order {order}.",
        "Wrong address on my order, can you update it?",
        "I'm moving, please ship order {order} to my new address.",
        "change shipping address",
        "Can I redirect the package to my office? I don't think it has shipped yet.",
    ],
    "order_damaged": [
        "My {product} arrived broken.",
        "The box was crushed and the {product} is cracked.",
        "Item damaged in transit, order {order}.",
        "received it damaged",
        "The screen on the {product} is scratched out of the box.",
        "Half the parts are bent, I'd like a replacement or a refund.",
    ],
    "order_missing_item": [
        "My order {order} arrived but the {product} was missing.",
        "Only got 2 of the 3 items I ordered.",
        "Package delivered, {product} not in it.",
        "missing item",
        "Tracking says delivered but I never got the {product}.",
        "The charger wasn't included with my {product}.",
    ],
    "product_question": [
        "Does the {product} work with a Mac?",
        "What's the warranty on the {product}?",
        "Is the {product} available in black?",
        "Can the {plan} plan export to CSV?",
        "what size is the {product}",
        "Do you ship the {product} to Canada?",
    ],
    "bug_report": [
        "The app crashes when I open settings.",
        "The export button does nothing in Chrome.",
        "I get a 500 error when saving my profile.",
        "The dashboard shows wrong numbers since the last update.",
        "app broken",
        "After the update the login button doesn't respond.",
    ],
    "feature_request": [
        "It would be great if you added dark mode.",
        "Please add an option to export to PDF.",
        "Could you support Apple Pay at checkout?",
        "feature request: bulk edit",
        "Any plans to add a Slack integration to the {plan} plan?",
    ],
    "data_privacy": [
        "What data do you store about me?",
        "Please send me a copy of my personal data under GDPR.",
        "I want to opt out of marketing emails and data sharing.",
        "Who do you share my information with?",
        "gdpr request {email}",
        "Stop processing my data and delete what you have.",
    ],
}
OPENINGS = [
    "",
    "",
    "",
    "Hi,",
    "Hello,",
    "Hi there,",
    "Dear support,",
    "Hey team,",
    "Good morning,",
    "URGENT -",
    "Hello, {name} here.",
]
CLOSINGS = [
    "",
    "",
    "",
    "Thanks",
    "Thanks!",
    "Thank you.",
    "Regards, {name}",
    "Cheers",
    "Sent from my iPhone",
    "Best, {name} {phone}",
]
DETAILS = [
    "I've been a customer for years.",
    "This is really frustrating.",
    "I already wrote to you on {date}.",
    "Please help.",
    "My order number is {order}.",
    "My email is {email}.",
    "You can call me on {phone}.",
    "This is urgent.",
    "Reach me at {email} or {phone}.",
    "Account email: {email}.",
]
CONNECTORS = ["Also, ", "And ", "Oh and ", "Btw ", "One more thing: "]
FIRST_NAMES = ["Ana", "Ben", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
LAST_NAMES = ["Smith", "Okafor", "Nguyen", "Garcia", "Muller", "Rossi", "Kowalski", "Tanaka", "Silva"]
DOMAINS = ["gmail.com", "outlook.com", "example.org", "acme-corp.com", "yahoo.co.uk"]
PRODUCTS = [
    "wireless headphones",
    "standing desk",
    "coffee grinder",
    "phone case",
    "laptop stand",
    "smart watch",
    "air purifier",
    "desk lamp",
    "backpack",
    "keyboard",
]
PLANS = ["Pro", "Team", "Business", "Enterprise", "Plus"]
DATES = ["Monday", "Friday", "March 3rd", "the 14th", "June 2", "12/05"]

MIX_RATE = 0.12  # tickets that ask for two things; the first is the true intent
TYPO_RATE = 0.25  # tickets typed in a hurry
ERROR_RATE, TIMEOUT_RATE = 0.02, 0.01
PROMPT_OVERHEAD_TOKENS = 250  # the routing prompt's instructions and label list
PRICE_IN_USD_PER_MTOK, PRICE_OUT_USD_PER_MTOK = 3.0, 15.0
CLIENT_TIMEOUT_MS = 30_000.0
# Calls per hour of day (UTC): a help desk is busiest in working hours.
HOURLY_WEIGHTS = [2, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 8, 9, 10, 10, 9, 7, 6, 5, 4, 4, 3, 2]


@dataclass(frozen=True)
class Ticket:
    text: str
    label: str  # the hidden true intent
    mixed_with: str | None = None  # the second intent of a two-request ticket


def _fill(rng: random.Random, template: str) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    slots = {
        "name": first,
        "email": f"{first.lower()}{rng.choice(['.', '_', ''])}{last.lower()}{rng.randrange(100)}@{rng.choice(DOMAINS)}",
        "phone": rng.choice(
            ["+1 415-555-{:04d}", "(212) 555-{:04d}", "07700 900{:03d}", "+44 20 7946 {:04d}"]
        ).format(rng.randrange(1000)),
        "order": rng.choice(["#{}", "ORD-{}", "{}"]).format(rng.randrange(1_000_000, 9_999_999)),
        "card": " ".join(f"{rng.randrange(10_000):04d}" for _ in range(4)),
        "amount": f"${rng.randrange(5, 400)}.{rng.randrange(100):02d}",
        "product": rng.choice(PRODUCTS),
        "plan": rng.choice(PLANS),
        "date": rng.choice(DATES),
    }
    return template.format(**slots)


def _typo(rng: random.Random, word: str) -> str:
    # Only plain words: a typo inside an email or order number would hide it from PII masking.
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swapped letters
    if kind == 1:
        return word[:i] + word[i + 1 :]  # dropped letter
    return word[:i] + word[i] + word[i:]  # doubled letter


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def make_ticket(rng: random.Random, label: str) -> Ticket:
    """One ticket whose true intent is `label`: opening, the ask, maybe details and a second ask."""
    parts = [_fill(rng, rng.choice(OPENINGS)), _fill(rng, rng.choice(TEMPLATES[label]))]
    mixed_with = None
    if rng.random() < MIX_RATE:
        others = [x for x in LABELS if x != label]
        mixed_with = rng.choice(NEIGHBOURS[label]) if rng.random() < 0.7 else rng.choice(others)
        parts.append(rng.choice(CONNECTORS) + _lower_first(_fill(rng, rng.choice(TEMPLATES[mixed_with]))))
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
        parts.append(_fill(rng, rng.choice(DETAILS)))
    parts.append(_fill(rng, rng.choice(CLOSINGS)))
    text = " ".join(p for p in parts if p)
    if rng.random() < TYPO_RATE:
        text = " ".join(_typo(rng, w) if rng.random() < 0.08 else w for w in text.split(" "))
    if rng.random() < 0.1:
        text = text.lower()
    return Ticket(text=text, label=label, mixed_with=mixed_with)


def allocate(n: int) -> list[str]:
    """The labels of n rows in LABEL_SHARES proportions (largest remainder), in label order.

    Exact counts rather than independent draws, so every label is present whenever n allows
    and the imbalance is the same for every seed.
    """
    # One row per label first: plain largest remainder would starve the rare labels of small sets.
    floor = 1 if n >= len(LABELS) else 0
    rest = n - floor * len(LABELS)
    total = sum(LABEL_SHARES.values())
    raw = [LABEL_SHARES[x] * rest / total for x in LABELS]
    counts = [floor + math.floor(r) for r in raw]
    by_remainder = sorted(range(len(LABELS)), key=lambda i: (math.floor(raw[i]) - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return [label for label, c in zip(LABELS, counts) for _ in range(c)]


def make_tickets(rng: random.Random, n: int, avoid_texts: frozenset[str] = frozenset()) -> list[Ticket]:
    """n tickets in shuffled order; texts in avoid_texts are redrawn (a few tries) to keep sets disjoint."""
    labels = allocate(n)
    rng.shuffle(labels)
    tickets = []
    for label in labels:
        ticket = make_ticket(rng, label)
        for _ in range(20):
            if ticket.text not in avoid_texts:
                break
            ticket = make_ticket(rng, label)
        tickets.append(ticket)
    return tickets


def _difficulty(ticket: Ticket) -> float:
    # Two-request tickets and terse ones ("missing item") are where a model's answer wobbles.
    if ticket.mixed_with:
        return 4.0
    return 2.0 if len(ticket.text) < 30 else 1.0


def teacher_labels(rng: random.Random, tickets: list[Ticket], error_rate: float) -> list[str]:
    """The frontier model's answers: wrong on about error_rate of tickets, mostly towards a neighbour.

    Per-ticket error probability is proportional to its difficulty, scaled so the expected rate
    over these tickets equals error_rate (capped at 1 per ticket, so very high rates undershoot).
    """
    scale = error_rate * len(tickets) / max(sum(_difficulty(t) for t in tickets), 1e-9)
    answers = []
    for t in tickets:
        if rng.random() >= min(1.0, scale * _difficulty(t)):
            answers.append(t.label)
        elif t.mixed_with and rng.random() < 0.7:
            answers.append(t.mixed_with)  # answered the second request instead of the first
        elif rng.random() < 0.85:
            answers.append(rng.choice(NEIGHBOURS[t.label]))
        else:
            answers.append(rng.choice([x for x in LABELS if x != t.label]))
    return answers


def label_probs(rng: random.Random, ticket: Ticket, answer: str) -> dict[str, float]:
    """Top-3 probabilities as the API's logprobs would give them; argmax is the answer.

    Less confident when the ticket is mixed or the answer wrong, and the runner-up is then the
    true or second intent, which is what makes soft targets worth distilling.
    """
    unsure = answer != ticket.label or ticket.mixed_with is not None
    p1 = rng.uniform(0.5, 0.8) if unsure else rng.uniform(0.75, 0.98)
    p2 = (1 - p1) * rng.uniform(0.5, 0.85)  # < p1 because 1 - p1 <= 0.5
    p3 = (1 - p1 - p2) * rng.uniform(0.3, 0.9)
    second = ticket.label if answer != ticket.label else (ticket.mixed_with or rng.choice(NEIGHBOURS[answer]))
    third = rng.choice([x for x in LABELS if x not in (answer, second)])
    # Floor, not round, so the three never sum past 1.
    return {lab: math.floor(p * 10_000) / 10_000 for lab, p in ((answer, p1), (second, p2), (third, p3))}


def _timestamps(rng: random.Random, n: int, start: date, days: int) -> list[str]:
    origin = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    moments = sorted(
        origin
        + timedelta(
            days=rng.randrange(days),
            hours=rng.choices(range(24), HOURLY_WEIGHTS)[0],
            seconds=rng.randrange(3600),
            milliseconds=rng.randrange(1000),
        )
        for _ in range(n)
    )
    return [m.isoformat(timespec="milliseconds").replace("+00:00", "Z") for m in moments]


def _call_record(rng: random.Random, ticket: Ticket, answer: str) -> dict:
    """Everything but call_id, ts, workflow and model fields: status, label, latency, tokens, cost."""
    tokens_in = PROMPT_OVERHEAD_TOKENS + math.ceil(len(ticket.text) / 4)
    u = rng.random()
    if u < ERROR_RATE:
        error = "RateLimitError" if rng.random() < 0.65 else "ServerError"
        retries = rng.choice([2, 3])  # the client gave up after its retries
        median_ms = 120.0 if error == "RateLimitError" else 600.0
        latency_ms = rng.lognormvariate(math.log(median_ms), 0.5) + retries * 1000.0
        return dict(
            status="error",
            error=error,
            retries=retries,
            response_label=None,
            label_probs=None,
            latency_ms=latency_ms,
            tokens_in=tokens_in,
            tokens_out=0,
            cost_usd=0.0,
        )
    if u < ERROR_RATE + TIMEOUT_RATE:
        return dict(
            status="timeout",
            error="Timeout",
            retries=rng.choice([0, 1]),
            response_label=None,
            label_probs=None,
            latency_ms=CLIENT_TIMEOUT_MS + rng.uniform(0, 50),
            tokens_in=tokens_in,
            tokens_out=0,
            cost_usd=0.0,
        )
    retries = rng.choices([0, 1, 2], [95, 4, 1])[0]
    latency_ms = rng.lognormvariate(math.log(800.0), 0.45)
    if rng.random() < 0.03:
        latency_ms *= rng.uniform(2.5, 6.0)  # provider congestion: the tail past 3 s
    latency_ms += retries * 1000.0  # backoff before the attempt that succeeded
    tokens_out = math.ceil(len(answer) / 4) + 2 + rng.randrange(3)
    probs = label_probs(rng, ticket, answer) if rng.random() < 0.5 else None
    cost_usd = (tokens_in * PRICE_IN_USD_PER_MTOK + tokens_out * PRICE_OUT_USD_PER_MTOK) / 1e6
    return dict(
        status="ok",
        error=None,
        retries=retries,
        response_label=answer,
        label_probs=probs,
        latency_ms=latency_ms,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost_usd,
    )


def generate(
    out_dir: Path,
    *,
    n_calls: int = 2400,
    n_gold: int = 400,
    seed: int = 42,
    workflow: str = "ticket_routing",
    model: str = "frontier-large",
    model_version: str = "2026-06-01",
    teacher_error_rate: float = 0.09,
    days: int = 90,
    start: date | None = None,
) -> dict:
    """Write call_log.jsonl and gold.csv into out_dir; return their paths and what is in them."""
    if n_calls < 1 or n_gold < 0:
        raise ValueError(f"n_calls={n_calls}, n_gold={n_gold}: need n_calls >= 1 and n_gold >= 0.")
    if not 0.0 <= teacher_error_rate < 1.0:
        raise ValueError(f"teacher_error_rate={teacher_error_rate}: pass a fraction in [0, 1), e.g. 0.09.")
    if days < 1:
        raise ValueError(f"days={days}: the log must span at least one day; pass days >= 1.")
    start = start or date(2026, 8, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Separate streams, so that changing n_gold leaves the call log as it was.
    call_rng, gold_rng = random.Random(f"{seed}:calls"), random.Random(f"{seed}:gold")

    tickets = make_tickets(call_rng, n_calls)
    answers = teacher_labels(call_rng, tickets, teacher_error_rate)
    stamps = _timestamps(call_rng, n_calls, start, days)
    counts = {"ok": 0, "error": 0, "timeout": 0}
    n_correct = 0
    call_log_path = out_dir / "call_log.jsonl"
    with call_log_path.open("w", encoding="utf-8", newline="\n") as f:
        for ticket, answer, ts in zip(tickets, answers, stamps):
            rec = _call_record(call_rng, ticket, answer)
            counts[rec["status"]] += 1
            n_correct += rec["status"] == "ok" and answer == ticket.label
            row = {
                "call_id": str(uuid.UUID(int=call_rng.getrandbits(128), version=4)),
                "ts": ts,
                "workflow": workflow,
                "request_text": ticket.text,
                "response_label": rec["response_label"],
                "label_probs": rec["label_probs"],
                "model": model,
                "model_version": model_version,
                "latency_ms": round(rec["latency_ms"], 1),
                "tokens_in": rec["tokens_in"],
                "tokens_out": rec["tokens_out"],
                "cost_usd": round(rec["cost_usd"], 8),
                "status": rec["status"],
                "error": rec["error"],
                "retries": rec["retries"],
            }
            f.write(json.dumps(row) + "\n")

    gold = make_tickets(gold_rng, n_gold, avoid_texts=frozenset(t.text for t in tickets))
    gold_path = out_dir / "gold.csv"
    with gold_path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows([t.text, t.label] for t in gold)

    return {
        "call_log_path": str(call_log_path),
        "gold_path": str(gold_path),
        "n_calls": n_calls,
        "n_ok": counts["ok"],
        "n_error": counts["error"],
        "n_timeout": counts["timeout"],
        "n_gold": n_gold,
        "labels": list(LABELS),
        "teacher_accuracy": round(n_correct / counts["ok"], 4) if counts["ok"] else None,
    }
