"""A failed reconciliation run says what failed without the exception's text: the summary is
printed on every scheduled run, and the report and the worklist keep it, while a database
error or a KeyError can quote a patient's row value or key."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fhirbus.reconciliation import checks, runner
from fhirbus.settings import Settings, load_settings

PHI = ("Smith^John", "MRN-0042")


class _RowError(Exception):
    """Like psycopg's errors: a SQLSTATE, and a message quoting the row."""

    sqlstate = "22P02"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FHIRBUS_RECONCILE__DSN", f"sqlite://{tmp_path / 'wl.sqlite'}")
    monkeypatch.setenv("FHIRBUS_RECONCILE__REPORT_DIR", str(tmp_path / "reports"))
    return load_settings()


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("error", [
    _RowError(f'invalid input syntax for type integer: "{PHI[0]}" ({PHI[1]})'),
    KeyError(PHI[1]),
])
def test_a_failed_scheduled_run_names_the_error_type_only(
        error: Exception, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*_args: object) -> None:
        raise error

    monkeypatch.setattr(checks, "load_index", fail)
    caplog.set_level(logging.INFO)
    assert runner.schedule(settings, 0, checks=("canonical",), max_runs=1) == 1
    printed = capsys.readouterr()
    stored = b"".join(p.read_bytes() for p in runner.report_dir(settings).glob("*.json"))
    report = orjson.loads(stored)
    assert report["errors"] and type(error).__name__ in report["errors"][0]
    assert "reconcile run failed" in caplog.text
    for value in PHI:
        assert value not in caplog.text
        assert value not in printed.out + printed.err
        assert value.encode() not in stored
    if isinstance(error, _RowError):
        assert "SQLSTATE 22P02" in report["errors"][0]
