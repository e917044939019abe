# The fhirbus services image (docker-compose.kafka.yml). It installs the package the way
# scripts/setup (run by .ci/run) does: a virtual environment, pip upgraded, then
# `python -m pip install` of this repository, minus the editable flag and the dev extras;
# then the same import check. tests/unit/test_compose_consistency.py keeps the two in step.
FROM python:3.11.11-slim-bookworm
RUN python -m venv /opt/fhirbus \
    && useradd --system --home /var/lib/fhirbus fhirbus \
    && mkdir -p /var/lib/fhirbus && chown fhirbus /var/lib/fhirbus
ENV PATH=/opt/fhirbus/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhirbus ./fhirbus
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
COPY connectors ./connectors
COPY projections ./projections
COPY reconciliation ./reconciliation
RUN /opt/fhirbus/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir --upgrade pip \
    && /opt/fhirbus/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir . \
    && /opt/fhirbus/bin/python -c 'import fhirbus.consumers.runtime, fhirbus.schemas.serde'
COPY deploy/healthcheck.py /opt/fhirbus/healthcheck.py
USER fhirbus
VOLUME ["/var/lib/fhirbus"]
ENTRYPOINT ["fhirbus"]
