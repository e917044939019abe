"""Shared fixtures: an embedded stack (mock Kafka + registry) per test module, and settings
pointing at it through a private state dir, exactly as separate fhirbus processes find it."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.settings import Settings, load_settings

_SPANS = InMemorySpanExporter()


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """A test that runs ``fhirbus.cli.main`` configures the root logger (level, handler) for
    the whole process; put it back so later tests see the logging they set up themselves."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _tracing() -> None:
    """A real SDK tracer provider, as telemetry.configure installs in every process."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_SPANS))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _SPANS.clear()
    return _SPANS


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """Three brokers, so tests can take one down while the cluster stays up."""
    with EmbeddedStack(num_brokers=3, with_registry=True) as stack:
        state_dir = tmp_path_factory.mktemp("state")
        stack.publish(state_dir)
        stack.state_dir = state_dir  # type: ignore[attr-defined]
        yield stack


@pytest.fixture
def settings(embedded_stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for this test; child processes inherit the same env and find the stack."""
    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FHIRBUS_STATE_DIR", str(embedded_stack.state_dir))  # type: ignore[attr-defined]
    monkeypatch.setenv("FHIRBUS_LOG_FORMAT", "text")
    return load_settings()


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic and group names, so tests sharing a stack never collide."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


from tests.corpus import CORPUS_ROOT as CORPUS  # noqa: E402


@pytest.fixture
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"conformance corpus not found at {CORPUS} (shared/ must sit beside the repo)")
    return CORPUS
