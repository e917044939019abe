"""Our mapping vs Microsoft FHIR-Converter's shipped output for the same inputs.

Compares patient identifiers, names, birth date, gender, encounter class/period and
observation codes, values, units and statuses, and prints the agreement rate per field.
Disagreements are explained in docs/mapping.md (ours vs theirs, and which one follows the
HL7 v2-to-FHIR guidance); the floors below only catch regressions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirbus.consumers.canonicalizer import MappingError, RawRef, SiteConfig, map_message

Res = dict[str, Any]
REF = RawRef("hl7.raw.v1", 0, 0, "corpus", datetime(2026, 1, 1, tzinfo=UTC))


def _instant(text: str | None) -> str | None:
    """Compare times as instants (the converter re-expresses offsets)."""
    if not text:
        return None
    if len(text) <= 10:
        return text
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()


def _first(resources: list[Res], rtype: str) -> Res | None:
    return next((r for r in resources if r["resourceType"] == rtype), None)


def _code(concept: Res | None) -> str | None:
    codings = (concept or {}).get("coding") or []
    return codings[0].get("code") if codings else (concept or {}).get("text")


def _value(obs: Res) -> Any:
    if "valueQuantity" in obs:
        return obs["valueQuantity"].get("value")
    if "valueCodeableConcept" in obs:
        return _code(obs["valueCodeableConcept"])
    for key in ("valueString", "valueDateTime", "valueTime"):
        if key in obs:
            return obs[key].strip() if key == "valueString" else _instant(obs[key])
    return None


PATIENT_FIELDS: dict[str, Callable[[Res], Any]] = {
    "patient.identifier": lambda p: frozenset(i.get("value") for i in p.get("identifier", [])),
    "patient.name": lambda p: frozenset(
        (n.get("family"), tuple(n.get("given", []))) for n in p.get("name", [])),
    "patient.birthDate": lambda p: p.get("birthDate"),
    "patient.gender": lambda p: p.get("gender"),
}
ENCOUNTER_FIELDS: dict[str, Callable[[Res], Any]] = {
    "encounter.class": lambda e: (e.get("class") or {}).get("code"),
    "encounter.period.start": lambda e: _instant((e.get("period") or {}).get("start")),
    "encounter.period.end": lambda e: _instant((e.get("period") or {}).get("end")),
}
OBSERVATION_FIELDS: dict[str, Callable[[Res], Any]] = {
    "observation.value": _value,
    "observation.unit": lambda o: (o.get("valueQuantity") or {}).get("unit"),
    "observation.status": lambda o: o.get("status"),
}


def _pair_observations(ours: list[Res], theirs: list[Res]) -> list[tuple[Res, Res]]:
    pool: dict[Any, list[Res]] = defaultdict(list)
    for obs in ours:
        pool[_code(obs.get("code"))].append(obs)
    pairs = []
    for obs in theirs:
        candidates = pool.get(_code(obs.get("code")))
        if candidates:
            pairs.append((candidates.pop(0), obs))
    return pairs


class Tally:
    def __init__(self) -> None:
        self.agree: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.disagreements: list[tuple[str, str, Any, Any]] = []

    def compare(self, stem: str, field: str, ours: Any, theirs: Any) -> None:
        if ours in (None, frozenset()) and theirs in (None, frozenset()):
            return
        self.total[field] += 1
        if ours == theirs:
            self.agree[field] += 1
        else:
            self.disagreements.append((stem, field, ours, theirs))

    def rates(self) -> dict[str, float]:
        return {f: self.agree[f] / self.total[f] for f in self.total}


def _compare_file(tally: Tally, stem: str, ours: list[Res], theirs: list[Res]) -> None:
    for rtype, fields in (("Patient", PATIENT_FIELDS), ("Encounter", ENCOUNTER_FIELDS)):
        a, b = _first(ours, rtype), _first(theirs, rtype)
        if a is None or b is None:
            continue
        for name, get in fields.items():
            tally.compare(stem, name, get(a), get(b))
    our_obs = [r for r in ours if r["resourceType"] == "Observation"]
    their_obs = [r for r in theirs if r["resourceType"] == "Observation"]
    if not their_obs:
        return
    tally.compare(stem, "observation.code", Counter(_code(o.get("code")) for o in our_obs),
                  Counter(_code(o.get("code")) for o in their_obs))
    for a, b in _pair_observations(our_obs, their_obs):
        for name, get in OBSERVATION_FIELDS.items():
            tally.compare(stem, name, get(a), get(b))


def run_comparison(corpus: Path) -> Tally:
    tally = Tally()
    for expected in sorted((corpus / "expected").rglob("*.expected.json")):
        stem = expected.name.removesuffix(".expected.json")
        source = corpus / "hl7v2" / expected.parent.name / f"{stem}.hl7"
        theirs = [e["resource"] for e in orjson.loads(expected.read_bytes())["entry"]]
        try:
            events = map_message(source.read_bytes(), REF, SiteConfig())
        except MappingError:
            tally.compare(stem, "mapped", False, True)
            continue
        tally.compare(stem, "mapped", True, True)
        _compare_file(tally, stem, [orjson.loads(e.resource) for e in events], theirs)
    return tally


# Regression floors, set from the measured rates (see docs/mapping.md for the gaps).
FLOORS = {"mapped": 1.0, "patient.birthDate": 1.0, "patient.gender": 1.0,
          "patient.identifier": 0.2, "patient.name": 0.4, "encounter.class": 1.0,
          "encounter.period.start": 1.0, "encounter.period.end": 0.6,
          "observation.code": 0.5, "observation.value": 0.8, "observation.unit": 0.9,
          "observation.status": 0.85}


def test_agreement_with_the_microsoft_converter(corpus_dir: Path) -> None:
    tally = run_comparison(corpus_dir)
    rates = tally.rates()
    print("\nagreement with microsoft/FHIR-Converter output (field: agree/compared = rate)")
    for field in sorted(rates):
        print(f"  {field:26} {tally.agree[field]:3}/{tally.total[field]:<3} = {rates[field]:.0%}")
    print("disagreements (file, field, ours, theirs):")
    for stem, field, ours, theirs in tally.disagreements:
        print(f"  {stem:40} {field:24} ours={_short(ours)} theirs={_short(theirs)}")
    for field, floor in FLOORS.items():
        assert rates.get(field, 1.0) >= floor, field


def _short(value: Any) -> str:
    text = repr(sorted(value) if isinstance(value, frozenset) else value)
    return text if len(text) < 70 else text[:67] + "..."


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s", "-q"])
