"""The analytics read model: de-identified facts only.

No name, address, birth date, MRN or other identifier and no raw resource or event id is
written: a patient is an HMAC-SHA256 token under a configured secret (stable, so facts
about one patient can be counted together, but not reversible or recomputable without the
secret); fact keys and tie-breakers are keyed hashes too; dates are coarsened to the
configured granularity. Facts feed aggregates: daily result volumes by LOINC, abnormal
rates, encounter counts by class.

Versions are shifted too. A resource version is the source's time in milliseconds times
10,000 plus a rank (consumers/canonicalizer/identity.py), so stored as it is it would give
every fact its exact time back, whatever the granularity. Each row key gets its own keyed
offset, spread over centuries: the order of one resource's versions, all that stale and
duplicate handling compares, is kept; the time is not recoverable without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import orjson

from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.topics import canonical_topic

from .core import Effect, Fact, FactSpec, Projection, TableSpec, Versioned, current_table_ddl
from .fhir import LOINC, Json, first_coding, patient_of, ref_id
from .migrations import COMMON, Migration
from .store import Tx

NAME = "analytics"
Granularity = Literal["day", "week", "month"]
# v3 ObservationInterpretation codes that mean "outside the normal range".
ABNORMAL = frozenset({"A", "AA", "H", "HH", "HU", "L", "LL", "LU", ">", "<", "HX", "LX",
                      "POS", "DET", "R", "W"})
NORMAL = frozenset({"N", "NEG", "ND", "S"})

RESULTS = TableSpec("result_facts", ("patient_token", "loinc", "day", "status", "abnormal"),
                    {"abnormal": "INTEGER"})
ENCOUNTERS = TableSpec("encounter_facts", ("patient_token", "class_code", "status", "day"))
TOKEN_LINKS = FactSpec("token_links", ("retired_token", "survivor_token"))
BASE_MIGRATIONS = (
    COMMON,
    Migration(2, "analytics facts", (
        current_table_ddl(RESULTS),
        current_table_ddl(ENCOUNTERS),
        "CREATE INDEX IF NOT EXISTS {p}result_facts_day ON {p}result_facts (day, loinc)",
        "CREATE TABLE IF NOT EXISTS {p}token_links (retired_token TEXT NOT NULL,"
        " survivor_token TEXT NOT NULL, PRIMARY KEY (retired_token, survivor_token))",
    )),
)


class MissingSecret(ValueError):
    pass


@dataclass(frozen=True)
class AnalyticsOptions:
    secret: bytes
    granularity: Granularity = "day"

    def token(self, kind: str, value: str) -> str:
        return hmac.new(self.secret, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()

    def version(self, key: str, version: int) -> int:
        """``version`` plus the row key's own offset (see the module docstring)."""
        return version + self.offset(key)

    def offset(self, key: str) -> int:
        # 56 bits: up to ~228 years of version time, and far inside a BIGINT with it.
        digest = hmac.new(self.secret, f"version\x1f{key}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:7], "big")


def coarsen(value: str | datetime | None, granularity: Granularity) -> str | None:
    """An ISO date/dateTime -> its day, the Monday of its week, or the 1st of its month."""
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        if len(text) >= 7 and text[4] == "-":
            return f"{text[:7]}-01" if granularity == "month" else None
        return None
    if granularity == "week":
        day -= timedelta(days=day.weekday())
    elif granularity == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _abnormal(body: Json) -> int | None:
    codes = {c.get("code") for i in body.get("interpretation") or []
             for c in i.get("coding") or []}
    if codes & ABNORMAL:
        return 1
    return 0 if codes & NORMAL else None


def _result(body: Json, event: CanonicalEvent, opts: AnalyticsOptions) -> tuple[Any, ...]:
    loinc = first_coding(body.get("code"), LOINC).get("code")
    when = body.get("effectiveDateTime") or body.get("issued") or event.occurred_at
    return (loinc, coarsen(when, opts.granularity), body.get("status"), _abnormal(body))


def _encounter(body: Json, event: CanonicalEvent, opts: AnalyticsOptions) -> tuple[Any, ...]:
    start = (body.get("period") or {}).get("start") or event.occurred_at
    return ((body.get("class") or {}).get("code"), body.get("status"),
            coarsen(start, opts.granularity))


_FACTS = {"Observation": ("result_facts", _result), "Encounter": ("encounter_facts", _encounter)}


def make_project(opts: AnalyticsOptions) -> Any:
    def project(event: CanonicalEvent) -> list[Effect]:
        if event.resource_type == "Patient":
            return _links(orjson.loads(event.resource), event, opts)
        spec = _FACTS.get(event.resource_type)
        if spec is None:
            return []
        table, facts_of = spec
        body = orjson.loads(event.resource)
        patient = patient_of(body, event)
        token = opts.token("Patient", patient) if patient else None
        values = (token, *facts_of(body, event, opts))
        # No event type, time or content in history: the token-keyed set of versions is
        # all the de-duplication needs.
        key = opts.token(event.resource_type, event.resource_id)
        return [Versioned(table, key, opts.version(key, event.resource_version), values,
                          opts.token("event", event.event_id), status=body.get("status"))]

    return project


def _links(body: Json, event: CanonicalEvent, opts: AnalyticsOptions) -> list[Effect]:
    out: list[Effect] = []
    me = opts.token("Patient", event.resource_id)
    for link in body.get("link") or []:
        other = ref_id(link.get("other"), "Patient")
        if other is None:
            continue
        them = opts.token("Patient", other)
        if link.get("type") == "replaces":
            out.append(Fact("token_links", (them, me)))
        elif link.get("type") == "replaced-by":
            out.append(Fact("token_links", (me, them)))
    return out


def options_from(secret: str | None, granularity: Granularity) -> AnalyticsOptions:
    if not secret:
        raise MissingSecret(
            "the analytics projection needs FHIRBUS_PROJECTIONS__ANALYTICS_SECRET (the HMAC "
            "key for patient tokens); set it, e.g. from a secret store, and start again"
        )
    return AnalyticsOptions(secret.encode(), granularity)


def migrations(opts: AnalyticsOptions) -> tuple[Migration, ...]:
    """The base schema, then the shift of versions stored before they were shifted."""
    return (*BASE_MIGRATIONS,
            Migration(3, "keyed version offsets", (), lambda tx, p: _shift(tx, p, opts)))


def _shift(tx: Tx, p: str, opts: AnalyticsOptions) -> None:
    """Give rows written with raw versions their key's offset (empty on a new model)."""
    for spec in (RESULTS, ENCOUNTERS):
        rows = tx.execute(f"SELECT id FROM {p}{spec.name}")
        tx.executemany(f"UPDATE {p}{spec.name} SET version = version + ? WHERE id = ?",
                       [(opts.offset(key), key) for (key,) in rows])
        rows = tx.execute(f"SELECT DISTINCT key FROM {p}history WHERE kind = ?", (spec.name,))
        tx.executemany(f"UPDATE {p}history SET version = version + ? WHERE kind = ? AND key = ?",
                       [(opts.offset(key), spec.name, key) for (key,) in rows])


def build(opts: AnalyticsOptions) -> Projection:
    return Projection(
        name=NAME,
        topics=tuple(canonical_topic(r) for r in ("Patient", "Observation", "Encounter")),
        migrations=migrations(opts),
        tables=(RESULTS, ENCOUNTERS),
        facts=(TOKEN_LINKS,),
        project=make_project(opts),
    )

