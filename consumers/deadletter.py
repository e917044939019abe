"""Dead-letter records: the original key and bytes, the error context in headers."""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import ErrorClass
from .records import Headers, Publish, Record

# Header names are a public contract: `fhirbus dlq` and ops tooling filter on them.
H_ERROR_CLASS = "dlq.error_class"
H_ERROR_TYPE = "dlq.error_type"
H_ERROR_MESSAGE = "dlq.error_message"
H_STAGE = "dlq.stage"
H_GROUP = "dlq.consumer_group"
H_TOPIC = "dlq.original_topic"
H_PARTITION = "dlq.original_partition"
H_OFFSET = "dlq.original_offset"
H_TIMESTAMP = "dlq.original_timestamp"
H_ATTEMPTS = "dlq.attempts"
H_FIRST_FAILED = "dlq.first_failed_at"
H_FAILED = "dlq.failed_at"
H_TRACE = "dlq.trace_id"
MAX_ERROR_MESSAGE = 2_000


def dead_letter(
    record: Record,
    *,
    topic: str,
    stage: str,
    group: str,
    error: BaseException,
    error_class: ErrorClass | str,
    attempts: int,
    first_failed_at: datetime,
    trace_id: str | None,
) -> Publish:
    """Build the dead-letter record. The error message goes only to the DLQ topic (which is
    classified PHI like its source), never to logs, because it may quote content."""
    context: Headers = [
        (H_ERROR_CLASS, str(error_class).encode()),
        (H_ERROR_TYPE, type(error).__name__.encode()),
        (H_ERROR_MESSAGE, str(error)[:MAX_ERROR_MESSAGE].encode("utf-8", "replace")),
        (H_STAGE, stage.encode()),
        (H_GROUP, group.encode()),
        (H_TOPIC, record.topic.encode()),
        (H_PARTITION, str(record.partition).encode()),
        (H_OFFSET, str(record.offset).encode()),
        (H_TIMESTAMP, str(record.timestamp_ms).encode()),
        (H_ATTEMPTS, str(attempts).encode()),
        (H_FIRST_FAILED, first_failed_at.isoformat().encode()),
        (H_FAILED, datetime.now(UTC).isoformat().encode()),
    ]
    if trace_id:
        context.append((H_TRACE, trace_id.encode()))
    # Original headers ride along (minus any earlier DLQ context), so a replay is faithful.
    original = [(k, v) for k, v in record.headers if not k.startswith("dlq.")]
    return Publish(topic=topic, value=record.raw, key=record.key, headers=original + context)
