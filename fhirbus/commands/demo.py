"""``fhirbus demo``: push the HL7 corpus through a running platform and say what happened."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..settings import Settings

DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "hl7v2"


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="send the HL7 corpus to a running listener and report")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, help="listener port (default FHIRBUS_HL7__PORT)")
    demo.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="HL7 v2 files")
    demo.add_argument("--settle", type=float, default=5.0, help="seconds to let consumers work")
    demo.set_defaults(func=_demo)


def corpus_messages(root: Path) -> list[tuple[str, bytes]]:
    """(label, bytes) per message; batch files are split into their messages."""
    from fhirbus.hl7.parser import HL7ParseError, split_batch

    out: list[tuple[str, bytes]] = []
    for path in sorted(root.rglob("*.hl7")):
        raw = path.read_bytes()
        try:
            parts = split_batch(raw) if "batch" in path.parts else [raw]
        except HL7ParseError:
            parts = [raw]  # the listener must reject it; sending it is the point
        out += [(f"{path.parent.name}/{path.name}", p) for p in parts]
    return out


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.producers.mllp.client import MllpClient, ack_code

    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus}: pass --corpus DIR (HL7 v2 files)",
              file=sys.stderr)
        return 2
    port = args.port or settings.hl7.port
    messages = corpus_messages(args.corpus)
    codes: Counter[str] = Counter()
    print(f"sending {len(messages)} HL7 v2 messages to {args.host}:{port} over MLLP ...")
    try:
        with MllpClient(args.host, port) as client:
            for _label, raw in messages:
                codes[ack_code(client.send(raw)) or "no MSA"] += 1
    except OSError as exc:
        print(f"cannot reach the MLLP listener at {args.host}:{port} ({exc}); start it with "
              "`fhirbus hl7 listen` (or `bash scripts/demo`)", file=sys.stderr)
        return 1
    print("acknowledgements: " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())))
    time.sleep(args.settle)
    _print_topic_counts(settings)
    return 0


def _print_topic_counts(settings: Settings) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from ..kafka.config import client_config

    consumer = Consumer({**client_config(settings), "group.id": "fhirbus-demo-report"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        print("records per topic:")
        for name in sorted(topics):
            if name.startswith("__"):
                continue
            total = 0
            for p in topics[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                total += max(0, high - low)
            if total:
                print(f"  {name:32} {total}")
    finally:
        consumer.close()
