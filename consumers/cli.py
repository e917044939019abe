"""``fhirbus canonicalize`` and ``fhirbus replay raw``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fhirbus.settings import Settings


def register(sub: Any) -> None:
    canon = sub.add_parser(
        "canonicalize",
        help="map raw HL7 v2 (hl7.raw.v1) to canonical FHIR events (fhir.<resource>.v1)",
        description="Consumer group fhirbus-canonicalizer; unmappable messages go to "
        "dlq.canonicalizer.v1 with their reason.",
    )
    canon.add_argument("--site-config", type=Path, help="per-feed site configuration (TOML)")
    canon.add_argument("--topic", action="append",
                       help="input topic(s) (default hl7.raw.v1 and the cdc.* topics)")
    canon.add_argument("--no-cdc", action="store_true",
                       help="consume only HL7 (by default cdc.* change events are mapped too, "
                       "with the mappings in FHIRBUS_CDC__MAPPINGS_DIR)")
    canon.add_argument("--group", help="consumer group (default fhirbus-canonicalizer)")
    canon.add_argument("--max-records", type=int, help="stop after N records (tools, tests)")
    canon.add_argument("--idle-exit", type=float, help="stop after S seconds without records")
    canon.set_defaults(func=_canonicalize)

    replay = sub.add_parser("replay", help="re-run a stage over a range of its input")
    rsub = replay.add_subparsers(dest="replay_command", metavar="SOURCE", required=True)
    raw = rsub.add_parser(
        "raw",
        help="re-canonicalize a range of hl7.raw.v1 (e.g. after a mapping fix)",
        description="Unchanged resources are not republished; changed ones get a new version.",
    )
    raw.add_argument("--feed", required=True, help="feed id (the raw record key)")
    raw.add_argument("--from", dest="start", required=True,
                     help="ISO-8601 time, an offset, or PARTITION:OFFSET")
    raw.add_argument("--to", dest="end", help="ISO-8601 time, an offset, or PARTITION:OFFSET "
                     "(inclusive; default: the end of the topic when the replay starts)")
    raw.add_argument("--site-config", type=Path, help="per-feed site configuration (TOML)")
    raw.add_argument("--topic", default=None, help="raw topic (default hl7.raw.v1)")
    raw.add_argument("--dry-run", action="store_true", help="report, publish nothing")
    raw.set_defaults(func=_replay_raw)


def _canonicalize(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus import telemetry
    from fhirbus.consumers.canonicalizer import app, load_site_config
    from fhirbus.consumers.canonicalizer.cdc import cdc_topics
    from fhirbus.schemas.topics import RAW_HL7

    site = load_site_config(args.site_config)  # invalid -> ConfigError, exit 2 with the key
    telemetry.configure(settings, service="fhirbus-canonicalizer")
    done = app.run(
        settings,
        site,
        topics=args.topic or [RAW_HL7, *([] if args.no_cdc else cdc_topics(settings))],
        group_id=args.group or app.GROUP_ID,
        max_records=args.max_records,
        idle_exit_s=args.idle_exit,
    )
    print(f"canonicalized {done} record(s)", file=sys.stderr)
    return 0


def _replay_raw(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.consumers.canonicalizer import load_site_config, replay
    from fhirbus.schemas.topics import RAW_HL7

    site = load_site_config(args.site_config)
    report = replay.replay_raw(
        settings,
        site,
        feed=args.feed,
        start=replay.parse_position(args.start),
        end=replay.parse_position(args.end) if args.end else None,
        topic=args.topic or RAW_HL7,
        dry_run=args.dry_run,
    )
    print(report.summary())
    return 0
