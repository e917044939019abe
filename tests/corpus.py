"""Where the shared conformance corpus is: ``shared/`` beside the repository (as in CI), or
``FHIRBUS_CORPUS`` when it lives elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS_ROOT = Path(
    os.environ.get("FHIRBUS_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
HL7_CORPUS = CORPUS_ROOT / "hl7v2"
