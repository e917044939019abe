"""Site rules applied to mapped resources: Z-segment extraction and field overrides.

Both run before validation, so a rule that produces invalid FHIR dead-letters the message
with ``invalid_fhir_resource`` and the failing path instead of publishing bad data.
"""

from __future__ import annotations

from typing import Any

from .context import MappingContext
from .datatypes import decimal, fhir_datetime

_VALUE_KEY = {"string": "valueString", "code": "valueCode", "integer": "valueInteger",
              "decimal": "valueDecimal", "boolean": "valueBoolean", "dateTime": "valueDateTime"}


def apply_site_rules(ctx: MappingContext) -> None:
    site = ctx.site
    if not site.z_segments and not site.field_overrides:
        return
    for mapped in ctx.out:
        resource = mapped.resource
        rtype = mapped.resource_type
        for rule in site.z_segments:
            if rule.resource != rtype:
                continue
            for seg in ctx.msg.all(rule.segment):
                value = _typed(seg.get(rule.field, 1, rule.component), rule.value_type, ctx)
                if value is not None:
                    ext = {"url": rule.extension_url, _VALUE_KEY[rule.value_type]: value}
                    resource.setdefault("extension", []).append(ext)
        for override in site.field_overrides:
            if override.resource != rtype:
                continue
            if override.only_if_absent and resource.get(override.element) not in (None, [], ""):
                continue
            value = override.value if override.source is None else ctx.msg.get(override.source)
            if value in (None, ""):
                continue
            resource[override.element] = value


def _typed(text: str, kind: str, ctx: MappingContext) -> Any:
    text = text.strip()
    if not text:
        return None
    if kind in ("string", "code"):
        return text
    if kind == "integer":
        return int(text) if text.lstrip("+-").isdigit() else None
    if kind == "decimal":
        return decimal(text)
    if kind == "boolean":
        return {"Y": True, "N": False, "TRUE": True, "FALSE": False}.get(text.upper())
    return fhir_datetime(text, ctx.tz)
