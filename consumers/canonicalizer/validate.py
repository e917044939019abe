"""Validation of every mapped resource with fhir.resources (R4B models) before publishing.

One ``model_validate`` per resource, on the dict the mapper built; the published JSON is that
same dict (serialized with orjson), so what is published is exactly what was validated and
nothing is validated twice or re-serialized through pydantic.

Validating an element is a pure function of its content: fhir.resources validates a nested
complex element (a CodeableConcept, a Reference, a Meta) on its own and accepts an already
validated instance of the right model as it is. Hospital traffic repeats such elements all the
time: one message's resources share its Meta and subject Reference; a lab's test codes, units
and reference ranges repeat across messages. ``ElementMemo`` keeps the instances fhir.resources
produced for elements of resources that validated, keyed by model and exact content, and hands
them back when the same content appears again. The resource itself, and every element not seen
before, is still validated by fhir.resources each time; a failing resource never adds anything.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .datatypes import Json
from .errors import InvalidFhirResource

# ~1-2 KB per cached model instance: a few MB, enough for a lab catalogue's codes and ranges.
MEMO_ENTRIES = 8192
# Elements larger than this (a base64 document, a long narrative) are validated every time
# and never kept: they rarely repeat, and 8192 of them could hold gigabytes.
MEMO_MAX_ELEMENT_BYTES = 2048


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str  # the model's attribute name ("class_fhir") for the JSON key ("class")
    model: Any  # the fhir.resources model class of the element (or of each list item)
    is_list: bool


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


@cache
def _complex_fields(model: Any) -> dict[str, _Field]:
    """JSON key -> complex element field of a resource model (primitives are cheap: skipped)."""
    out: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        element = element_model(info.annotation)
        if element is not None and getattr(element, "__resource_type__", None) not in (
                None, "Resource", "DomainResource"):
            out[info.alias or name] = _Field(name, element, _is_list(info.annotation))
    return out


def element_model(annotation: Any) -> Any:
    """The fhir.resources model class a field annotation holds (through Optional/List)."""
    getter = getattr(annotation, "get_model_klass", None)
    if getter is not None:
        return getter()
    for arg in typing.get_args(annotation):
        found = element_model(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (list, typing.List):  # noqa: UP006 - typing's own alias
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


class ElementMemo:
    """Validated element instances by (model, content); FIFO-bounded so memory stays flat."""

    def __init__(self, entries: int = MEMO_ENTRIES) -> None:
        self._entries = entries
        self._items: dict[tuple[Any, bytes], Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, bytes]) -> Any:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: tuple[Any, bytes], instance: Any) -> None:
        if self._entries <= 0:
            return
        if len(self._items) >= self._entries:
            del self._items[next(iter(self._items))]
        self._items[key] = instance


MEMO = ElementMemo()


def validate(resource: Json, memo: ElementMemo | None = None) -> None:
    """Raise InvalidFhirResource naming the failing element path (never the value)."""
    memo = MEMO if memo is None else memo
    resource_type = resource["resourceType"]
    model = _model(resource_type)
    pending: Pending = []
    prepared = _substitute(model, resource, memo, (), pending)
    try:
        validated = model.model_validate(prepared)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
        path = ".".join(str(p) for p in (resource_type, *first["loc"]))
        raise InvalidFhirResource(path, first["type"]) from None
    for key, path in pending:
        memo.put(key, _at(validated, path))


Step = tuple[str, int | None]  # attribute, and the list index when the field repeats
Pending = list[tuple[tuple[Any, bytes], tuple[Step, ...]]]


def _substitute(model: Any, data: Json, memo: ElementMemo, path: tuple[Step, ...],
                pending: Pending) -> Json:
    """A copy of ``data`` with every already validated element replaced by its instance;
    each element not seen before is kept as data (its own elements substituted in turn) and
    noted in ``pending`` with its path, to be memoized once the whole resource validates."""
    fields = _complex_fields(model)
    prepared = dict(data)
    for name, value in data.items():
        field = fields.get(name)
        if field is None:
            continue
        if isinstance(value, dict):
            prepared[name] = _lookup(field, value, (*path, (field.attr, None)), memo, pending)
        elif field.is_list and isinstance(value, list):
            prepared[name] = [
                _lookup(field, item, (*path, (field.attr, i)), memo, pending)
                if isinstance(item, dict) else item for i, item in enumerate(value)]
    return prepared


def _lookup(field: _Field, value: Json, path: tuple[Step, ...], memo: ElementMemo,
            pending: Pending) -> Any:
    key = (field.model, orjson.dumps(value))
    found = memo.get(key)
    if found is not None:
        return found
    if len(key[1]) <= MEMO_MAX_ELEMENT_BYTES:
        pending.append((key, path))
    return _substitute(field.model, value, memo, path, pending)


def _at(instance: Any, path: tuple[Step, ...]) -> Any:
    for attr, index in path:
        instance = getattr(instance, attr)
        if index is not None:
            instance = instance[index]
    return instance
