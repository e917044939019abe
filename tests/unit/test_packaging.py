"""Every package folder is declared in pyproject.toml, so a non-editable install is whole."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEP_FOLDERS = ("producers", "consumers", "schemas", "connectors", "projections", "reconciliation")


def _declared() -> tuple[set[str], dict[str, str]]:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(tool["packages"]), tool["package-dir"]


def _on_disk(package_dir: dict[str, str]) -> set[str]:
    found = set()
    for package, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((package, *rel)))
    return found


def test_every_package_is_declared() -> None:
    declared, package_dir = _declared()
    assert _on_disk(package_dir) <= declared | {"fhirbus.schemas.avro"}


def test_required_top_level_layout() -> None:
    for name in (*STEP_FOLDERS, "tests", "docker-compose.kafka.yml", "pyproject.toml",
                 "README.md", ".ci/run"):
        assert (ROOT / name).exists(), name
    _, package_dir = _declared()
    assert all(package_dir[f"fhirbus.{step}"] == step for step in STEP_FOLDERS)
