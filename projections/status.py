"""``fhirbus project status``: what an operator asks of a read model: which generation
serves, how far behind it is, and what it applied, skipped and ignored.

``status_of`` returns the figures as data (for ``fhirbus status --json`` and tests);
``projection_status`` renders them for people.
"""

from __future__ import annotations

from typing import Any

from fhirbus.settings import Settings

from . import positions as pos
from .app import build_projection, dsn_for
from .migrations import applied_versions, ensure_catalog, prefix
from .store import Store, describe


def status_of(name: str, settings: Settings, store: Store, with_lag: bool = True
              ) -> dict[str, Any]:
    """Generation, counters and (when asked) lag per partition against the broker's high
    watermarks; lag counts from the offsets stored with the read model, not a group's."""
    with store.transaction() as tx:
        ensure_catalog(tx)  # an empty catalog on a fresh database, rather than an error
        gen = pos.active(tx, name)
        if gen is None:
            # Never started: the lag is everything on its topics, the backlog a first
            # start will work through.
            fresh = {"projection": name, "started": False,
                     "store": describe(dsn_for(name, settings))}
            return {**fresh, **(_lag(name, settings, {}) if with_lag else {})}
        p = prefix(name, gen)
        stored = pos.load(tx, p)
        stats = pos.load_stats(tx, p)
        schema = max(applied_versions(tx, name, gen), default=0)
    batches = stats.get("batches", 0)
    status: dict[str, Any] = {
        "projection": name, "started": True, "generation": gen, "schema_version": schema,
        "store": describe(dsn_for(name, settings)),
        "events": stats.get("events", 0), "applied": stats.get("applied", 0),
        "skipped_duplicates": stats.get("duplicates", 0),
        "ignored_stale": stats.get("stale", 0), "batches": batches,
        "apply_latency_mean_ms": round(stats.get("apply_us", 0) / batches / 1000, 3)
        if batches else 0.0,
        "apply_latency_max_ms": stats.get("apply_us_max", 0) / 1000,
    }
    if with_lag:
        status.update(_lag(name, settings, stored))
    return status


def _lag(name: str, settings: Settings, stored: dict[Any, int]) -> dict[str, Any]:
    """Lag per partition: the high watermark less the stored next offset (or the low one)."""
    from .rebuild import watermarks

    topics = list(build_projection(name, settings).topics)
    marks = watermarks(settings, topics)
    lag = {tp: high - stored.get(tp, low) for tp, (low, high) in marks.items()}
    return {"lag": sum(lag.values()),
            "lag_by_partition": {f"{t}[{part}]": v for (t, part), v in sorted(lag.items())}}


def projection_status(name: str, settings: Settings, store: Store, with_lag: bool = True) -> str:
    s = status_of(name, settings, store, with_lag)
    if not s["started"]:
        waiting = f"; lag={s['lag']} over {len(s['lag_by_partition'])} partition(s)" \
            if "lag" in s else ""
        return f"{name}: not started ({s['store']}){waiting}"
    lines = [
        f"{name}: generation {s['generation']}, schema v{s['schema_version']}, {s['store']}",
        f"  events={s['events']} applied={s['applied']} "
        f"skipped_duplicates={s['skipped_duplicates']} ignored_stale={s['ignored_stale']} "
        f"batches={s['batches']} apply_latency_mean_ms={s['apply_latency_mean_ms']:.2f} "
        f"apply_latency_max_ms={s['apply_latency_max_ms']:.2f}",
    ]
    if "lag" in s:
        lines.append(f"  lag={s['lag']} over {len(s['lag_by_partition'])} partition(s)")
        lines += [f"    {tp} lag={v}" for tp, v in s["lag_by_partition"].items() if v]
    return "\n".join(lines)
