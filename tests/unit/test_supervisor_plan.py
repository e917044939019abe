"""What ``fhirbus up`` decides before starting anything: CDC on or off (and why), which
processes, the analytics key kept in the state dir, a busy MLLP port refused up front."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from fhirbus.settings import ConfigError, Settings, load_settings
from fhirbus.supervisor.cdc import CdcPlan, describe_dsn, plan_cdc
from fhirbus.supervisor.plan import build_plan, port_problem

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/fhirbus_nowhere"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FHIRBUS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FHIRBUS_CDC_LABBILLING_DSN", UNREACHABLE)
    return load_settings()


def test_cdc_off_when_postgres_is_unreachable_says_how_to_enable(settings: Settings) -> None:
    plan = plan_cdc(settings, has_cdc_command=True)
    assert not plan.enabled
    assert "127.0.0.1:1/fhirbus_nowhere is not reachable" in plan.note
    assert "wal_level=logical" in plan.note and "FHIRBUS_CDC_LABBILLING_DSN" in plan.note


def test_cdc_yes_with_unreachable_postgres_stops_with_the_reason(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRBUS_SUPERVISOR__WITH_CDC", "yes")
    with pytest.raises(ConfigError, match="CDC cannot start: source labbilling"):
        plan_cdc(load_settings(), has_cdc_command=True)


def test_cdc_no_and_missing_command(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no `fhirbus cdc run`" in plan_cdc(settings, has_cdc_command=False).note
    monkeypatch.setenv("FHIRBUS_SUPERVISOR__WITH_CDC", "no")
    assert plan_cdc(load_settings(), has_cdc_command=True).note.startswith("CDC off (")


def test_dsn_is_described_without_credentials() -> None:
    assert describe_dsn("postgresql://u:secret@db:6432/x") == "db:6432/x"


def test_plan_processes_and_the_analytics_key(settings: Settings) -> None:
    cdc = CdcPlan(True, "on", sources=["lab"], env={"FHIRBUS_CDC__SOURCES_FILE": "/s.yaml"})
    plan = build_plan(settings, cdc, mllp_port=40001)
    by_name = {s.name: s for s in plan.specs}
    assert {"broker", "hl7-listener", "canonicalizer", "projection-ehr", "projection-billing",
            "projection-analytics", "cdc-lab"} <= set(by_name)
    assert by_name["hl7-listener"].argv[-2:] == ("--port", "40001")
    assert by_name["cdc-lab"].argv == ("cdc", "run", "--source", "lab")
    assert ("FHIRBUS_CDC__SOURCES_FILE", "/s.yaml") in by_name["canonicalizer"].env
    key_file = settings.state_dir / "analytics.secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = dict(by_name["projection-analytics"].env)["FHIRBUS_PROJECTIONS__ANALYTICS_SECRET"]
    assert key == key_file.read_text().strip() and len(key) == 64
    again = build_plan(settings, cdc, mllp_port=40001)  # the same key next time
    assert dict({s.name: s for s in again.specs}["projection-analytics"].env) == \
        dict(by_name["projection-analytics"].env)


def test_canonicalizers_scale_out_in_one_group(settings: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRBUS_SUPERVISOR__CANONICALIZERS", "3")
    plan = build_plan(load_settings(), CdcPlan(False, "off"), mllp_port=40001)
    canon = [s for s in plan.specs if s.kind == "canonicalizer"]
    assert [s.name for s in canon] == ["canonicalizer", "canonicalizer-2", "canonicalizer-3"]
    assert {s.group for s in canon} == {"fhirbus-canonicalizer"}


def test_a_busy_port_is_refused_with_what_to_do() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        problem = port_problem("127.0.0.1", s.getsockname()[1])
    assert problem is not None and "FHIRBUS_HL7__PORT" in problem
