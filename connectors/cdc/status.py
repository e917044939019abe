"""What ``fhirbus cdc status`` (and ``fhirbus status``) shows for one source."""

from __future__ import annotations

from typing import Any

import psycopg

from fhirbus.connectors.sources import SourceDeclaration
from fhirbus.settings import Settings

from . import catalog, snapshot
from .changes import format_lsn


def source_status(source: SourceDeclaration, settings: Settings) -> dict[str, Any]:
    """Slot, lag and snapshot state as a JSON-able dict; ``error`` when the database cannot
    be asked (the rest is then what is known locally)."""
    state = snapshot.read_state(snapshot.state_path(settings.state_dir, source.name))
    out: dict[str, Any] = {
        "source": source.name, "slot": source.slot,
        "snapshot": state.status if state else "not started",
        "snapshot_rows": state.rows if state else 0,
    }
    try:
        with catalog.connect(source.dsn) as conn:
            slot = catalog.slot_state(conn, source.slot)
            current = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    except psycopg.Error as exc:
        out["error"] = f"source database unreachable: {type(exc).__name__}"
        return out
    out["slot_exists"] = slot is not None
    if slot is not None and current is not None:
        confirmed = slot.confirmed_lsn or 0
        out.update(plugin=slot.plugin, active=slot.active,
                   confirmed_flush_lsn=format_lsn(confirmed),
                   lag_bytes=max(0, int(current[0]) - confirmed))
    return out
