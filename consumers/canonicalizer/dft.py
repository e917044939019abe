"""DFT^P03 -> ChargeItem per FT1, Account from PID-18 (patient account number) when present.

A charge names its Encounter (ChargeItem.context) when PV1 identifies the visit, so billing
can keep balances per encounter; a PV1 without visit number or admit time names nothing (an
id minted from this message would point at an encounter no ADT feed ever created).
"""

from __future__ import annotations

from fhirbus.hl7 import Segment

from . import identity
from .adt import encounter_id
from .context import MappingContext
from .datatypes import Json, codeable, decimal, fhir_datetime, hd_system, identifier
from .errors import MissingRequiredField
from .oru import map_supporting_observations
from .patient import map_patient, require_pid

# FT1-6 transaction type (table 0017): reversals/cancellations end the charge's life.
_ERROR_TYPES = frozenset({"X", "RV", "CX"})


def map_dft(ctx: MappingContext) -> None:
    pid = require_pid(ctx)
    map_patient(ctx, pid)
    account = _account(ctx, pid)
    encounter = _encounter_ref(ctx)
    for index, ft1 in enumerate(ctx.msg.all("FT1"), 1):
        _charge(ctx, ft1, index, account, encounter)
    map_supporting_observations(ctx, "dft")


def _account(ctx: MappingContext, pid: Segment) -> str | None:
    number = pid.get(18).strip()
    if not number:
        return None
    scope = hd_system(*(pid.get(18, 1, 4, s).strip() for s in (1, 2, 3)),
                      ctx.site.identifier_systems) or f"facility:{ctx.facility}"
    rid = identity.resource_id("Account", scope, number)
    body: Json = {"status": "active"}
    ident = identifier(pid, 18, 1, ctx.site.identifier_systems)
    if ident:
        body["identifier"] = [ident]
    if ctx.patient_ref:
        body["subject"] = [ctx.patient_ref]
    ctx.emit("Account", rid, body, "account.upserted", ctx.when())
    return rid


def _encounter_ref(ctx: MappingContext) -> Json | None:
    pv1 = ctx.msg.segment("PV1")
    if pv1 is None or not (pv1.get(19).strip() or pv1.get(44).strip()):
        return None
    return {"reference": f"Encounter/{encounter_id(ctx, pv1)}"}


def _charge(ctx: MappingContext, ft1: Segment, index: int, account: str | None,
            encounter: Json | None) -> None:
    code = codeable(ft1, 7, 1, ctx.site) or codeable(
        ft1, 25, 1, ctx.site)
    if code is None:
        raise MissingRequiredField("FT1-7", "transaction code is empty")
    kind = ft1.get(6).strip().upper()
    status = "entered-in-error" if kind in _ERROR_TYPES else "billable"
    body: Json = {"status": status, "code": code, "subject": ctx.patient_ref}
    txn = ft1.get(2).strip()
    if txn:
        body["identifier"] = [{"value": txn}]
    start = fhir_datetime(ft1.get(4, 1, 1), ctx.tz)
    if start:
        body["occurrenceDateTime"] = start
    qty = decimal(ft1.get(10))
    if qty is not None:
        body["quantity"] = {"value": qty}
    price = _money(ft1)
    if price:
        body["priceOverride"] = price
    reasons = [c for r in range(1, len(ft1.repetitions(19)) + 1)
               if (c := codeable(ft1, 19, r, ctx.site))]
    if reasons:
        body["reason"] = reasons
    if account:
        body["account"] = [{"reference": f"Account/{account}"}]
    if encounter:
        body["context"] = encounter
    scope = txn or f"{ft1.get(3).strip()}|{ft1.get(1).strip()}|{index}"
    rid = identity.resource_id("ChargeItem", ctx.facility, scope if txn else
                               f"{ctx.sender}|{ctx.msg.control_id}|{scope}")
    at = ctx.when(ft1.get(4, 1, 1))
    ctx.emit("ChargeItem", rid, body, f"chargeitem.{status}", at, 1 if kind in _ERROR_TYPES else 0)


def _money(ft1: Segment) -> Json | None:
    """FT1-11 extended amount (CP: price as MO amount&currency), else FT1-12 unit amount."""
    for n in (11, 12):
        amount = decimal(ft1.get(n, 1, 1, 1))
        if amount is not None:
            money: Json = {"value": amount}
            currency = ft1.get(n, 1, 1, 2).strip().upper()
            if len(currency) == 3 and currency.isalpha():
                money["currency"] = currency
            return money
    return None
