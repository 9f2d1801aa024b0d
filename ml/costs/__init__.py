"""Keeping the books: the append-only cost ledger, the price book, and cost capture.

- ledger:    Ledger, NewEntry, Entry, Category (SQLite or PostgreSQL, Decimal money)
- pricebook: PriceBook, effective-dated unit prices from infra/price_book.yaml
- capture:   what books entries: task runs (via the Airflow listener), storage, frontier
             API calls from the call log, people's hours and tooling; spools when the
             ledger is unreachable

Import the module you need; this package imports nothing itself, so reading the price book
does not load SQLAlchemy.
"""
