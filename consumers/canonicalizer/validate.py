"""Validation of every mapped resource with fhir.resources (R4B models) before publishing.

One ``model_validate`` per resource, on the dict the mapper built; the published JSON is that
same dict (serialized with orjson), so what is published is exactly what was validated and
nothing is validated twice or re-serialized through pydantic.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .datatypes import Json
from .errors import InvalidFhirResource


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def validate(resource: Json) -> None:
    """Raise InvalidFhirResource naming the failing element path (never the value)."""
    resource_type = resource["resourceType"]
    try:
        _model(resource_type).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
        path = ".".join(str(p) for p in (resource_type, *first["loc"]))
        raise InvalidFhirResource(path, first["type"]) from None
