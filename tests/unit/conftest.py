"""Fixtures shared by the unit tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbus.projections import testing
from fhirbus.projections.store import Store


@pytest.fixture(params=testing.BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """One contract, every backend: each projection test runs on SQLite and PostgreSQL
    (skipped with the reason only when PostgreSQL cannot be reached)."""
    if request.param == "postgresql" and (why := testing.pg_available()):
        pytest.skip(why)
    with testing.open_test_store(request.param, tmp_path) as s:
        yield s
