"""Refuse every rewrite path of SQLite: REPLACE and INSERT OR REPLACE.

SQLite's REPLACE conflict resolution deletes the conflicting row without firing DELETE
triggers (recursive_triggers is off), then inserts the new one: `REPLACE INTO ledger_entries`
with an existing id or idempotency key rewrote a booked amount past the append-only triggers
of 0001. A BEFORE INSERT trigger runs before the conflict resolution, so it refuses an insert
whose id or idempotency key is already there. PostgreSQL has no REPLACE (its ON CONFLICT DO
UPDATE is an UPDATE, which 0001 already refuses), so this migration changes nothing there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

REFUSED = (
    "ledger is append-only: an INSERT that replaces an existing entry (same id or idempotency key) "
    "is refused; correct an entry with a reversing entry (Ledger.reverse)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TRIGGER ledger_entries_no_replace BEFORE INSERT ON ledger_entries "
        "WHEN EXISTS (SELECT 1 FROM ledger_entries WHERE id = NEW.id OR idempotency_key = NEW.idempotency_key "
        "OR (NEW.reverses_id IS NOT NULL AND reverses_id = NEW.reverses_id)) "
        f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
    )


def downgrade() -> None:
    raise NotImplementedError("ledger migrations are forward-only")
