"""Alembic migrations of the cost ledger, run by ml.costs.ledger.Ledger.migrate()."""
