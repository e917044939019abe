"""Throughput of fhirbus.hl7 against python-hl7 and hl7apy on the shared HL7 v2 corpus.

Run from the repo root:  python bench/hl7_parser.py [--corpus DIR] [--seconds S]

All three parsers get the same messages: every corpus message (batch files split) that all
three accept. The competitors get their input pre-normalised to CR terminators outside the
timed loop (they require it), ours gets the text as sent. Per message we time:

* ours:       parse + read MSH-9, MSH-10, PID-3, PID-5 and every OBX-3 / OBX-5 (decoded);
* python-hl7: hl7.parse (eager: every field is already split);
* hl7apy:     parse_message(find_groups=False, tolerant), its cheapest mode.

hl7apy costs ~10 ms per message, so it runs two passes only (the first also finds the
messages it rejects) to keep the bench well under a minute.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fhirbus.hl7  # noqa: F401
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hl7 as pyhl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from fhirbus.hl7 import HL7EncodingError, HL7ParseError, decode_message, parse, split_batch

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "hl7v2"


def load(corpus: Path) -> list[tuple[str, str]]:
    """(text as sent, text with CR terminators and no blank lines) of every message that we
    and python-hl7 accept; hl7apy is filtered later, in its first timed pass."""
    usable = []
    for path in sorted(corpus.rglob("*.hl7")):
        if path.parent.name == "invalid":
            continue
        try:
            parts = split_batch(path.read_bytes())
        except HL7ParseError:
            continue
        for raw in parts:
            try:
                text = decode_message(raw)[0]
                parse(text)
            except (HL7ParseError, HL7EncodingError):
                continue
            lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
            cr_text = "\r".join(line for line in lines if line.strip())
            try:
                pyhl7.parse(cr_text)
            except Exception:  # not comparable
                continue
            usable.append((text, cr_text))
    return usable


def hl7apy_pass(messages: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], float]:
    """One timed hl7apy pass: the messages it accepts and its rate over those."""
    accepted = []
    elapsed = 0.0
    gc.collect()
    for message in messages:
        start = time.perf_counter()
        try:
            hl7apy_parse(message[1])
        except Exception:  # hl7apy rejects it: drop it for every parser
            continue
        elapsed += time.perf_counter() - start
        accepted.append(message)
    return accepted, len(accepted) / elapsed


def ours(text: str) -> None:
    msg = parse(text)
    msg.get("MSH-9")
    msg.get("MSH-9.2")
    msg.get("MSH-10")
    pid = msg.segment("PID")
    if pid is not None:
        pid.get(3)
        pid.get(5)
        pid.get(5, 1, 2)
    for obx in msg.all("OBX"):
        obx.get(3)
        obx.get(5)


def python_hl7(text: str) -> None:
    pyhl7.parse(text)


def hl7apy_parse(text: str) -> None:
    parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)


def measure(fn: Callable[[str], None], texts: list[str], budget: float) -> float:
    """Best messages/s over repeated passes within the time budget."""
    best = 0.0
    spent = 0.0
    passes = 0
    while spent < budget or passes == 0:
        gc.collect()
        start = time.perf_counter()
        for text in texts:
            fn(text)
        elapsed = time.perf_counter() - start
        spent += elapsed
        passes += 1
        best = max(best, len(texts) / elapsed)
    return best


def single_oru_latency() -> float | None:
    """µs for parse + ~20 field reads of the 8-segment NIST ORU (the design target: < 50)."""
    path = DEFAULT_CORPUS / "oru/ruby-nist-ORU_R01_2.5.1_SampleTestCase6.hl7"
    if not path.exists():
        return None
    text = decode_message(path.read_bytes())[0]

    def work() -> None:
        msg = parse(text)
        for p in ("MSH-9.1", "MSH-9.2", "MSH-10", "MSH-12", "MSH-3", "MSH-4", "PID-3", "PID-3.4"):
            msg.get(p)
        for p in ("PID-5.1", "PID-5.2", "PID-7", "PID-8", "PID-11.1", "PID-11.3"):
            msg.get(p)
        for obx in msg.all("OBX"):
            obx.get(3)
            obx.get(5)

    n = 10000
    best = min(_timed(work, n) for _ in range(3))
    return best / n * 1e6


def _timed(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seconds", type=float, default=4.0, help="budget per fast parser")
    args = parser.parse_args()

    messages, hl7apy_rate = hl7apy_pass(load(args.corpus))
    if not messages:
        sys.exit(f"no usable messages under {args.corpus}")
    hl7apy_rate = max(hl7apy_rate, hl7apy_pass(messages)[1])
    as_sent = [text for text, _ in messages]
    cr_only = [cr for _, cr in messages]
    segments = sum(cr.count("\r") + 1 for cr in cr_only)
    print(f"{len(messages)} messages, {segments} segments (avg {segments / len(messages):.1f})")

    rates = {
        "fhirbus.hl7 (parse + reads)": measure(ours, as_sent, args.seconds),
        "python-hl7 (hl7.parse)": measure(python_hl7, cr_only, args.seconds),
        "hl7apy (parse_message)": hl7apy_rate,
    }
    print(f"\n{'parser':<30} {'messages/s':>12} {'µs/message':>12}")
    for name, rate in rates.items():
        print(f"{name:<30} {rate:>12,.0f} {1e6 / rate:>12.1f}")
    ours_rate, pyhl7_rate, hl7apy_rate = rates.values()
    print(f"\nours / python-hl7: {ours_rate / pyhl7_rate:,.1f}x")
    print(f"ours / hl7apy:     {ours_rate / hl7apy_rate:,.0f}x")
    latency = single_oru_latency()
    if latency is not None:
        print(f"8-segment ORU, parse + 20 reads: {latency:.1f} µs (target < 50 µs)")


if __name__ == "__main__":
    main()
