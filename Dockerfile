# The fhirbus services image. It installs the package the same way .ci/run does
# (pip install of this repository into a virtual environment), minus the dev extras.
FROM python:3.11.7-slim-bookworm
RUN python -m venv /opt/fhirbus && useradd --system --home /var/lib/fhirbus fhirbus \
    && mkdir -p /var/lib/fhirbus && chown fhirbus /var/lib/fhirbus
ENV PATH=/opt/fhirbus/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhirbus ./fhirbus
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
COPY connectors ./connectors
COPY projections ./projections
COPY reconciliation ./reconciliation
RUN /opt/fhirbus/bin/python -m pip install --no-cache-dir .
USER fhirbus
ENTRYPOINT ["fhirbus"]
