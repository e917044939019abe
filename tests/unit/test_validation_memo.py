"""The validated-element memo never changes what validation decides, only how often
fhir.resources has to decide it again."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirbus.consumers.canonicalizer.errors import InvalidFhirResource
from fhirbus.consumers.canonicalizer.validate import ElementMemo, validate


def observation(value: float = 4.06, system: Any = "http://loinc.org") -> dict:
    return {
        "resourceType": "Observation", "id": "obs-1",
        "meta": {"source": "hl7v2://LAB/-#1", "tag": [{"system": "urn:x", "code": "v1"}]},
        "status": "final",
        "code": {"coding": [{"system": system, "code": "11273-0", "display": "RBC"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value, "unit": "tera.l-1",
                          "system": "http://unitsofmeasure.org", "code": "10*12/L"},
        "referenceRange": [{"low": {"value": 4.2}, "high": {"value": 5.9}}],
        "interpretation": [{"coding": [{"code": "N"}]}],
    }


def outcome(resource: dict, memo: ElementMemo) -> str:
    try:
        validate(resource, memo)
    except InvalidFhirResource as exc:
        return str(exc)
    return "valid"


def test_repeated_elements_are_served_from_the_memo() -> None:
    memo = ElementMemo()
    validate(observation(4.06), memo)
    first_misses = memo.misses
    validate(observation(5.10), memo)
    # Only the changed valueQuantity (and nothing under it) is validated afresh.
    assert memo.misses - first_misses == 1
    assert memo.hits >= 5


def test_an_invalid_element_is_rejected_even_after_its_valid_twin_was_memoized() -> None:
    memo = ElementMemo()
    validate(observation(), memo)
    with pytest.raises(InvalidFhirResource) as caught:
        validate(observation(system=["not", "a", "uri"]), memo)
    assert caught.value.path.startswith("Observation.code.coding.0.system")


def test_a_failing_resource_memoizes_nothing() -> None:
    memo = ElementMemo()
    bad = observation()
    bad["status"] = ["final"]  # the resource fails, though its elements are fine
    with pytest.raises(InvalidFhirResource):
        validate(bad, memo)
    assert memo.get((object, b"")) is None
    assert len(memo._items) == 0


def test_large_elements_are_validated_but_never_kept() -> None:
    """A base64 attachment must not be held in memory by the memo (8192 of them)."""
    memo = ElementMemo()
    note = observation()
    note["note"] = [{"text": "x" * 10_000}]
    validate(note, memo)
    assert all(len(content) <= 2048 for _model, content in memo._items)
    assert memo.misses >= 1


def test_the_memo_is_bounded() -> None:
    memo = ElementMemo(entries=3)
    for n in range(10):
        validate(observation(float(n)), memo)
    assert len(memo._items) <= 3


_BAD = st.sampled_from([None, 7, "x", [], {"nonsense": 1}, ["a"], True])
_PATHS = st.sampled_from([
    ("status",), ("code", "coding", 0, "system"), ("code", "coding", 0, "code"),
    ("subject", "reference"), ("valueQuantity", "value"), ("valueQuantity", "unit"),
    ("referenceRange", 0, "low", "value"), ("meta", "tag", 0, "code"),
    ("interpretation", 0, "coding", 0, "code"), ("meta", "source"), ("code",),
    ("referenceRange", 0), ("meta", "extra_field"),
])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_PATHS, _BAD), max_size=3), st.floats(0, 100, allow_nan=False))
def test_memo_and_no_memo_always_agree(edits: list, value: float) -> None:
    resource = observation(value)
    for path, bad in edits:
        _set(resource, path, copy.deepcopy(bad))
    warm = ElementMemo()
    validate(observation(value), warm)  # every untouched element is now memoized
    validate(observation(value + 1), warm)
    assert outcome(copy.deepcopy(resource), warm) == outcome(copy.deepcopy(resource),
                                                             ElementMemo(entries=0))


def _set(resource: dict, path: tuple, value: Any) -> None:
    """Put ``value`` at ``path`` when an earlier edit has not removed the way there."""
    target: Any = resource
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(target, dict) or (isinstance(target, list) and path[-1] < len(target)):
        target[path[-1]] = value
