"""The EHR read model: patients (merges resolved through links), encounters, orders,
results with their version history, immunizations, appointments and documents.

``project(event)`` is pure: one ``Versioned`` effect per resource state (plus a link
``Fact`` for a merge). Every table holds the latest version; ``history`` holds every
version with its FHIR content, which is what a result's history query reads.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.topics import canonical_topic

from .core import Effect, Fact, FactSpec, Projection, TableSpec, Versioned, current_table_ddl
from .fhir import Json, code_text, first_coding, interpretation, iso, patient_of, ref_id, value_text
from .migrations import COMMON, Migration

NAME = "ehr"
RESOURCES = (
    "Patient", "Encounter", "ServiceRequest", "Observation", "DiagnosticReport",
    "Immunization", "Appointment", "DocumentReference",
)

PATIENTS = TableSpec("patients", ("active", "family", "given", "birth_date", "gender", "mrn",
                                  "body"), {"active": "INTEGER"})
ENCOUNTERS = TableSpec("encounters", ("patient_id", "status", "class_code", "period_start",
                                      "period_end", "body"))
ORDERS = TableSpec("orders", ("patient_id", "status", "code", "display", "authored_on", "body"))
RESULTS = TableSpec("results", ("resource_type", "patient_id", "status", "code_system", "code",
                                "display", "value", "unit", "interpretation", "effective",
                                "body"))
IMMUNIZATIONS = TableSpec("immunizations", ("patient_id", "status", "vaccine_code", "display",
                                            "occurrence", "body"))
APPOINTMENTS = TableSpec("appointments", ("patient_id", "status", "start_at", "end_at", "body"))
DOCUMENTS = TableSpec("documents", ("patient_id", "status", "doc_status", "type_code",
                                    "doc_date", "body"))
TABLES = (PATIENTS, ENCOUNTERS, ORDERS, RESULTS, IMMUNIZATIONS, APPOINTMENTS, DOCUMENTS)
# retired -> survivor; written by either merge event, so arrival order does not matter.
LINKS = FactSpec("patient_links", ("retired_id", "survivor_id"))

MIGRATIONS = (
    COMMON,
    Migration(2, "ehr tables", (
        *(current_table_ddl(t) for t in TABLES),
        *(f"CREATE INDEX IF NOT EXISTS {{p}}{t.name}_patient ON {{p}}{t.name} (patient_id)"
          for t in TABLES if "patient_id" in t.columns),
        "CREATE TABLE IF NOT EXISTS {p}patient_links (retired_id TEXT NOT NULL, survivor_id"
        " TEXT NOT NULL, PRIMARY KEY (retired_id, survivor_id))",
        "CREATE INDEX IF NOT EXISTS {p}patient_links_survivor ON {p}patient_links"
        " (survivor_id)",
    )),
)

Row = tuple[str, tuple[object, ...]]


def _patient(body: Json, _event: CanonicalEvent) -> Row:
    name = (body.get("name") or [{}])[0]
    mrn = next((i.get("value") for i in body.get("identifier") or []
                if first_coding(i.get("type")).get("code") == "MR"), None)
    active = body.get("active")
    return "patients", (None if active is None else int(bool(active)), name.get("family"),
                        " ".join(name.get("given") or []) or None, body.get("birthDate"),
                        body.get("gender"), mrn)


def _encounter(body: Json, event: CanonicalEvent) -> Row:
    period = body.get("period") or {}
    klass = body.get("class") or {}
    return "encounters", (patient_of(body, event), body.get("status"), klass.get("code"),
                          period.get("start"), period.get("end"))


def _order(body: Json, event: CanonicalEvent) -> Row:
    _, code, display = code_text(body.get("code"))
    return "orders", (patient_of(body, event), body.get("status"), code, display,
                      body.get("authoredOn"))


def _result(body: Json, event: CanonicalEvent) -> Row:
    system, code, display = code_text(body.get("code"))
    value, unit = value_text(body)
    effective = body.get("effectiveDateTime") or (body.get("effectivePeriod") or {}).get("start")
    return "results", (event.resource_type, patient_of(body, event), body.get("status"), system,
                       code, display, value, unit, interpretation(body), effective)


def _immunization(body: Json, event: CanonicalEvent) -> Row:
    _, code, display = code_text(body.get("vaccineCode"))
    return "immunizations", (patient_of(body, event), body.get("status"), code, display,
                             body.get("occurrenceDateTime"))


def _appointment(body: Json, event: CanonicalEvent) -> Row:
    return "appointments", (patient_of(body, event), body.get("status"), body.get("start"),
                            body.get("end"))


def _document(body: Json, event: CanonicalEvent) -> Row:
    type_code = first_coding(body.get("type")).get("code")
    return "documents", (patient_of(body, event), body.get("status"), body.get("docStatus"),
                         type_code, body.get("date"))


_ROWS: dict[str, Callable[[Json, CanonicalEvent], Row]] = {
    "Patient": _patient, "Encounter": _encounter, "ServiceRequest": _order,
    "Observation": _result, "DiagnosticReport": _result, "Immunization": _immunization,
    "Appointment": _appointment, "DocumentReference": _document,
}


def project(event: CanonicalEvent) -> list[Effect]:
    """One canonical event -> the EHR effects it causes (pure)."""
    row_of = _ROWS.get(event.resource_type)
    if row_of is None:
        return []
    body = orjson.loads(event.resource)
    table, values = row_of(body, event)
    text = event.resource.decode("utf-8")
    status = body.get("status")
    if status is None and "active" in body:
        status = "active" if body["active"] else "inactive"
    effects: list[Effect] = [Versioned(
        table, event.resource_id, event.resource_version, (*values, text),
        event.event_id, event.event_type, status, iso(event.occurred_at), text,
    )]
    if event.resource_type == "Patient":
        effects.extend(_links(body, event))
    return effects


def _links(body: Json, event: CanonicalEvent) -> list[Effect]:
    out: list[Effect] = []
    for link in body.get("link") or []:
        other = ref_id(link.get("other"), "Patient")
        if other is None:
            continue
        if link.get("type") == "replaces":
            out.append(Fact("patient_links", (other, event.resource_id)))
        elif link.get("type") == "replaced-by":
            out.append(Fact("patient_links", (event.resource_id, other)))
    return out


def build() -> Projection:
    return Projection(
        name=NAME,
        topics=tuple(canonical_topic(r) for r in RESOURCES),
        migrations=MIGRATIONS,
        tables=TABLES,
        facts=(LINKS,),
        project=project,
    )
