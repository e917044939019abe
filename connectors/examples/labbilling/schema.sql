-- Example CDC source: a small lab and billing database that has no HL7 feed.
-- Applied by tests, `fhirbus demo` and docker-compose.kafka.yml (source PostgreSQL).
-- Idempotent: safe to run again on an existing database.
CREATE SCHEMA IF NOT EXISTS labbilling;

CREATE TABLE IF NOT EXISTS labbilling.patients (
    id          bigint PRIMARY KEY,
    mrn         text NOT NULL UNIQUE,
    family_name text NOT NULL,
    given_name  text,
    birth_date  date,
    sex         char(1) CHECK (sex IN ('M', 'F', 'O', 'U')),
    active      boolean NOT NULL DEFAULT true,
    row_version integer NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS labbilling.lab_results (
    id            bigint PRIMARY KEY,
    patient_id    bigint NOT NULL REFERENCES labbilling.patients (id),
    loinc_code    text NOT NULL,
    test_name     text NOT NULL,
    value_numeric numeric(12, 4),
    value_text    text,
    unit          text,
    ref_low       numeric(12, 4),
    ref_high      numeric(12, 4),
    flag          text CHECK (flag IN ('L', 'H', 'N', 'A', 'LL', 'HH')),
    status        text NOT NULL CHECK (status IN ('P', 'F', 'C', 'X')),
    collected_at  timestamptz NOT NULL,
    -- Long free text: PostgreSQL TOASTs it, so an UPDATE that leaves it unchanged sends
    -- no value for it in the WAL (see connectors/docs/cdc.md, "TOAST").
    comment       text,
    row_version   integer NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The whole old row goes to the WAL, so an UPDATE that leaves the TOASTed comment alone
-- still carries its value (the CDC reader takes it from the old row; without FULL it
-- publishes Debezium's "__debezium_unavailable_value" placeholder instead).
ALTER TABLE labbilling.lab_results REPLICA IDENTITY FULL;

CREATE TABLE IF NOT EXISTS labbilling.charges (
    id               bigint PRIMARY KEY,
    patient_id       bigint NOT NULL REFERENCES labbilling.patients (id),
    encounter_number text,
    charge_code      text NOT NULL,
    description      text,
    quantity         integer NOT NULL DEFAULT 1,
    unit_price       numeric(10, 2) NOT NULL,
    currency         char(3) NOT NULL DEFAULT 'USD',
    status           text NOT NULL CHECK (status IN ('billable', 'billed', 'cancelled')),
    service_date     date NOT NULL,
    row_version      integer NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- No primary key: captured only with declared key_columns (see sources.yaml); otherwise the
-- CDC reader refuses the table at start with a clear error.
CREATE TABLE IF NOT EXISTS labbilling.audit_log (
    happened_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL
);
