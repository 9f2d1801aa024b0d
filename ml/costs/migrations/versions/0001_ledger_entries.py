"""Create ledger_entries, append-only in the database.

Revision ID: 0001
Revises:
Create Date: 2026-06-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = (
    "ledger is append-only: {op} of ledger_entries refused; "
    "correct an entry with a reversing entry (Ledger.reverse)"
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"

    def exact(precision: int, scale: int):
        # SQLite has no exact decimal type (NUMERIC affinity rounds through a float), so the
        # ledger stores decimal text there; PostgreSQL gets a real NUMERIC.
        return sa.String(48) if sqlite else sa.Numeric(precision, scale)

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("resource", sa.String(200), nullable=False),
        sa.Column("quantity", exact(24, 9), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("unit_price", exact(18, 8), nullable=False),
        sa.Column("amount", exact(18, 8), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("reverses_id", sa.Integer, sa.ForeignKey("ledger_entries.id"), nullable=True, unique=True),
    )
    op.create_index("ix_ledger_entries_workflow_occurred_at", "ledger_entries", ["workflow", "occurred_at"])
    op.create_index("ix_ledger_entries_occurred_at", "ledger_entries", ["occurred_at"])

    # Append-only, enforced where no application bug can get around it. (A superuser can
    # still drop a trigger; in production also REVOKE UPDATE, DELETE, TRUNCATE from the
    # application's role.)
    if sqlite:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{verb.lower()} BEFORE {verb} ON ledger_entries "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY.format(op=verb)}'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION ledger_entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{APPEND_ONLY.format(op='%')}', TG_OP "
            "USING ERRCODE = 'restrict_violation'; END $$"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse_change()"
        )
        # TRUNCATE skips row triggers; refuse it with a statement trigger.
        op.execute(
            "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse_change()"
        )


def downgrade() -> None:
    # The ledger is append-only; so are its migrations.
    raise NotImplementedError("ledger migrations are forward-only")
