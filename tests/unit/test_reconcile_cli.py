"""``fhirbus reconcile``: the site configuration reaches the raw replays it is given for, and
a bad one stops the command before any run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fhirbus.cli import main
from fhirbus.consumers.canonicalizer import load_site_config
from fhirbus.reconciliation import raw_replay

SITE = Path(__file__).resolve().parents[2] / "examples" / "site" / "lab.toml"


def _record(topic: str, feed: bytes, partition: int, offset: int) -> Any:
    return SimpleNamespace(topic=lambda: topic, key=lambda: feed,
                           partition=lambda: partition, offset=lambda: offset)


def test_raw_replays_map_with_the_given_site_configuration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(raw_replay, "replay_raw", lambda settings, site, **kw: calls.append(
        (site, kw["feed"], kw["start"].offset, kw["end"].offset)))
    site = load_site_config(SITE)
    assert site != load_site_config(None)  # the example differs from the defaults
    raw_replay.replay_records(None, [_record("hl7.raw.v1", b"lab", 0, 7),  # type: ignore[arg-type]
                                     _record("hl7.raw.v1", b"lab", 0, 3)], site)
    assert calls == [(site, "lab", 3, 7)]


@pytest.mark.parametrize("action", [["run"], ["schedule", "--max-runs", "1"],
                                    ["worklist", "replay", "1"]])
def test_an_unreadable_site_configuration_stops_the_command(
        action: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRBUS_RECONCILE__DSN", f"sqlite://{tmp_path / 'wl.sqlite'}")
    missing = tmp_path / "site.toml"
    assert main(["reconcile", *action, "--site-config", str(missing)]) == 2
    assert f"cannot read site configuration {missing}" in capsys.readouterr().err
