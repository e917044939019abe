"""MSH-9 -> mapper. Anything not listed is dead-lettered as ``unsupported_message_type``."""

from __future__ import annotations

from collections.abc import Callable

from .adt import ADT_TRIGGERS, map_adt
from .context import MappingContext
from .errors import UnsupportedMessageType
from .merge import MERGE_TRIGGERS, map_merge
from .oru import map_oru

Mapper = Callable[[MappingContext], None]

# (message code, trigger) -> mapper; the message families of issue 4.
ROUTES: dict[tuple[str, str], Mapper] = {
    **{("ADT", t): map_adt for t in ADT_TRIGGERS},
    **{("ADT", t): map_merge for t in MERGE_TRIGGERS},
    ("ORU", "R01"): map_oru,
}


_ONLY_TRIGGER = {"ORU": "R01", "ORM": "O01", "DFT": "P03", "VXU": "V04"}


def _register_optional() -> None:
    # Families in their own modules; imported here so the table stays in one place.
    from .dft import map_dft
    from .mdm import MDM_TRIGGERS, map_mdm
    from .orders import ORDER_TYPES, map_orders
    from .scheduling import SIU_TRIGGERS, map_siu
    from .vxu import map_vxu

    ROUTES.update({key: map_orders for key in ORDER_TYPES})
    ROUTES[("DFT", "P03")] = map_dft
    ROUTES.update({("SIU", t): map_siu for t in SIU_TRIGGERS})
    ROUTES[("VXU", "V04")] = map_vxu
    ROUTES.update({("MDM", t): map_mdm for t in MDM_TRIGGERS})


_register_optional()


def message_key(ctx: MappingContext) -> tuple[str, str]:
    code = ctx.msh.get(9, 1, 1).strip().upper()
    trigger = ctx.msh.get(9, 1, 2).strip().upper()
    if not trigger and code == "ADT":
        evn = ctx.msg.segment("EVN")
        trigger = evn.get(1).strip().upper() if evn else ""
    # Pre-2.3 senders often leave the trigger out where the code has one usual trigger.
    return code, trigger or _ONLY_TRIGGER.get(code, "")


def route(ctx: MappingContext) -> Mapper:
    key = message_key(ctx)
    mapper = ROUTES.get(key)
    if mapper is None:
        shown = "^".join(key).strip("^") or "(empty)"
        raise UnsupportedMessageType("MSH-9", shown)
    return mapper


def supported_types() -> list[str]:
    return sorted(f"{code}^{trigger}" for code, trigger in ROUTES)
