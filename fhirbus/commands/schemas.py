"""``fhirbus schemas check|register``: schema governance for the files in ``schemas/avro``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings


def register(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="schema governance (compatibility, registration)")
    ssub = schemas.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    check = ssub.add_parser(
        "check", help="fail when a schema version is not compatible with its predecessors"
    )
    check.add_argument("--dir", type=Path, help="schema directory (default: the package's)")
    check.add_argument(
        "--registry", action="store_true",
        help="also ask FHIRBUS_SCHEMA_REGISTRY_URL's compatibility API",
    )
    check.set_defaults(func=_check)
    reg = ssub.add_parser("register", help="register every schema version, in order")
    reg.add_argument("--dir", type=Path)
    reg.set_defaults(func=_register)


def _schema_dir(args: argparse.Namespace) -> Path:
    from ..embedded.broker import schema_dir

    return args.dir or schema_dir()


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.schemas.compat import POLICY_LEVEL
    from fhirbus.schemas.governance import SchemaFileError, check_repository, load_schema_files

    directory = _schema_dir(args)
    try:
        subjects = load_schema_files(directory)
        findings = check_repository(directory)
        if args.registry:
            findings += _registry_findings(directory, settings)
    except SchemaFileError as exc:
        print(f"schema files are malformed:\n{exc}", file=sys.stderr)
        return 1
    for finding in findings:
        print(finding, file=sys.stderr)
    errors = [f for f in findings if f.severity == "error"]
    versions = sum(len(v) for v in subjects.values())
    print(f"{len(subjects)} subject(s), {versions} version(s) checked under {POLICY_LEVEL}: "
          f"{'FAILED' if errors else 'ok'}")
    if errors:
        print("a breaking change needs a new major topic version (see README, 'Schema "
              "evolution'), not a new schema version", file=sys.stderr)
    return 1 if errors else 0


def _registry_findings(directory: Path, settings: Settings) -> list[Any]:
    from fhirbus.schemas.governance import check_against_registry
    from fhirbus.schemas.serde import registry_client

    from ..kafka.config import resolve_registry_url

    auth = settings.schema_registry_basic_auth
    client = registry_client(
        resolve_registry_url(settings), auth.get_secret_value() if auth else None
    )
    return check_against_registry(directory, client)


def _register(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka.schema_registry import Schema

    from fhirbus.schemas.compat import POLICY_LEVEL
    from fhirbus.schemas.governance import check_repository, load_schema_files
    from fhirbus.schemas.serde import registry_client

    from ..kafka.config import resolve_registry_url

    directory = _schema_dir(args)
    if check_repository(directory):
        print("refusing to register: `fhirbus schemas check` fails", file=sys.stderr)
        return 1
    auth = settings.schema_registry_basic_auth
    client = registry_client(
        resolve_registry_url(settings), auth.get_secret_value() if auth else None
    )
    for subject, files in load_schema_files(directory).items():
        client.set_compatibility(subject, POLICY_LEVEL)
        for f in files:
            schema_id = client.register_schema(subject, Schema(f.schema_str, "AVRO"))
            print(f"{subject} v{f.version}: id {schema_id}")
    return 0
