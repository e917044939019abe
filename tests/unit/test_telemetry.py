"""Telemetry configuration, run in a fresh interpreter (providers are process-global)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging
from opentelemetry import trace, metrics
from fhirbus import telemetry
from fhirbus.settings import load_settings
telemetry.configure(load_settings(), service="probe")
with telemetry.tracer().start_as_current_span("probe-span"):
    logging.getLogger("probe").info("hello", extra={"count": 3})
metrics.get_meter("probe").create_counter("probe.counter").add(1)
trace.get_tracer_provider().shutdown()
metrics.get_meter_provider().shutdown()
"""


def _run(exporter: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBUS_")}
    env |= {"FHIRBUS_TELEMETRY__EXPORTER": exporter, "FHIRBUS_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=60, check=True)


def test_console_exporter_emits_spans_metrics_and_json_logs_with_trace_id() -> None:
    err = _run("console").stderr
    assert '"name": "probe-span"' in err
    assert "probe.counter" in err
    log_line = next(line for line in err.splitlines() if '"msg":"hello"' in line)
    assert '"trace_id":' in log_line and '"count":3' in log_line


def test_no_exporter_stays_quiet() -> None:
    err = _run("none").stderr
    assert "probe-span" not in err and "probe.counter" not in err
