"""Container healthchecks for the fhirbus services in docker-compose.kafka.yml.

``healthcheck.py kafka``: the configured cluster answers a metadata request (what every
consumer needs). ``healthcheck.py tcp PORT``: something accepts connections on PORT here.
Exit 0 = healthy; otherwise one line on stderr saying what failed.
"""

from __future__ import annotations

import socket
import sys


def kafka() -> int:
    from confluent_kafka.admin import AdminClient

    from fhirbus.kafka.config import client_config
    from fhirbus.settings import load_settings

    try:
        conf = {**client_config(load_settings()), "log_level": 0}  # the verdict, not noise
        AdminClient(conf).list_topics(timeout=5)
    except Exception as exc:  # any failure means unhealthy; say which
        print(f"kafka unreachable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def tcp(port: int) -> int:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as exc:
        print(f"nothing accepts connections on port {port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["kafka"]:
        sys.exit(kafka())
    if sys.argv[1:2] == ["tcp"] and len(sys.argv) == 3:
        sys.exit(tcp(int(sys.argv[2])))
    print("usage: healthcheck.py kafka | tcp PORT", file=sys.stderr)
    sys.exit(2)
