"""The billing read model: charges from canonical ChargeItems (and, where prices are
configured, from completed orders), an append-only ledger, balances per encounter.

Every version of a charge's source is kept (history). The ledger is a pure function of
that *set* of versions, so it converges whatever the arrival order or duplication:

* each billable version posts a ``charge`` entry;
* each billable version that is not the latest posts a ``reversal`` of itself.

A correction (a new version) therefore shows one reversal of the old charge and one new
charge; a cancellation (a non-billable latest version) only the reversal. Entries are
inserted once by idempotency key (``source|version|event|kind``): replaying the whole
history changes nothing, and a charge is never counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.topics import canonical_topic

from .core import (
    ApplyResult,
    Effect,
    Fact,
    FactSpec,
    Projection,
    TableSpec,
    Versioned,
    apply_facts,
    current_table_ddl,
)
from .fhir import Json, iso, money_cents, patient_of, ref_id
from .migrations import COMMON, Migration
from .store import Tx, select_in

NAME = "billing"
# "billed" (sent to the payer) is still owed: only a later non-billable version reverses it.
BILLABLE_STATUSES = frozenset({"billable", "billed"})

CHARGES = TableSpec("charges", ("source_type", "patient_id", "encounter_key", "code",
                                "status", "billable", "amount_cents", "currency",
                                "occurred_at"),
                    {"billable": "INTEGER", "amount_cents": "BIGINT"})
LEDGER = FactSpec("ledger", ("entry_key", "source_key", "version", "event_id", "kind",
                             "amount_cents", "currency", "encounter_key", "code",
                             "occurred_at"), {"version": "BIGINT", "amount_cents": "BIGINT"})
MIGRATIONS = (
    COMMON,
    Migration(2, "billing tables", (
        current_table_ddl(CHARGES),
        "CREATE TABLE IF NOT EXISTS {p}ledger (entry_key TEXT PRIMARY KEY, source_key TEXT"
        " NOT NULL, version BIGINT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " amount_cents BIGINT NOT NULL, currency TEXT, encounter_key TEXT NOT NULL,"
        " code TEXT, occurred_at TEXT)",
        "CREATE INDEX IF NOT EXISTS {p}ledger_encounter ON {p}ledger (encounter_key)",
        "CREATE INDEX IF NOT EXISTS {p}ledger_source ON {p}ledger (source_key)",
    )),
)


@dataclass(frozen=True)
class BillingOptions:
    order_prices: Mapping[str, Decimal]  # order code -> price; empty = orders not billed
    currency: str = "USD"


def _encounter_key(body: Json, patient: str | None, *fields: str) -> str:
    """Balances are per encounter; a charge that names none is held on its account, else on
    its patient, so it is never lost from a balance."""
    for field in fields:
        value = body.get(field)
        for ref in value if isinstance(value, list) else [value]:
            for rtype in ("Encounter", "Account"):
                if rid := ref_id(ref, rtype):
                    return f"{rtype}/{rid}"
    return f"Patient/{patient}" if patient else "unassigned"


def _charge_item(body: Json, event: CanonicalEvent, opts: BillingOptions) -> dict[str, Any]:
    patient = patient_of(body, event)
    coding = ((body.get("code") or {}).get("coding") or [{}])[0]
    amount = money_cents(body.get("priceOverride"))
    status = body.get("status")
    return {
        "patient_id": patient, "encounter_key": _encounter_key(body, patient, "context",
                                                               "account"),
        "code": coding.get("code"), "status": status, "amount_cents": amount,
        "currency": (body.get("priceOverride") or {}).get("currency") or opts.currency,
        "billable": int(status in BILLABLE_STATUSES and amount is not None),
    }


def _order(body: Json, event: CanonicalEvent, opts: BillingOptions) -> dict[str, Any]:
    patient = patient_of(body, event)
    codes = [c.get("code") for c in (body.get("code") or {}).get("coding") or []]
    code = next((c for c in codes if c in opts.order_prices), None)
    price = opts.order_prices.get(code) if code else None
    amount = None if price is None else int((price * 100).to_integral_value())
    status = body.get("status")
    return {
        "patient_id": patient, "encounter_key": _encounter_key(body, patient, "encounter"),
        "code": code, "status": status, "amount_cents": amount, "currency": opts.currency,
        "billable": int(status == "completed" and amount is not None),
    }


def make_project(opts: BillingOptions) -> Any:
    def project(event: CanonicalEvent) -> list[Effect]:
        if event.resource_type == "ChargeItem":
            fields = _charge_item(orjson.loads(event.resource), event, opts)
        elif event.resource_type == "ServiceRequest" and opts.order_prices:
            fields = _order(orjson.loads(event.resource), event, opts)
        else:
            return []
        fields["occurred_at"] = iso(event.occurred_at)
        values = (event.resource_type, *(fields[c] for c in CHARGES.columns[1:]))
        return [Versioned(
            "charges", f"{event.resource_type}/{event.resource_id}", event.resource_version,
            values, event.event_id, event.event_type, fields["status"], fields["occurred_at"],
            orjson.dumps(fields).decode(),
        )]

    return project


Version = tuple[int, str, dict[str, Any]]  # (version, event_id, charge fields)


def ledger_entries(source_key: str, versions: Sequence[Version]) -> list[tuple[Any, ...]]:
    """The ledger rows a charge's known versions imply (pure, order-independent)."""
    ordered = sorted(versions, key=lambda v: (v[0], v[1]))
    rows: list[tuple[Any, ...]] = []
    for i, (version, event_id, f) in enumerate(ordered):
        if not f.get("billable"):
            continue
        for kind, sign in (("charge", 1), ("reversal", -1)):
            if kind == "reversal" and i == len(ordered) - 1:
                break  # the latest version stands
            rows.append((f"{source_key}|{version}|{event_id}|{kind}", source_key, version,
                         event_id, kind, sign * f["amount_cents"], f.get("currency"),
                         f["encounter_key"], f.get("code"), f.get("occurred_at")))
    return rows


def after_apply(tx: Tx, p: str, result: ApplyResult) -> None:
    """Recompute the ledger of every charge that gained a version in this batch."""
    keys = sorted({e.key for e in result.fresh if e.table == "charges"})
    versions: dict[str, list[Version]] = {}
    for key, version, event_id, payload in select_in(
        tx, f"SELECT key, version, event_id, payload FROM {p}history WHERE kind = ? AND "
        "key IN ({in})", keys, ("charges",),
    ):
        versions.setdefault(key, []).append((int(version), event_id, orjson.loads(payload)))
    facts = [Fact("ledger", row) for key in keys for row in ledger_entries(key, versions[key])]
    apply_facts(tx, p, {"ledger": LEDGER}, facts)


def build(opts: BillingOptions) -> Projection:
    resources = ["ChargeItem", *(["ServiceRequest"] if opts.order_prices else [])]
    return Projection(
        name=NAME,
        topics=tuple(canonical_topic(r) for r in resources),
        migrations=MIGRATIONS,
        tables=(CHARGES,),
        facts=(LEDGER,),
        project=make_project(opts),
        after_apply=after_apply,
    )
