"""Demo data for field extraction: generated contracts, a frontier call log over them, and a gold set.

Each contract is built from varied templates (several preambles, paraphrased clauses in a
shuffled order, boilerplate sections to fill 1-6 pages) and carries the values a legal workflow
extracts: the two parties, the effective date, the governing law, the termination notice in days
and the contract value. What makes it as hard as real contracts:
- dates and amounts in several formats ("3 March 2026", "2026-03-03", "the 3rd day of March,
  2026"; "$125,000.00", "USD 125,000", "EUR 80.000,00");
- distractors of the same kind beside every value: a signature date and a payment date, a
  venue whose courts are not the governing law, a party incorporated in another state, a cure
  period and payment terms in days, a liability cap in the same currency;
- parties referred to by a short name after the preamble, and named again in the signature block;
- some contracts have no fixed value or no termination-for-convenience clause (the answer is null);
- a teacher that is wrong about 4 % of the time in the ways a frontier model is: a distractor's
  value (which occurs in the text, so no check can catch it), a reformatted value that does not
  occur in the text, malformed JSON (truncated, or wrapped in a Markdown fence), a field left out,
  an undeclared field added; and failed calls (errors, timeouts) with no answer.

The call log's latency grows with the document (the prompt is read before the first token) and
its token counts are about len(text) / 4. The gold set is other contracts from their own seed,
with the true values and their character offsets.

Every draw comes from `random.Random` instances seeded from `seed`, so the same arguments give
byte-identical files on any machine.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from ml.demo_data import _timestamps as call_timestamps

# party_a is the party that supplies (provider, licensor), party_b the one that pays, whichever
# the preamble names first; the values are strings exactly as they occur in the text.
FIELDS: tuple[str, ...] = (
    "party_a",
    "party_b",
    "effective_date",
    "governing_law",
    "termination_notice_days",
    "contract_value",
)
WORKFLOW = "contract_fields"
WORDS_PER_PAGE = 450  # a typeset legal page
PROMPT_OVERHEAD_TOKENS = 320  # the extraction prompt: instructions and the field list
PRICE_IN_USD_PER_MTOK, PRICE_OUT_USD_PER_MTOK = 3.0, 15.0
CALL_ERROR_RATE, CALL_TIMEOUT_RATE = 0.01, 0.005
CLIENT_TIMEOUT_MS = 60_000.0
# Of the teacher's answers to successful calls: which mistakes, and how often (about 4 % in all).
TEACHER_MISTAKES = {
    "distractor_value": 0.018,  # a value of the same kind from elsewhere in the text
    "value_not_in_text": 0.010,  # reformatted or normalised: not a substring of the document
    "malformed_json": 0.006,
    "missing_field": 0.003,
    "undeclared_field": 0.003,
}

NAME_HEADS = [
    "Acme", "Northwind", "Blue Harbor", "Crestline", "Silverleaf", "Ironbridge", "Pinecrest",
    "Redwood", "Halcyon", "Meridian", "Stonegate", "Brightwater", "Oakhurst", "Summit Ridge",
    "Lakeshore", "Granite Peak", "Evergreen", "Foxglove", "Kestrel", "Orion", "Tidewater",
    "Westfield", "Copperfield", "Harborview", "Juniper", "Larkspur", "Maplewood", "Nimbus",
    "Quarry Lane", "Riverbend", "Sterling", "Thornbury", "Vantage", "Willowbrook", "Zenith",
    "Ashford", "Bellweather", "Cobalt", "Driftwood", "Elmstead",
]  # fmt: skip
NAME_MIDDLES = [
    "", "", "", "Software", "Logistics", "Analytics", "Medical", "Capital", "Energy", "Foods",
    "Robotics", "Consulting", "Data Systems", "Manufacturing", "Biotech", "Media", "Freight",
]  # fmt: skip
NAME_SUFFIXES = [
    "Inc.", "LLC", "Ltd", "Limited", "GmbH", "Corporation", "Corp.", "S.A.", "B.V.", "plc",
    "Holdings, Inc.", "Partners LLP", "Group Ltd", "AG",
]  # fmt: skip
# Jurisdictions as a governing-law answer names them, and how the clause words them.
JURISDICTIONS = {
    "Delaware": "the State of Delaware",
    "New York": "the State of New York",
    "California": "the State of California",
    "Texas": "the State of Texas",
    "England and Wales": "England and Wales",
    "Ontario": "the Province of Ontario",
    "Germany": "the Federal Republic of Germany",
    "Ireland": "Ireland",
    "Singapore": "the Republic of Singapore",
    "Illinois": "the State of Illinois",
}
VENUES = ["New York County", "Wilmington", "London", "Toronto", "Munich", "Dublin", "Singapore",
          "San Francisco", "Chicago", "Austin"]  # fmt: skip
STATES_OF_INCORPORATION = ["Delaware", "Nevada", "New York", "California", "Texas", "Illinois"]
AGREEMENT_KINDS = [
    "Master Services Agreement", "Software License Agreement", "Supply Agreement",
    "Consulting Agreement", "Distribution Agreement", "Data Processing Agreement",
    "Maintenance and Support Agreement", "Reseller Agreement",
]  # fmt: skip
NUMBER_WORDS = {
    5: "five", 7: "seven", 10: "ten", 14: "fourteen", 15: "fifteen", 20: "twenty", 30: "thirty",
    45: "forty-five", 60: "sixty", 90: "ninety", 120: "one hundred twenty", 180: "one hundred eighty",
}  # fmt: skip
NOTICE_DAYS = [10, 14, 15, 20, 30, 45, 60, 90, 120, 180]
PAYMENT_DAYS = [15, 30, 45, 60]
CURE_DAYS = [5, 10, 14, 15, 30]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
MONTH_ABBR = ["Jan.", "Feb.", "Mar.", "Apr.", "May", "Jun.", "Jul.", "Aug.", "Sep.", "Oct.", "Nov.", "Dec."]


@dataclass
class Contract:
    document_id: str
    text: str
    values: dict[str, str | None]  # field -> the value as written in the text, or None (absent)
    spans: dict[str, tuple[int, int] | None]  # field -> the clause occurrence's offsets in text
    pages: int
    distractors: dict[str, list[str]] = field(default_factory=dict)  # same-kind values elsewhere


# -- values in their many formats -------------------------------------------------------------


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_date(rng: random.Random, d: date) -> str:
    style = rng.randrange(7)
    month = MONTHS[d.month - 1]
    return [
        f"{month} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        d.isoformat(),
        f"{d.month:02d}/{d.day:02d}/{d.year}",
        f"the {_ordinal(d.day)} day of {month}, {d.year}",
        f"{_ordinal(d.day)} {month} {d.year}",
        f"{MONTH_ABBR[d.month - 1]} {d.day}, {d.year}",
    ][style]


def format_amount(rng: random.Random, amount: int, currency: str) -> str:
    sign = {"USD": "$", "EUR": "€", "GBP": "£"}[currency]
    style = rng.randrange(5)
    if style == 0:
        return f"{sign}{amount:,}.00"
    if style == 1:
        return f"{sign}{amount:,}"
    if style == 2:
        return f"{currency} {amount:,}"
    if style == 3 and currency == "EUR":
        return f"EUR {amount:,}.00".replace(",", "X").replace(".", ",").replace("X", ".")
    return f"{amount:,} {currency}"


def _random_date(rng: random.Random) -> date:
    return date(2024, 1, 1) + timedelta(days=rng.randrange(3 * 365))


def company_name(rng: random.Random, avoid: str = "") -> tuple[str, str]:
    """(full name, the short name the contract calls it by after the preamble)."""
    while True:
        head = rng.choice(NAME_HEADS)
        name = " ".join(p for p in (head, rng.choice(NAME_MIDDLES), rng.choice(NAME_SUFFIXES)) if p)
        if not avoid.startswith(head):
            return name, head


# -- the clauses that carry values, and the ones that fill pages -------------------------------

PREAMBLES = [
    'This {kind} (the "Agreement") is entered into as of {eff} (the "Effective Date") by and between '
    '{a}, {an_inc_a} corporation ("{sa}"), and {b}, {an_inc_b} company ("{sb}").',
    "THIS {KIND} is made on {sign} BETWEEN: (1) {a}, a company organised under the laws of {inc_a} "
    '(the "{role_a}"); and (2) {b}, a company organised under the laws of {inc_b} (the "{role_b}"). '
    'This Agreement shall take effect on {eff} (the "Effective Date").',
    'The parties to this {kind} (the "Agreement") are {a} (hereinafter "{sa}") and {b} (hereinafter '
    '"{sb}"). It is dated {sign} and is effective from {eff}.',
    'This {kind} is effective {eff} and is made between {b} ("{sb}"), with offices in {venue2}, '
    'and {a} ("{sa}"), {an_inc_a} corporation.',
]
RECITALS = [
    "WHEREAS, {sa} is in the business of providing {service}; and WHEREAS, {sb} wishes to obtain such "
    "services on the terms set out below; NOW, THEREFORE, the parties agree as follows.",
    "Background. {sb} wishes to engage {sa} to provide {service}, and {sa} has agreed to do so on the "
    "terms of this Agreement.",
    "The parties have agreed that {sa} will supply {service} to {sb}, and record their agreement here.",
]
SERVICES = ["cloud hosting services", "software development services", "logistics services",
            "laboratory testing", "marketing analytics", "equipment maintenance", "payroll processing",
            "freight forwarding", "data annotation services", "facility management"]  # fmt: skip
FEE_CLAUSES = [
    "Fees. In consideration of the Services, {sb} shall pay {sa} a total fee of {value}. Invoices are "
    "payable within {pay} days of receipt.",
    "Consideration. The aggregate contract price is {value}, payable in instalments. Each invoice shall "
    "be paid no later than {pay} days after the invoice date.",
    'Payment. {sb} agrees to pay the sum of {value} (the "Contract Value") for the Services. Payment is '
    "due within {pay} days; late amounts bear interest at 1.5 % per month.",
]
FEE_CLAUSES_NO_VALUE = [
    "Fees. {sb} shall pay the fees set out in each Statement of Work at the rates then in force. Invoices "
    "are payable within {pay} days of receipt.",
    "Payment. Charges are calculated monthly on actual usage and are due within {pay} days.",
]
LIABILITY_CLAUSES = [
    "Limitation of Liability. Neither party's aggregate liability shall exceed {cap}, except for breach "
    "of confidentiality or wilful misconduct.",
    "Liability Cap. The total liability of each party under this Agreement is limited to {cap}.",
]
TERMINATION_CLAUSES = [
    "Termination. Either party may terminate this Agreement for convenience upon {notice} prior written "
    "notice to the other party. Either party may terminate for material breach if the breach is not "
    "cured within {cure} days of notice.",
    "Term and Termination. This Agreement continues until terminated. A party may end it at any time by "
    "giving the other party not less than {notice} written notice. If a party commits a material "
    "breach, the other may terminate unless the breach is remedied within {cure} days.",
    "Termination for Convenience. {sb} may terminate this Agreement without cause by providing {notice} "
    "advance notice in writing to {sa}. Breaches must be cured within {cure} days.",
]
TERMINATION_CLAUSES_NO_NOTICE = [
    "Term. This Agreement runs for a fixed term of three years and may be terminated only for material "
    "breach not cured within {cure} days of notice.",
]
NOTICE_FORMS = ["{n} days'", "{word} ({n}) days'", "{n} calendar days'", "at least {n} days'"]
LAW_CLAUSES = [
    "Governing Law. This Agreement shall be governed by and construed in accordance with the laws of "
    "{law_long}, without regard to its conflict of laws principles. The courts of {venue} shall have "
    "exclusive jurisdiction.",
    "Applicable Law and Jurisdiction. The laws of {law_long} govern this Agreement. Any dispute shall be "
    "submitted to the courts located in {venue}.",
    "Choice of Law. This Agreement is subject to the laws of {law_long}. Each party submits to the "
    "non-exclusive jurisdiction of the courts sitting in {venue}.",
]
SIGNATURES = [
    "IN WITNESS WHEREOF, the parties have executed this Agreement on {sign}.\n\n{a}\nBy: ____________\n"
    "Name: {person_a}\nTitle: Chief Executive Officer\n\n{b}\nBy: ____________\nName: {person_b}\n"
    "Title: General Counsel",
    "Signed for and on behalf of {a} by {person_a}, Director, on {sign}.\nSigned for and on behalf of {b} "
    "by {person_b}, Authorised Signatory.",
]
PEOPLE = ["Maria Lopez", "James Chen", "Aisha Khan", "Tom Becker", "Sofia Rossi", "Daniel Okafor",
          "Emma Dubois", "Lars Nilsson", "Priya Nair", "Hannah Weber", "Lucas Silva", "Mei Tanaka"]  # fmt: skip
# Boilerplate that fills the pages: each a heading and paraphrases, with a few slots.
BOILERPLATE = {
    "Confidentiality": [
        "Each party shall keep the other party's Confidential Information in confidence, use it only for "
        "the purposes of this Agreement, and disclose it only to employees and advisers who need to know "
        "it and are bound by duties of confidentiality no less protective than these.",
        "The receiving party shall protect Confidential Information with at least the care it uses for its "
        "own information of a similar nature, and never less than reasonable care. These obligations "
        "survive for five years after this Agreement ends.",
    ],
    "Warranties": [
        "{sa} warrants that the Services will be performed with reasonable skill and care, by suitably "
        "qualified personnel, and in accordance with good industry practice.",
        "Each party represents that it has full power and authority to enter into this Agreement and that "
        "doing so does not breach any other agreement binding on it.",
    ],
    "Indemnification": [
        "{sa} shall indemnify {sb} against all losses, damages and reasonable costs arising from any claim "
        "that the Deliverables infringe the intellectual property rights of a third party.",
        "Each party shall defend and hold harmless the other from third-party claims caused by its gross "
        "negligence or wilful misconduct, subject to prompt notice of the claim.",
    ],
    "Intellectual Property": [
        "All intellectual property rights in the Deliverables vest in {sb} upon payment in full. {sa} "
        "retains its pre-existing materials and grants {sb} a perpetual licence to use them.",
        "Nothing in this Agreement transfers ownership of either party's background intellectual property.",
    ],
    "Force Majeure": [
        "Neither party is liable for a delay or failure caused by events beyond its reasonable control, "
        "including fire, flood, epidemic, war, strikes or failure of public utilities, provided it notifies "
        "the other party promptly.",
    ],
    "Assignment": [
        "Neither party may assign or transfer this Agreement without the prior written consent of the other "
        "party, which shall not be unreasonably withheld, except to a successor of its whole business.",
    ],
    "Notices": [
        "Notices shall be in writing and delivered by hand, by courier, or by email with confirmation of "
        "receipt, to the addresses each party designates in writing from time to time.",
        "Any notice under this Agreement is effective on receipt and must be sent to the legal department of "
        "the receiving party.",
    ],
    "Data Protection": [
        "Each party shall comply with applicable data protection laws. Where {sa} processes personal data "
        "on behalf of {sb}, it shall do so only on documented instructions and keep the data secure.",
    ],
    "Insurance": [
        "{sa} shall maintain, at its own cost, professional liability and general liability insurance with "
        "reputable insurers for the term of this Agreement and for two years after it.",
    ],
    "Audit": [
        "{sb} may, on reasonable notice and not more than once a year, audit the records of {sa} relating to "
        "the Services to verify compliance with this Agreement.",
    ],
    "Non-Solicitation": [
        "During the term and for twelve months after it, neither party shall solicit for employment any "
        "employee of the other party who was involved in the Services.",
    ],
    "Entire Agreement": [
        "This Agreement is the entire agreement between the parties and supersedes all prior discussions, "
        "proposals and agreements relating to its subject matter.",
    ],
    "Severability": [
        "If any provision of this Agreement is held invalid, the remaining provisions remain in full force, "
        "and the invalid provision shall be replaced by a valid one closest to its intent.",
    ],
    "Service Levels": [
        "{sa} shall meet the service levels in the Service Level Schedule. Repeated failure to meet them "
        "entitles {sb} to service credits, which are its sole remedy for such failure.",
        "Availability of the Services shall be at least 99.5 % in each calendar month, excluding scheduled "
        "maintenance announced in advance.",
    ],
    "Subcontracting": [
        "{sa} may subcontract parts of the Services with the consent of {sb}, but remains responsible for "
        "the acts and omissions of its subcontractors as for its own.",
    ],
    "Dispute Resolution": [
        "The parties shall first try to resolve any dispute through good-faith negotiation between senior "
        "executives before starting proceedings.",
    ],
}


def _notice_text(rng: random.Random, n: int) -> str:
    form = rng.choice(NOTICE_FORMS if n in NUMBER_WORDS else [f for f in NOTICE_FORMS if "{word}" not in f])
    return form.format(n=n, word=NUMBER_WORDS.get(n, ""))


def make_contract(rng: random.Random, document_id: str, *, max_pages: int = 6) -> Contract:
    """One contract: the value clauses and a shuffled body of boilerplate filling 1..max_pages pages."""
    pages = rng.randint(1, max_pages)
    kind = rng.choice(AGREEMENT_KINDS)
    a, sa = company_name(rng)
    b, sb = company_name(rng, avoid=a)
    eff = _random_date(rng)
    sign = eff - timedelta(days=rng.randrange(0, 30))
    law = rng.choice(sorted(JURISDICTIONS))
    venue = rng.choice(VENUES)
    currency = rng.choice(["USD", "USD", "EUR", "GBP"])
    value = rng.choice([12_500, 48_000, 75_000, 125_000, 250_000, 480_000, 1_200_000, 3_750_000])
    value += rng.randrange(0, 20) * 500
    has_value, has_notice = rng.random() > 0.12, rng.random() > 0.1
    notice = rng.choice(NOTICE_DAYS)
    slots = {
        "kind": kind,
        "KIND": kind.upper(),
        "a": a,
        "b": b,
        "sa": sa,
        "sb": sb,
        "role_a": rng.choice(["Supplier", "Provider", "Licensor", "Consultant"]),
        "role_b": rng.choice(["Customer", "Client", "Licensee", "Company"]),
        "inc_a": rng.choice(STATES_OF_INCORPORATION),
        "inc_b": rng.choice(STATES_OF_INCORPORATION),
    }
    for side in ("a", "b"):
        state = slots[f"inc_{side}"]
        slots[f"an_inc_{side}"] = f"{'an' if state[0] in 'AEIOU' else 'a'} {state}"
    slots |= {
        "eff": format_date(rng, eff),
        "sign": format_date(rng, sign),
        "venue": venue,
        "venue2": rng.choice(VENUES),
        "law_long": JURISDICTIONS[law],
        "service": rng.choice(SERVICES),
        "value": format_amount(rng, value, currency),
        "cap": format_amount(rng, value * rng.choice([1, 2]) if rng.random() < 0.5 else 1_000_000, currency),
        "pay": rng.choice(PAYMENT_DAYS),
        "cure": rng.choice(CURE_DAYS),
        "notice": _notice_text(rng, notice),
        "person_a": rng.choice(PEOPLE),
        "person_b": rng.choice(PEOPLE),
    }
    values: dict[str, str | None] = {
        "party_a": a,
        "party_b": b,
        "effective_date": slots["eff"],
        "governing_law": law,  # every JURISDICTIONS wording contains its short name
        "termination_notice_days": str(notice) if has_notice else None,
        "contract_value": slots["value"] if has_value else None,
    }
    # Where each value's own clause puts it: a marker in the template is replaced by the value,
    # so the gold offsets point at the occurrence a reader would cite, not at a look-alike.
    marked = dict(slots)
    marked["eff"] = "\x00eff\x00"
    marked["value"] = "\x00value\x00"
    marked["law_long"] = "\x00law\x00"
    marked["notice"] = slots["notice"].replace(str(notice), "\x00notice\x00", 1)

    preamble = rng.choice(PREAMBLES)
    sections = [
        ("", rng.choice(FEE_CLAUSES) if has_value else rng.choice(FEE_CLAUSES_NO_VALUE)),
        ("", rng.choice(TERMINATION_CLAUSES) if has_notice else rng.choice(TERMINATION_CLAUSES_NO_NOTICE)),
        ("", rng.choice(LAW_CLAUSES)),
        ("", rng.choice(LIABILITY_CLAUSES)),
    ]
    target_words = pages * WORDS_PER_PAGE
    words = sum(len(t.split()) for _, t in sections) + len(preamble.split()) + 80
    headings = sorted(BOILERPLATE)
    while words < target_words:
        heading = rng.choice(headings)
        paragraph = rng.choice(BOILERPLATE[heading])
        others = [p for p in BOILERPLATE[heading] if p != paragraph]
        if others and rng.random() < 0.5:  # a second paragraph under the heading, as long sections have
            paragraph += " " + rng.choice(others)
        sections.append((heading, paragraph))
        words += len(paragraph.split())
    rng.shuffle(sections)

    parts = [kind.upper(), preamble.format(**marked), rng.choice(RECITALS).format(**marked)]
    for number, (heading, body) in enumerate(sections, start=1):
        text = body.format(**marked)
        parts.append(f"{number}. {heading + '. ' if heading else ''}{text}")
    parts.append(rng.choice(SIGNATURES).format(**marked))
    raw = "\n\n".join(parts)

    # Replace the markers, recording where each value landed (first marker only: a clause
    # never repeats, but the preamble may name the effective date in the first sentence).
    spans: dict[str, tuple[int, int] | None] = dict.fromkeys(FIELDS)
    text = []
    replacements = {
        "eff": ("effective_date", slots["eff"]),
        "value": ("contract_value", slots["value"]),
        "law": ("governing_law", JURISDICTIONS[law]),
        "notice": ("termination_notice_days", str(notice)),
    }
    out_len = 0
    pieces = raw.split("\x00")
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            text.append(piece)
            out_len += len(piece)
            continue
        name, filled = replacements[piece]
        if spans[name] is None:
            if name == "governing_law":
                inner = filled.find(values["governing_law"])
                spans[name] = (out_len + inner, out_len + inner + len(values["governing_law"]))
            else:
                spans[name] = (out_len, out_len + len(filled))
        text.append(filled)
        out_len += len(filled)
    document = "".join(text)
    for name in ("party_a", "party_b"):
        start = document.find(values[name])
        spans[name] = (start, start + len(values[name]))
    for name in FIELDS:
        if values[name] is None:
            spans[name] = None
    look_alikes = {
        "effective_date": [slots["sign"]],
        "governing_law": [venue, slots["inc_a"], slots["inc_b"]],
        "termination_notice_days": [str(slots["pay"]), str(slots["cure"])],
        "contract_value": [slots["cap"]],
        "party_a": [b],
        "party_b": [a],
    }
    distractors = {k: [v for v in vs if v != values[k] and v in document] for k, vs in look_alikes.items()}
    return Contract(document_id, document, values, spans, pages, distractors)


# -- the teacher's answer, and the call around it -----------------------------------------------


def _reformatted(rng: random.Random, name: str, value: str) -> str:
    """The value as a model rewrites it: normalised, so no longer a substring of the text."""
    if name == "effective_date":
        return value.upper() if not value[0].isdigit() else value.replace("-", "/") + " (effective)"
    if name in ("party_a", "party_b"):
        return value.upper() if rng.random() < 0.5 else value.replace(" ", "  ")
    if name == "termination_notice_days":
        return f"{value} days"
    if name == "contract_value":
        return value.replace(",", "")
    return f"the laws of {value}" if not value.startswith("the ") else value.upper()


def teacher_answer(rng: random.Random, contract: Contract) -> tuple[str, str]:
    """(response_json, what kind of answer it is: "correct" or a TEACHER_MISTAKES key)."""
    answer = dict(contract.values)
    u, mistake = rng.random(), "correct"
    for kind, rate in TEACHER_MISTAKES.items():
        if u < rate:
            mistake = kind
            break
        u -= rate
    present = [f for f in FIELDS if answer[f] is not None]
    if mistake == "distractor_value":
        name = rng.choice([f for f in present if contract.distractors.get(f)])
        answer[name] = rng.choice(contract.distractors[name])
    elif mistake == "value_not_in_text":
        name = rng.choice(present)
        answer[name] = _reformatted(rng, name, answer[name])
        if answer[name] in contract.text:  # rare: the rewrite happens to occur; make sure it does not
            answer[name] += " (as amended)"
    elif mistake == "missing_field":
        del answer[rng.choice(FIELDS)]
    elif mistake == "undeclared_field":
        answer["contract_type"] = contract.text.split("\n", 1)[0].title()
    body = json.dumps(answer, ensure_ascii=False)
    if mistake == "malformed_json":
        body = body[: rng.randrange(10, len(body) - 2)] if rng.random() < 0.6 else f"```json\n{body}\n```"
    return body, mistake


def _call_record(rng: random.Random, contract: Contract, response_json: str) -> dict:
    """status, error, retries, response_json, latency_ms, tokens_in/out, cost_usd of one call."""
    failed = {"tokens_in": PROMPT_OVERHEAD_TOKENS + math.ceil(len(contract.text) / 4), "tokens_out": 0}
    failed |= {"cost_usd": 0.0, "response_json": None, "retries": rng.choice([1, 2, 3])}
    u = rng.random()
    if u < CALL_ERROR_RATE:
        error = rng.choice(["RateLimitError", "ServerError"])
        return failed | {"status": "error", "error": error, "latency_ms": rng.uniform(2200, 2900)}
    if u < CALL_ERROR_RATE + CALL_TIMEOUT_RATE:
        latency_ms = CLIENT_TIMEOUT_MS + rng.uniform(0, 50)
        return failed | {"status": "timeout", "error": "Timeout", "latency_ms": latency_ms}
    tokens_out = math.ceil(len(response_json) / 4) + rng.randrange(3)
    # Time to first token grows with the prompt, then the answer streams out.
    latency_ms = 450.0 + 0.35 * failed["tokens_in"] + 18.0 * tokens_out
    latency_ms *= rng.lognormvariate(0.0, 0.3)
    if rng.random() < 0.03:
        latency_ms *= rng.uniform(2.0, 5.0)  # provider congestion
    retries = rng.choices([0, 1], [97, 3])[0]
    cost_usd = (failed["tokens_in"] * PRICE_IN_USD_PER_MTOK + tokens_out * PRICE_OUT_USD_PER_MTOK) / 1e6
    answered = {"response_json": response_json, "tokens_out": tokens_out, "cost_usd": cost_usd}
    return (
        failed
        | answered
        | {"status": "ok", "error": None, "retries": retries, "latency_ms": latency_ms + retries * 1000.0}
    )


def make_contracts(rng: random.Random, n: int, prefix: str, *, max_pages: int) -> list[Contract]:
    return [make_contract(rng, f"{prefix}-{i:05d}", max_pages=max_pages) for i in range(n)]


def generate(
    out_dir: Path,
    *,
    n_documents: int = 2000,
    n_gold: int = 200,
    seed: int = 42,
    max_pages: int = 6,
    workflow: str = WORKFLOW,
    model: str = "frontier-large",
    model_version: str = "2026-06-01",
    days: int = 90,
    start: date | None = None,
) -> dict:
    """Write documents.jsonl, call_log.jsonl and gold.jsonl into out_dir; return their paths and counts.

    documents.jsonl: document_id, text. call_log.jsonl: one call per document (request_text,
    response_json, status, latency_ms, tokens_in/out, cost_usd, ...). gold.jsonl: other documents
    with the true `values` (field -> string or null) and `spans` (field -> [start, end] or null).
    """
    given = {"n_documents": n_documents, "n_gold": n_gold, "max_pages": max_pages, "days": days}
    wrong = [
        f"{k}={v}"
        for k, v in given.items()
        if v < (0 if k == "n_gold" else 1) or (k == "max_pages" and v > 6)
    ]
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)}: pass n_documents >= 1, n_gold >= 0, max_pages 1..6 (a contract's pages) "
            "and days >= 1 (the log's span)."
        )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    out_dir, start = Path(out_dir), start or date(2026, 8, 1)
    # Separate streams, so that changing n_gold leaves the documents and the call log as they were.
    doc_rng, call_rng, gold_rng = (random.Random(f"{seed}:{s}") for s in ("documents", "calls", "gold"))

    contracts = make_contracts(doc_rng, n_documents, "doc", max_pages=max_pages)
    stamps = call_timestamps(call_rng, n_documents, start, days)  # the ticket log's business hours
    counts = {"ok": 0, "error": 0, "timeout": 0}
    mistakes = dict.fromkeys(["correct", *TEACHER_MISTAKES], 0)
    documents_path, call_log_path, gold_path = (
        out_dir / "documents.jsonl",
        out_dir / "call_log.jsonl",
        out_dir / "gold.jsonl",
    )
    with (
        documents_path.open("w", encoding="utf-8", newline="\n") as docs,
        call_log_path.open("w", encoding="utf-8", newline="\n") as calls,
    ):
        for contract, ts in zip(contracts, stamps):
            docs.write(json.dumps({"document_id": contract.document_id, "text": contract.text}) + "\n")
            response_json, mistake = teacher_answer(call_rng, contract)
            rec = _call_record(call_rng, contract, response_json)
            counts[rec["status"]] += 1
            if rec["status"] == "ok":
                mistakes[mistake] += 1
            call = {"call_id": str(uuid.UUID(int=call_rng.getrandbits(128), version=4)), "ts": ts}
            row = call | {
                "workflow": workflow,
                "document_id": contract.document_id,
                "request_text": contract.text,
            }
            row |= {"model": model, "model_version": model_version, **rec}
            row["latency_ms"], row["cost_usd"] = round(rec["latency_ms"], 1), round(rec["cost_usd"], 8)
            calls.write(json.dumps(row, ensure_ascii=False) + "\n")

    gold = make_contracts(gold_rng, n_gold, "gold", max_pages=max_pages)
    with gold_path.open("w", encoding="utf-8", newline="\n") as f:
        for c in gold:
            spans = {k: list(v) if v else None for k, v in c.spans.items()}
            f.write(
                json.dumps(
                    {"document_id": c.document_id, "text": c.text, "values": c.values, "spans": spans},
                    ensure_ascii=False,
                )
                + "\n"
            )
    return {
        "documents_path": str(documents_path),
        "call_log_path": str(call_log_path),
        "gold_path": str(gold_path),
        "n_documents": n_documents,
        "n_ok": counts["ok"],
        "n_error": counts["error"],
        "n_timeout": counts["timeout"],
        "n_gold": n_gold,
        "fields": list(FIELDS),
        "teacher_answers": mistakes,
        "mean_pages": round(sum(c.pages for c in contracts) / len(contracts), 2),
    }


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
