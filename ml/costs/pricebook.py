"""The price book: effective-dated unit prices, read from a versioned YAML file.

A price applies from its `from` date until the next entry's date. Nothing re-prices the ledger:
an entry keeps the unit price it was booked with, so changing a price changes only what is
booked after the change. Every lookup that cannot be answered raises PriceBookError naming the
key, the date and the file to edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

CURRENCY = "USD"


class PriceBookError(ValueError):
    """The price book is invalid or lacks a price; the message names the key and the file."""


@dataclass(frozen=True)
class Price:
    """One effective-dated price: `amounts` maps a field (usd, input_usd, ...) to Decimal."""

    effective_from: date
    amounts: dict[str, Decimal]


@dataclass(frozen=True)
class PriceBook:
    path: Path
    version: int
    currency: str
    compute_hourly: dict[str, tuple[Price, ...]]
    queues: dict[str, str]
    storage_gb_month: tuple[Price, ...]
    frontier_per_1m_tokens: dict[str, tuple[Price, ...]]
    people_hourly: dict[str, tuple[Price, ...]]
    tooling_monthly: dict[str, tuple[Price, ...]]
    # Which class a device that ran a task is priced as: "cpu" for the CPU, else a part of a GPU's
    # name as torch reports it ("A10G" matches "NVIDIA A10G"); the longest matching part wins.
    devices: dict[str, str] = None  # type: ignore[assignment]

    @classmethod
    def load(cls, path: Path | str) -> "PriceBook":
        path = Path(path)
        if not path.is_file():
            raise PriceBookError(
                f"{path}: price book not found; set MLOPS_PRICE_BOOK_FILE or copy infra/price_book.yaml."
            )
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PriceBookError(f"{path}: not valid YAML ({exc}).") from None
        if not isinstance(doc, dict):
            raise PriceBookError(f"{path}: expected a mapping with version, currency, compute_hourly, ...")
        allowed = {
            "version",
            "currency",
            "compute_hourly",
            "queues",
            "devices",
            "storage_gb_month",
            "frontier_per_1m_tokens",
            "people_hourly",
            "tooling_monthly",
        }
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise PriceBookError(
                f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}."
            )
        version = doc.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise PriceBookError(
                f"{path}: 'version' must be a whole number >= 1 (bump it on every change), got {version!r}."
            )
        # One currency for the whole book; the ledger stores a currency per entry so that a
        # second one can come later without a migration.
        if doc.get("currency") != CURRENCY:
            raise PriceBookError(
                f"{path}: 'currency' must be {CURRENCY} (the only one supported), "
                f"got {doc.get('currency')!r}."
            )

        def named(key: str, fields: tuple[str, ...], required: bool = True) -> dict[str, tuple[Price, ...]]:
            raw = doc.get(key)
            if raw is None and not required:
                return {}
            if not isinstance(raw, dict) or not raw:
                raise PriceBookError(f"{path}: '{key}' must map names to lists of prices.")
            return {
                str(name): _prices(path, f"{key}.{name}", entries, fields) for name, entries in raw.items()
            }

        compute = named("compute_hourly", ("usd",))
        queues = doc.get("queues") or {}
        if not isinstance(queues, dict):
            raise PriceBookError(f"{path}: 'queues' must map a Celery queue name to a compute_hourly class.")
        for queue, resource_class in queues.items():
            if resource_class not in compute:
                raise PriceBookError(
                    f"{path}: queues.{queue} names {resource_class!r}, which has no compute_hourly price; "
                    f"use one of {', '.join(compute)} or add it under compute_hourly."
                )
        devices = doc.get("devices") or {}
        if not isinstance(devices, dict):
            raise PriceBookError(
                f"{path}: 'devices' must map a device (cpu, or part of a GPU's name) to a "
                "compute_hourly class."
            )
        for device, resource_class in devices.items():
            if resource_class not in compute:
                raise PriceBookError(
                    f"{path}: devices.{device} names {resource_class!r}, which has no compute_hourly price; "
                    f"use one of {', '.join(compute)} or add it under compute_hourly."
                )
        return cls(
            devices={str(k): str(v) for k, v in devices.items()},
            path=path,
            version=version,
            currency=CURRENCY,
            compute_hourly=compute,
            queues={str(k): str(v) for k, v in queues.items()},
            storage_gb_month=_prices(path, "storage_gb_month", doc.get("storage_gb_month"), ("usd",)),
            frontier_per_1m_tokens=named("frontier_per_1m_tokens", ("input_usd", "output_usd")),
            people_hourly=named("people_hourly", ("usd",)),
            tooling_monthly=named("tooling_monthly", ("usd",), required=False),
        )

    # Lookups. Each one names the section of the file to edit when it cannot answer.

    def compute_hour_usd(self, resource_class: str, on: date) -> Decimal:
        return self._lookup("compute_hourly", self.compute_hourly, resource_class, on)["usd"]

    def storage_gb_month_usd(self, on: date) -> Decimal:
        return self._at("storage_gb_month", self.storage_gb_month, on)["usd"]

    def frontier_token_prices(self, model: str, on: date) -> tuple[Decimal, Decimal]:
        """(input, output) price per 1M tokens of a frontier model."""
        price = self._lookup("frontier_per_1m_tokens", self.frontier_per_1m_tokens, model, on)
        return price["input_usd"], price["output_usd"]

    def person_hour_usd(self, role: str, on: date) -> Decimal:
        return self._lookup("people_hourly", self.people_hourly, role, on)["usd"]

    def tooling_month_usd(self, name: str, on: date) -> Decimal:
        return self._lookup("tooling_monthly", self.tooling_monthly, name, on)["usd"]

    @property
    def cpu_class(self) -> str | None:
        """The class a task that computed on the CPU is priced as."""
        return (
            (self.devices or {}).get("cpu")
            or self.queues.get("default")
            or ("cpu" if "cpu" in self.compute_hourly else None)
        )

    def resource_class_for_device(self, device_name: str) -> str | None:
        """The class of a GPU by its name (the longest `devices:` key inside it), or None."""
        # As a whole word: "L4" must not price an "L40S".
        matches = [
            k
            for k in (self.devices or {})
            if k != "cpu" and re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", device_name, re.I)
        ]
        return self.devices[max(matches, key=len)] if matches else None

    def resource_class_for_queue(self, queue: str | None) -> str | None:
        """The compute class a Celery queue runs on, or None when the book does not map it."""
        return self.queues.get(queue) if queue else None

    def _lookup(
        self, section: str, table: dict[str, tuple[Price, ...]], name: str, on: date
    ) -> dict[str, Decimal]:
        if name not in table:
            raise PriceBookError(
                f"No {section} price for {name!r} in {self.path}; known: {', '.join(sorted(table)) or 'none'}. "
                f"Add it under {section} (with a from: date), or use a known name."
            )
        return self._at(f"{section}.{name}", table[name], on)

    def _at(self, where: str, prices: tuple[Price, ...], on: date) -> dict[str, Decimal]:
        # A datetime is a date too, but comparing one with a date raises; the caller picks the day.
        if not isinstance(on, date) or isinstance(on, datetime):
            raise TypeError(f"price lookup for {where} needs a date (the UTC day), got {on!r}")
        found = None
        for price in prices:  # ascending, checked on load
            if price.effective_from <= on:
                found = price
        if found is None:
            raise PriceBookError(
                f"{where} has no price on {on.isoformat()} (the first applies from "
                f"{prices[0].effective_from.isoformat()}); add an entry with an earlier from: date in {self.path}."
            )
        return found.amounts


def _prices(path: Path, where: str, raw, fields: tuple[str, ...]) -> tuple[Price, ...]:
    if not isinstance(raw, list) or not raw:
        raise PriceBookError(
            f'{path}: {where} must be a list like [{{from: 2026-01-01, {fields[0]}: "1.00"}}].'
        )
    out: list[Price] = []
    for i, item in enumerate(raw):
        at = f"{path}: {where}[{i}]"
        if not isinstance(item, dict):
            raise PriceBookError(f"{at}: expected a mapping with from and {', '.join(fields)}.")
        extra = sorted(set(item) - {"from", *fields})
        missing = [f for f in ("from", *fields) if f not in item]
        if extra or missing:
            raise PriceBookError(
                f"{at}: needs exactly from and {', '.join(fields)}"
                f"{'; missing ' + ', '.join(missing) if missing else ''}"
                f"{'; unknown ' + ', '.join(extra) if extra else ''}."
            )
        effective_from = item["from"]
        if isinstance(effective_from, str):
            try:
                effective_from = date.fromisoformat(effective_from)
            except ValueError:
                pass
        if isinstance(effective_from, datetime) or not isinstance(effective_from, date):
            raise PriceBookError(f"{at}: from: {item['from']!r} is not a date; write it as YYYY-MM-DD.")
        if out and effective_from <= out[-1].effective_from:
            raise PriceBookError(
                f"{at}: from: {effective_from} is not after the previous entry's "
                f"{out[-1].effective_from}; keep entries in ascending date order, one per date."
            )
        out.append(Price(effective_from, {f: _money(at, f, item[f]) for f in fields}))
    return tuple(out)


def _money(at: str, field_name: str, raw) -> Decimal:
    # Unquoted YAML numbers arrive as float or int; str() gives back the literal that was
    # written (repr is the shortest round-trip form), so no binary fraction reaches a price.
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise PriceBookError(f'{at}: {field_name}: {raw!r} is not a price; write it quoted, e.g. "0.25".')
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise PriceBookError(
            f'{at}: {field_name}: {raw!r} is not a number; write it quoted, e.g. "0.25".'
        ) from None
    if not value.is_finite() or value < 0:
        raise PriceBookError(f"{at}: {field_name}: {raw!r} must be a finite price >= 0.")
    return value
