"""The CDC reader stops on an error it cannot retry without the error's text reaching its
log: a conversion error after a column changed type quotes the row value, a database error
can too, and the reader's uncaught exception ends up in the service's log."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from types import SimpleNamespace

import psycopg
import pytest

from fhirbus.connectors.cdc import reader as cdc_reader
from fhirbus.connectors.cdc.events import debezium_value
from fhirbus.settings import ConfigError, load_settings

MRN = "MRN-0042"


def _convert() -> int:
    # An `integer` column that now holds text: the table definition the reader loaded at
    # start still says integer.
    debezium_value("integer", MRN)
    return 1


def _database() -> int:
    raise psycopg.errors.InvalidTextRepresentation(
        f'invalid input syntax for type integer: "{MRN}"')


def _fake_reader(step: Callable[[], int]) -> SimpleNamespace:
    return SimpleNamespace(source=SimpleNamespace(name="labbilling"), settings=load_settings(),
                           start=lambda: None, step=step, stats=cdc_reader.Stats())


@pytest.mark.parametrize("step", [_convert, _database])
def test_a_stop_on_a_row_error_logs_and_raises_no_row_value(
        step: Callable[[], int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(cdc_reader.ReaderStopped) as stopped:
        cdc_reader.run(_fake_reader(step), threading.Event())  # type: ignore[arg-type]
    crash = "".join(traceback.format_exception(stopped.value))
    assert MRN not in crash
    assert MRN not in caplog.text
    assert "stopping without advancing the slot" in caplog.text
    assert stopped.value.__cause__ is None and stopped.value.__suppress_context__
    if step is _database:
        assert "SQLSTATE 22P02" in str(stopped.value)


def test_the_detail_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=cdc_reader.log.name)
    with pytest.raises(cdc_reader.ReaderStopped):
        cdc_reader.run(_fake_reader(_convert), threading.Event())  # type: ignore[arg-type]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug and debug[0].exc_info is not None and MRN in str(debug[0].exc_info[1])


def test_a_configuration_error_is_shown_as_it_is() -> None:
    def bad() -> int:
        raise ConfigError("CDC table lab.results has no primary key")

    with pytest.raises(ConfigError, match="no primary key"):
        cdc_reader.run(_fake_reader(bad), threading.Event())  # type: ignore[arg-type]
