"""The cost ledger: an append-only book of what the platform costs, with Decimal money.

Every entry says what was used (quantity x unit at a unit price), for which workflow or model,
in which cost category, and where the fact came from (a DAG task try, a person, the system).
Three rules hold for every entry:

- Append-only. Nothing is updated or deleted; the database itself refuses UPDATE and DELETE
  (triggers created by the migration), so not even a stray SQL session can rewrite history.
  A mistake is corrected by a reversing entry (`Ledger.reverse`).
- Idempotent. Each entry carries an idempotency key. Appending the same key with the same
  payload returns the entry already there; the same key with another payload is an
  IdempotencyConflict. So a retried task, a re-delivered listener call or a re-flushed spool
  can never book a cost twice.
- Exact. Quantities, prices and amounts are Decimal, stored as NUMERIC on PostgreSQL and as
  decimal text on SQLite (whose NUMERIC would round through a float). amount = quantity x
  unit price, rounded half-even to 8 places, computed here in Python.

SQLite is the default (one file, WAL mode, concurrent writers wait on a busy timeout); the
same code runs on PostgreSQL in production. The schema is created and upgraded by Alembic
migrations kept in ml/costs/migrations/ and run when a Ledger opens the database.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
import random
import sqlite3
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool


class Category(enum.StrEnum):
    """Where post-training money goes (the seed's list), plus the frontier API baseline."""

    DATA_CURATION = "data_curation"
    EVALUATION = "evaluation"
    TRAINING_COMPUTE = "training_compute"
    VERSIONING_STORAGE = "versioning_storage"
    KEEPING_CURRENT = "keeping_current"  # re-distillation when the base model or teacher moves
    SERVING = "serving"  # self-hosted inference of the student
    PEOPLE = "people"
    TOOLING = "tooling"
    FRONTIER_API = "frontier_api"  # the baseline the post-trained model has to beat


CATEGORIES = tuple(c.value for c in Category)
SOURCE_KINDS = ("task", "person", "system")

QUANTITY_PLACES = Decimal("1e-9")
PRICE_PLACES = Decimal("1e-8")
AMOUNT_PLACES = Decimal("1e-8")
# NUMERIC(18, 8) holds up to 10 digits before the point: ten billion per entry is plenty.
MAX_AMOUNT = Decimal("1e10")
MAX_QUANTITY = Decimal("1e15")

VERSION_TABLE = "ledger_schema_version"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises concurrent migrations.
_PG_MIGRATION_LOCK = 0x6D6C6F70735F6C67


class LedgerError(RuntimeError):
    """A ledger operation cannot be done; the message says why and what to do instead."""


class IdempotencyConflict(LedgerError):
    """The idempotency key is taken by an entry with a different payload."""


class LedgerTampered(LedgerError):
    """Stored entries no longer match their own payload hash: the ledger was edited outside the code."""


@dataclass(frozen=True)
class Tampered:
    """One entry whose stored facts disagree with what was booked, and how."""

    id: int
    idempotency_key: str
    problem: str


# Column types -----------------------------------------------------------------------------


class ExactDecimal(sa.types.TypeDecorator):
    """NUMERIC(p, s) on PostgreSQL; decimal text on SQLite, which has no exact decimal type."""

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int):
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.places = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(48))
        return dialect.type_descriptor(sa.Numeric(self.impl.precision, self.impl.scale, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = Decimal(value).quantize(self.places, rounding=ROUND_HALF_EVEN)
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(value).quantize(self.places)


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware in Python, UTC in the database (naive UTC text on SQLite)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no timezone; ledger times must be timezone-aware (UTC).")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# The current shape of the table. The migrations in ml/costs/migrations/ are its history;
# tests/unit/test_ledger.py checks that the two agree.
metadata = sa.MetaData()
ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("booked_at", UTCDateTime, nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("category", sa.String(32), nullable=False),
    sa.Column("workflow", sa.String(64), nullable=False),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("resource", sa.String(200), nullable=False),
    sa.Column("quantity", ExactDecimal(24, 9), nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("unit_price", ExactDecimal(18, 8), nullable=False),
    sa.Column("amount", ExactDecimal(18, 8), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("source_kind", sa.String(16), nullable=False),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("reverses_id", sa.Integer, sa.ForeignKey("ledger_entries.id"), nullable=True, unique=True),
    sa.Index("ix_ledger_entries_workflow_occurred_at", "workflow", "occurred_at"),
    sa.Index("ix_ledger_entries_occurred_at", "occurred_at"),
)


# Entries ----------------------------------------------------------------------------------


def _decimal(name: str, value) -> Decimal:
    if isinstance(value, float):
        raise TypeError(
            f"{name}={value!r} is a float; money and quantities are Decimal: "
            f"pass Decimal('{value}') or '{value}'."
        )
    if isinstance(value, bool):
        raise TypeError(f"{name}={value!r} is not a number.")
    try:
        out = Decimal(value) if isinstance(value, (int, str, Decimal)) else None
    except InvalidOperation:
        out = None
    if out is None or not out.is_finite():
        raise ValueError(f"{name}={value!r} is not a finite decimal number.")
    return out


def amount_of(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """quantity x unit price, exactly, then rounded half-even to 8 places (no bias over many entries)."""
    with localcontext() as ctx:
        ctx.prec = 60  # wide enough that the product is exact before the single rounding
        return (quantity * unit_price).quantize(AMOUNT_PLACES, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class NewEntry:
    """What to book. Validated and normalised on construction (Decimals quantised, time in UTC)."""

    idempotency_key: str
    occurred_at: datetime
    category: str
    workflow: str
    resource: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    source_kind: str
    source: str
    currency: str = "USD"
    model: str | None = None
    description: str = ""

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        key = self.idempotency_key
        if not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise ValueError(f"idempotency_key={key!r} must be a non-empty string of at most 200 characters.")
        if self.category not in CATEGORIES:
            raise ValueError(f"category={self.category!r} is not one of {', '.join(CATEGORIES)}.")
        if self.source_kind not in SOURCE_KINDS:
            raise ValueError(f"source_kind={self.source_kind!r} is not one of {', '.join(SOURCE_KINDS)}.")
        for name, limit in (("workflow", 64), ("resource", 200), ("unit", 32), ("source", 500)):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise ValueError(
                    f"{name}={value!r} must be a non-empty string of at most {limit} characters."
                )
        if self.model is not None and (not isinstance(self.model, str) or len(self.model) > 200):
            raise ValueError(f"model={self.model!r} must be None or a string of at most 200 characters.")
        if not (
            isinstance(self.currency, str)
            and len(self.currency) == 3
            and self.currency.isalpha()
            and self.currency.isupper()
        ):
            raise ValueError(f"currency={self.currency!r} must be a 3-letter ISO code such as USD.")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.tzinfo is None:
            raise ValueError(f"occurred_at={self.occurred_at!r} must be a timezone-aware datetime (use UTC).")
        put("occurred_at", self.occurred_at.astimezone(timezone.utc))
        put("category", str(Category(self.category)))
        put("description", str(self.description or ""))
        quantity, unit_price = _decimal("quantity", self.quantity), _decimal("unit_price", self.unit_price)
        # Bounds first: quantising 1e30 to 9 places overflows Decimal's precision (InvalidOperation).
        if abs(quantity) >= MAX_QUANTITY or abs(unit_price) >= MAX_AMOUNT:
            raise ValueError(
                f"quantity {self.quantity} x unit_price {self.unit_price} is too large for one entry "
                f"(quantity below {MAX_QUANTITY:,}, amount below {MAX_AMOUNT:,}); split it."
            )
        quantity = quantity.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_EVEN)
        unit_price = unit_price.quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN)
        # Negative quantities only come from Ledger.reverse; everything booked directly is a cost.
        if unit_price < 0:
            raise ValueError(
                f"unit_price={unit_price} is negative; book costs, and correct them with Ledger.reverse()."
            )
        if abs(quantity) >= MAX_QUANTITY or abs(amount_of(quantity, unit_price)) >= MAX_AMOUNT:
            raise ValueError(
                f"quantity {quantity} x unit_price {unit_price} is too large for one entry "
                f"(amount must stay below {MAX_AMOUNT:,}); split it."
            )
        put("quantity", quantity)
        put("unit_price", unit_price)

    @property
    def amount(self) -> Decimal:
        return amount_of(self.quantity, self.unit_price)

    def to_json(self) -> dict:
        """A JSON-safe dict (Decimals as strings, time as ISO 8601) that from_json reads back."""
        out = asdict(self)
        out.update(
            occurred_at=self.occurred_at.isoformat(),
            quantity=str(self.quantity),
            unit_price=str(self.unit_price),
        )
        return out

    @classmethod
    def from_json(cls, raw: dict) -> "NewEntry":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in names}
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        return cls(**values)


def payload_sha256(entry: NewEntry, reverses_id: int | None = None) -> str:
    """The digest an idempotent re-append is compared by: every fact of the entry, canonically."""
    doc = entry.to_json() | {"reverses_id": reverses_id}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A booked entry, as stored."""

    id: int
    idempotency_key: str
    booked_at: datetime
    occurred_at: datetime
    category: str
    workflow: str
    model: str | None
    resource: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    currency: str
    source_kind: str
    source: str
    description: str
    payload_sha256: str
    reverses_id: int | None


# Totals can be grouped by any of these; month and day are the UTC month/day of occurred_at.
GROUP_BY = ("month", "day", "category", "workflow", "model", "resource", "unit", "currency", "source_kind")


def _group_value(entry_row, name: str):
    if name == "month":
        return entry_row.occurred_at.strftime("%Y-%m")
    if name == "day":
        return entry_row.occurred_at.date().isoformat()
    return getattr(entry_row, name)


# The ledger --------------------------------------------------------------------------------


class Ledger:
    """An append-only cost ledger at a SQLAlchemy URL (sqlite:///path.db or postgresql://...).

    Opening a Ledger creates or upgrades the schema. Use it as a context manager, or call
    close(), to release its connections.
    """

    def __init__(self, url: str):
        self.url = url
        self._engine = _make_engine(url)
        try:
            self.migrate()
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({sa.make_url(self.url).render_as_string(hide_password=True)!r})"

    # Schema ------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration; safe to run from many processes.

        Alembic, not hand-rolled DDL: it is already installed (Airflow and MLflow use it), its
        version table tells operators which schema a database has, and the next change to this
        table (SQLite needs a table rebuild for most ALTERs) is a batch operation away. The
        trigger SQL is per dialect either way, so Alembic costs nothing extra there.
        """
        head = _migration_head()
        with self._engine.connect() as conn:  # fast path: no lock when the schema is current
            if _current_revision(conn) == head:
                return
        from alembic import command
        from alembic.config import Config

        # One migrator at a time: SQLite's BEGIN IMMEDIATE takes the write lock, PostgreSQL
        # takes an advisory lock for the transaction. Everything runs in this one transaction.
        with self._engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            current = _current_revision(conn)
            if current == head:
                return
            if current is not None and current not in _migration_revisions():
                raise LedgerError(
                    f"{self!r} has schema revision {current!r}, newer than this code knows (head {head!r}); "
                    "upgrade the mlops package before writing to this ledger."
                )
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = conn
            config.attributes["version_table"] = VERSION_TABLE
            command.upgrade(config, "head")

    # Writing -----------------------------------------------------------------------------

    def append(self, entry: NewEntry) -> Entry:
        """Book an entry; idempotent by its key (see the module docstring)."""
        if not isinstance(entry, NewEntry):
            raise TypeError(f"append() takes a NewEntry, got {type(entry).__name__}.")
        return self._insert(entry, reverses_id=None)

    def reverse(self, entry_id: int, reason: str, source: str, source_kind: str = "person") -> Entry:
        """Book the correcting entry that cancels entry_id (negative quantity, same price).

        The reversal keeps the original's occurred_at, so monthly totals are corrected in the
        month the cost happened; booked_at says when the correction was made. An entry can be
        reversed once; a wrong amount is fixed by reversing it and appending the right one
        under a new idempotency key.
        """
        if not reason or not reason.strip():
            raise ValueError("reverse() needs a reason; it is kept in the reversing entry's description.")
        original = self.get(entry_id)
        if original.reverses_id is not None:
            raise LedgerError(
                f"Entry {entry_id} is itself the reversal of entry {original.reverses_id}; to restore "
                "that cost, append it again under a new idempotency key."
            )
        correction = NewEntry(
            idempotency_key=f"reversal-of:{entry_id}",
            occurred_at=original.occurred_at,
            category=original.category,
            workflow=original.workflow,
            model=original.model,
            resource=original.resource,
            quantity=-original.quantity,
            unit=original.unit,
            unit_price=original.unit_price,
            currency=original.currency,
            source_kind=source_kind,
            source=source,
            description=f"reverses entry {entry_id}: {reason.strip()}",
        )
        try:
            return self._insert(correction, reverses_id=entry_id)
        except IdempotencyConflict:
            existing = self._by_key(correction.idempotency_key)
            raise IdempotencyConflict(
                f"Entry {entry_id} was already reversed by entry {existing.id} ({existing.description!r}); "
                "a reversal is final. Append a new entry for the right amount instead."
            ) from None

    def _insert(self, entry: NewEntry, reverses_id: int | None) -> Entry:
        digest = payload_sha256(entry, reverses_id)
        for attempt in range(8):
            try:
                # BEGIN IMMEDIATE on SQLite: the read-then-insert below runs under the write
                # lock, so two writers of one key cannot both miss it. PostgreSQL lets both
                # try; the unique index stops the second, handled below.
                with self._engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
                    existing = conn.execute(
                        sa.select(ledger_entries).where(
                            ledger_entries.c.idempotency_key == entry.idempotency_key
                        )
                    ).first()
                    if existing is not None:
                        return _same_or_conflict(_entry(existing), digest)
                    row = entry.to_json() | {
                        "occurred_at": entry.occurred_at,
                        "quantity": entry.quantity,
                        "unit_price": entry.unit_price,
                        "amount": entry.amount,
                        "booked_at": datetime.now(timezone.utc),
                        "payload_sha256": digest,
                        "reverses_id": reverses_id,
                    }
                    result = conn.execute(ledger_entries.insert().values(**row))
                    return Entry(
                        id=result.inserted_primary_key[0],
                        **{k: row[k] for k in (f.name for f in fields(Entry)) if k != "id"},
                    )
            except IntegrityError:
                existing = self._by_key(entry.idempotency_key, missing_ok=True)
                if existing is not None:  # a concurrent writer booked the same key first
                    return _same_or_conflict(existing, digest)
                raise
            except OperationalError as exc:
                # The busy timeout already waited; a lock error here is rare (e.g. the WAL
                # switch of a brand-new file), so back off and try again before giving up.
                if not _is_lock_error(exc) or attempt == 7:
                    raise
                time.sleep(0.05 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    # Verifying ---------------------------------------------------------------------------

    def verify(self) -> list[Tampered]:
        """Every entry whose stored facts disagree with its payload hash or with itself.

        The database refuses UPDATE, DELETE and REPLACE; this catches what goes around the
        database (a dropped trigger, a hand-edited file): each entry's facts are hashed again
        and compared with the digest booked with them, its amount recomputed from quantity x
        unit price, and a reversal checked against the entry it reverses.
        """
        with self._engine.connect() as conn:
            rows = [_entry(r) for r in conn.execute(sa.select(ledger_entries).order_by(ledger_entries.c.id))]
        by_id = {e.id: e for e in rows}
        out = []
        for e in rows:
            problem = _stored_problem(e, by_id)
            if problem:
                out.append(Tampered(e.id, e.idempotency_key, problem))
        # SQLite numbers rows max(id)+1 and a rolled-back insert takes no number, so a hole in the
        # ids is a deleted entry. (PostgreSQL's sequence skips numbers on rollback: no such check.)
        if self._engine.dialect.name == "sqlite":
            previous = 0
            for e in rows:
                if e.id > previous + 1:
                    missing = f"{previous + 1}" if e.id == previous + 2 else f"{previous + 1}..{e.id - 1}"
                    out.append(
                        Tampered(
                            previous + 1,
                            "",
                            f"entries {missing} are missing before entry {e.id}: deleted outside the ledger",
                        )
                    )
                previous = e.id
        return sorted(out, key=lambda t: t.id)

    def check_intact(self) -> None:
        """Raise LedgerTampered naming the entries when verify() finds any (reports and exports call it)."""
        bad = self.verify()
        if bad:
            named = "; ".join(f"#{t.id} ({t.problem})" for t in bad[:5]) + (
                f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            )
            raise LedgerTampered(
                f"{len(bad)} ledger entr{'y was' if len(bad) == 1 else 'ies were'} changed outside "
                f"the ledger: {named}. Nothing is reported from it; run `mlops costs verify`, "
                "restore the ledger from a backup, and re-book from the spool and the sources."
            )

    # Reading -----------------------------------------------------------------------------

    def get(self, entry_id: int) -> Entry:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(ledger_entries).where(ledger_entries.c.id == entry_id)).first()
        if row is None:
            raise LedgerError(f"No ledger entry with id {entry_id} in {self!r}.")
        return _entry(row)

    def find(self, idempotency_key: str) -> Entry | None:
        """The entry booked under this key, or None."""
        return self._by_key(idempotency_key, missing_ok=True)

    def _by_key(self, key: str, missing_ok: bool = False) -> Entry | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(ledger_entries).where(ledger_entries.c.idempotency_key == key)
            ).first()
        if row is None and not missing_ok:
            raise LedgerError(f"No ledger entry with idempotency key {key!r}.")
        return None if row is None else _entry(row)

    def entries(
        self,
        workflow: str | None = None,
        category: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[Entry]:
        """Entries in booking order; since is inclusive and until exclusive, on occurred_at (UTC)."""
        query = sa.select(ledger_entries).where(*self._filters(workflow, category, since, until))
        with self._engine.connect() as conn:
            return [_entry(r) for r in conn.execute(query.order_by(ledger_entries.c.id))]

    def totals(
        self,
        group_by: tuple[str, ...] = ("category",),
        workflow: str | None = None,
        category: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> dict:
        """Sum of amounts per group, e.g. {"people": Decimal("190.00"), ...}.

        A single group-by column gives plain keys; several give tuples, e.g. ("2026-08",
        "training_compute"). Sums are taken in Python with Decimal: exact on both databases
        (SQLite would sum decimal text as floats). Past some millions of rows, push the
        GROUP BY into SQL on PostgreSQL, where SUM(numeric) is exact too.
        """
        group_by = tuple(group_by)
        bad = [g for g in group_by if g not in GROUP_BY]
        if not group_by or bad:
            raise ValueError(f"group_by={group_by!r}: choose one or more of {', '.join(GROUP_BY)}.")
        needed = {"occurred_at" if g in ("month", "day") else g for g in group_by} | {"amount", "currency"}
        query = sa.select(*(ledger_entries.c[c] for c in sorted(needed))).where(
            *self._filters(workflow, category, since, until)
        )
        sums: dict = defaultdict(Decimal)
        currencies = set()
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                currencies.add(row.currency)
                key = tuple(_group_value(row, g) for g in group_by)
                sums[key if len(key) > 1 else key[0]] += row.amount
        if len(currencies) > 1 and "currency" not in group_by:
            raise LedgerError(
                f"The selected entries mix currencies {sorted(currencies)}; add 'currency' to group_by."
            )
        return dict(sorted(sums.items(), key=lambda kv: str(kv[0])))

    def total(
        self,
        workflow: str | None = None,
        category: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> Decimal:
        """Sum of all matching amounts (reversals included, so a reversed entry nets to zero)."""
        by_currency = self.totals(
            ("currency",), workflow=workflow, category=category, since=since, until=until
        )
        if len(by_currency) > 1:
            raise LedgerError(
                f"The selected entries mix currencies {sorted(by_currency)}; "
                "use totals(group_by=('currency',))."
            )
        return next(iter(by_currency.values()), Decimal("0")).quantize(AMOUNT_PLACES)

    @staticmethod
    def _filters(workflow, category, since, until) -> list:
        c = ledger_entries.c
        out = []
        if workflow is not None:
            out.append(c.workflow == workflow)
        if category is not None:
            if category not in CATEGORIES:
                raise ValueError(f"category={category!r} is not one of {', '.join(CATEGORIES)}.")
            out.append(c.category == category)
        if since is not None:
            out.append(c.occurred_at >= _as_utc(since, "since"))
        if until is not None:
            out.append(c.occurred_at < _as_utc(until, "until"))
        return out


# Helpers -----------------------------------------------------------------------------------


def _entry(row) -> Entry:
    return Entry(**{f.name: getattr(row, f.name) for f in fields(Entry)})


def _stored_problem(e: Entry, by_id: dict[int, Entry]) -> str | None:
    """Why a stored entry cannot be what was booked, or None."""
    try:
        facts = NewEntry(
            idempotency_key=e.idempotency_key,
            occurred_at=e.occurred_at,
            category=e.category,
            workflow=e.workflow,
            resource=e.resource,
            quantity=e.quantity,
            unit=e.unit,
            unit_price=e.unit_price,
            source_kind=e.source_kind,
            source=e.source,
            currency=e.currency,
            model=e.model,
            description=e.description,
        )
    except (TypeError, ValueError, InvalidOperation) as exc:
        return f"its stored facts are not a valid entry: {exc}"
    if payload_sha256(facts, e.reverses_id) != e.payload_sha256:
        return "its facts do not match the payload hash booked with them"
    if e.amount != amount_of(e.quantity, e.unit_price):
        return f"amount {e.amount} is not quantity {e.quantity} x unit price {e.unit_price}"
    if e.reverses_id is None:
        if e.quantity < 0:
            return "a negative quantity that reverses nothing"
        return None
    original = by_id.get(e.reverses_id)
    if original is None:
        return f"it reverses entry {e.reverses_id}, which is gone"
    if e.quantity != -original.quantity or e.unit_price != original.unit_price:
        return f"it does not cancel entry {e.reverses_id} exactly"
    return None


def _same_or_conflict(existing: Entry, digest: str) -> Entry:
    if existing.payload_sha256 == digest:
        return existing
    raise IdempotencyConflict(
        f"Idempotency key {existing.idempotency_key!r} is already booked (entry {existing.id}, "
        f"{existing.quantity} {existing.unit} x {existing.unit_price} {existing.currency}) with a different payload. "
        "Either this is the same cost (then book it unchanged) or a different one (then give it its own key); "
        f"to correct entry {existing.id}, reverse it (Ledger.reverse) and book the right amount under a new key."
    )


def _as_utc(value: datetime | date, name: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}={value!r} has no timezone; pass an aware datetime (UTC) or a date.")
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise TypeError(f"{name}={value!r} must be a date or an aware datetime.")


def _is_lock_error(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def _make_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise LedgerError(
            f"Ledger URL {url!r} is not a SQLAlchemy URL; use sqlite:////abs/path/ledger.db "
            "or postgresql://user@host:5432/db (MLOPS_LEDGER_URL)."
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() != "postgresql":
        raise LedgerError(f"Ledger URL {url!r}: only sqlite and postgresql are supported.")
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 means psycopg (3) by a bare postgresql://; the test extras and many
        # images ship psycopg2 instead. Use whichever is installed, psycopg first.
        for driver in ("psycopg", "psycopg2"):
            if importlib.util.find_spec(driver) is not None:
                parsed = parsed.set(drivername=f"postgresql+{driver}")
                break
        else:
            raise LedgerError(
                f"Ledger URL {parsed.render_as_string(hide_password=True)!r} needs a PostgreSQL "
                "driver: pip install 'psycopg[binary]' (or psycopg2-binary)."
            )
    connect_args = {}
    if "connect_timeout" not in parsed.query:
        # A black-holed host must not hang a task's completion; the caller spools instead.
        connect_args["connect_timeout"] = 10
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_engine(parsed: sa.URL) -> sa.Engine:
    in_memory = parsed.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection, or every new connection would see an empty database.
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take BEGIN away from the sqlite3 module (it would start transactions lazily and
        # never run DDL inside one); _on_begin below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            _ensure_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def _ensure_wal(cursor) -> None:
    """Put the file in WAL mode once; afterwards a connection only reads the mode.

    WAL (readers never block the writer, writers queue on the busy timeout) is a property of
    the file and persists, so only the first connection to a new file has to switch it.
    Switching needs an exclusive lock, and SQLite may answer SQLITE_BUSY there at once,
    without waiting on the busy timeout: a process connecting while others write would fail
    (a lost booking from the cost listener). So the mode is read first, and the switch, when
    still needed, is retried with backoff until the busy timeout is spent.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay_s = 0.01
    while True:
        try:
            (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(delay_s * (1 + random.random()))
            delay_s = min(delay_s * 2, 0.5)


def _current_revision(conn) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


@cache
def _script_directory():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR))


def _migration_head() -> str:
    return _script_directory().get_current_head()


def _migration_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in _script_directory().walk_revisions())
