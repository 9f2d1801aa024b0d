"""Alembic environment of the cost ledger.

It only runs inside ml.costs.ledger.Ledger.migrate(), which hands over a connection that
already holds the migration lock inside an open transaction; every migration runs in that
transaction, so a failed upgrade leaves the schema as it was. There is no alembic.ini and
no offline (SQL script) mode: opening the ledger (`Ledger(url)`, which every `mlops costs`
command does) upgrades it.
"""

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "Run ledger migrations through ml.costs.ledger.Ledger(url).migrate(), not the alembic CLI."
    )

context.configure(connection=connection, version_table=config.attributes["version_table"])
with context.begin_transaction():
    context.run_migrations()
