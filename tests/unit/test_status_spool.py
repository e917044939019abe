"""`fhirbus status` shows the listener spool: depth, and records the broker refused for good."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fhirbus.producers.mllp.app import spool_path
from fhirbus.producers.mllp.intake import Record
from fhirbus.producers.mllp.spool import Spool
from fhirbus.settings import Settings, load_settings
from fhirbus.supervisor import screen, status


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FHIRBUS_STATE_DIR", str(tmp_path))
    return load_settings()


def test_status_counts_spooled_and_refused_records(settings: Settings) -> None:
    path = spool_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    spool = Spool(path)
    spool.start()
    try:
        seqs = [spool.append("raw", Record("hl7.raw.v1", b"feed", b"MSH|%d" % n, []), None)
                .result(5) for n in range(3)]
        assert spool.refuse(seqs[0], "MSG_SIZE_TOO_LARGE").result(5)
    finally:
        spool.close()
    collected = status.collect(settings)  # no broker here: Kafka's part says so
    assert (collected["spool"]["depth"], collected["spool"]["refused"]) == (2, 1)
    line = next(x for x in screen.render(collected).splitlines()
                if x.startswith("listener spool"))
    assert "refused by the broker: 1" in line


def test_no_spool_yet(settings: Settings) -> None:
    assert status._spool(settings)["depth"] == 0

