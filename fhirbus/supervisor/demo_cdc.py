"""The demo's scripted changes to the example CDC database (``labbilling``): inserts, updates
and a delete, each step its own transaction so CDC sees several. Every run uses fresh ids,
so a second run against the same database adds the same kind of changes again instead of
colliding with the first run's rows. The names are made up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

# (sql, params) per statement; each inner list is one transaction.
Step = list[tuple[str, tuple[object, ...]]]


@dataclass(frozen=True)
class CdcScript:
    run: int  # the n-th demo run against this database
    steps: tuple[tuple[str, Step], ...]

    @property
    def changes(self) -> int:
        return sum(len(step) for _, step in self.steps)


def _patients(base: int) -> Step:
    p1, p2, p3 = base + 1, base + 2, base + 3
    return [
        ("INSERT INTO labbilling.patients (id, mrn, family_name, given_name, birth_date, sex) "
         "VALUES (%s, %s, %s, %s, %s, %s)", (pid, f"DEMO-{pid}", fam, given, born, sex))
        for pid, fam, given, born, sex in [
            (p1, "Testperson", "Alma", "1961-04-02", "F"),
            (p2, "Example", "Bruno", "1978-11-23", "M"),
            (p3, "Sample", "Chidi", "1990-07-15", "O"),
        ]
    ]


def _results(base: int) -> Step:
    p1, p2, p3 = base + 1, base + 2, base + 3
    return [
        ("INSERT INTO labbilling.lab_results (id, patient_id, loinc_code, test_name, "
         "value_numeric, value_text, unit, ref_low, ref_high, flag, status, collected_at) "
         "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())", row)
        for row in [
            (base + 101, p1, "2345-7", "Glucose", 182, None, "mg/dL", 70, 99, "H", "P"),
            (base + 102, p1, "718-7", "Hemoglobin", 13.1, None, "g/dL", 12, 16, "N", "F"),
            (base + 103, p2, "2160-0", "Creatinine", 0.9, None, "mg/dL", 0.7, 1.3, "N", "F"),
            (base + 104, p3, "5778-6", "Color of Urine", None, "yellow", None, None, None,
             None, "F"),
        ]
    ]


def _charges(base: int) -> Step:
    p1, p2, p3 = base + 1, base + 2, base + 3
    return [
        ("INSERT INTO labbilling.charges (id, patient_id, encounter_number, charge_code, "
         "description, quantity, unit_price, status, service_date) "
         "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, current_date)", row)
        for row in [
            (base + 201, p1, f"ENC-{p1}", "82947", "Glucose test", 1, 12.50, "billable"),
            (base + 202, p2, f"ENC-{p2}", "82565", "Creatinine test", 1, 9.75, "billable"),
            (base + 203, p3, f"ENC-{p3}", "81003", "Urinalysis", 2, 4.10, "billable"),
        ]
    ]


def script(run: int) -> CdcScript:
    base = 100_000 * run
    p2 = base + 2
    return CdcScript(run, (
        ("insert 3 patients", _patients(base)),
        ("insert 4 lab results", _results(base)),
        ("insert 3 charges", _charges(base)),
        ("final glucose result (P -> F, new value)",
         [("UPDATE labbilling.lab_results SET status = 'F', value_numeric = 176, "
           "row_version = row_version + 1, updated_at = now() WHERE id = %s", (base + 101,))]),
        ("patient name corrected",
         [("UPDATE labbilling.patients SET family_name = 'Exemplar', row_version = "
           "row_version + 1, updated_at = now() WHERE id = %s", (p2,))]),
        ("charge cancelled",
         [("UPDATE labbilling.charges SET status = 'cancelled', row_version = row_version + 1,"
           " updated_at = now() WHERE id = %s", (base + 202,))]),
        ("lab result entered in error, deleted",
         [("DELETE FROM labbilling.lab_results WHERE id = %s", (base + 104,))]),
    ))


def next_run(conn: psycopg.Connection) -> int:
    """1 + how many demo runs this database has seen (their patients carry DEMO- MRNs)."""
    row = conn.execute(
        "SELECT coalesce(max(id) / 100000, 0) FROM labbilling.patients WHERE mrn LIKE 'DEMO-%'"
    ).fetchone()
    return int(row[0]) + 1


def apply(dsn: str) -> CdcScript:
    """Run the next demo script against ``dsn``; raises psycopg.Error when it cannot."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        todo = script(next_run(conn))
        conn.commit()
        for _what, step in todo.steps:
            with conn.transaction():
                for sql, params in step:
                    conn.execute(sql, params)
    return todo
