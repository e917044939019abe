"""``fhirbus project status``: what an operator asks of a read model: which generation
serves, how far behind it is, and what it applied, skipped and ignored."""

from __future__ import annotations

from fhirbus.settings import Settings

from . import positions as pos
from .app import build_projection, dsn_for
from .migrations import applied_versions, ensure_catalog, prefix
from .store import Store, describe


def projection_status(name: str, settings: Settings, store: Store, with_lag: bool = True) -> str:
    with store.transaction() as tx:
        ensure_catalog(tx)  # an empty catalog on a fresh database, rather than an error
        gen = pos.active(tx, name)
        if gen is None:
            return f"{name}: not started ({describe(dsn_for(name, settings))})"
        p = prefix(name, gen)
        stored = pos.load(tx, p)
        stats = pos.load_stats(tx, p)
        schema = max(applied_versions(tx, name, gen), default=0)
    lines = [f"{name}: generation {gen}, schema v{schema}, {describe(dsn_for(name, settings))}"]
    batches = stats.get("batches", 0)
    mean_ms = stats.get("apply_us", 0) / batches / 1000 if batches else 0.0
    lines.append(
        f"  events={stats.get('events', 0)} applied={stats.get('applied', 0)} "
        f"skipped_duplicates={stats.get('duplicates', 0)} "
        f"ignored_stale={stats.get('stale', 0)} batches={batches} "
        f"apply_latency_mean_ms={mean_ms:.2f} "
        f"apply_latency_max_ms={stats.get('apply_us_max', 0) / 1000:.2f}"
    )
    if with_lag:
        from .rebuild import watermarks

        topics = list(build_projection(name, settings).topics)
        marks = watermarks(settings, topics)
        lag = {tp: high - stored.get(tp, low) for tp, (low, high) in marks.items()}
        lines.append(f"  lag={sum(lag.values())} over {len(lag)} partition(s)")
        for (topic, part), value in sorted(lag.items()):
            if value:
                lines.append(f"    {topic}[{part}] lag={value}")
    return "\n".join(lines)

