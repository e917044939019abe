"""TLS and mutual TLS on the MLLP port, with certificates generated here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.settings import ConfigError, Settings

from .test_hl7_listener_support import (
    MllpConnection,
    ack_code,
    listener_settings,
    make_message,
    running_listener,
)


@dataclass
class Issued:
    cert: Path
    key: Path


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(path.with_suffix(".crt"), path.with_suffix(".key"))


def _issue(
    path: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[Issued, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return _write(path, cert, key), cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = _issue(d / "ca", "fhirbus test CA", None, ca=True)
    rogue_ca, rogue_cert, rogue_key = _issue(d / "rogue-ca", "rogue CA", None, ca=True)
    server, _, _ = _issue(d / "server", "localhost", (ca_cert, ca_key), server=True)
    client, _, _ = _issue(d / "client", "hospital-a", (ca_cert, ca_key))
    rogue, _, _ = _issue(d / "rogue", "intruder", (rogue_cert, rogue_key))
    return {"ca": ca, "server": server, "client": client, "rogue": rogue, "rogue_ca": rogue_ca}


def client_context(pki: dict[str, Issued], cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))
    if cert is not None:
        ctx.load_cert_chain(pki[cert].cert, pki[cert].key)
    return ctx


def test_tls_listener_serves_tls_clients_only(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path, pki: dict[str, Issued]
) -> None:
    conf = listener_settings(
        settings, tmp_path, tls_cert=pki["server"].cert, tls_key=pki["server"].key
    )
    with running_listener(conf) as listener:
        with MllpConnection(listener.port, tls=client_context(pki)) as conn:
            assert ack_code(conn.send(make_message("TLS-1"))) == "AA"
        with MllpConnection(listener.port, timeout=10) as plain:  # no TLS: no ACK, ever
            plain.send_raw(b"\x0b" + make_message("PLAIN-1") + b"\x1c\r")
            with pytest.raises((ConnectionError, OSError)):
                plain.read_ack()
        assert listener.counts["accepted"] == 1


@pytest.mark.parametrize("client_cert", [None, "rogue"])
def test_mtls_refuses_clients_without_a_valid_certificate(
    settings: Settings,
    embedded_stack: EmbeddedStack,
    tmp_path: Path,
    pki: dict[str, Issued],
    client_cert: str | None,
) -> None:
    conf = listener_settings(
        settings,
        tmp_path,
        tls_cert=pki["server"].cert,
        tls_key=pki["server"].key,
        tls_client_ca=pki["ca"].cert,
    )
    with running_listener(conf) as listener:
        # TLS 1.3 finishes the client's side of the handshake before the server has checked
        # the certificate, so the refusal may surface on the first read instead.
        with (
            pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            MllpConnection(listener.port, tls=client_context(pki, client_cert)) as conn,
        ):
            conn.send(make_message("MTLS-BAD"))
        with MllpConnection(listener.port, tls=client_context(pki, "client")) as good:
            assert ack_code(good.send(make_message("MTLS-OK"))) == "AA"
        assert listener.counts["received"] == 1


def test_incomplete_tls_settings_stop_the_listener(
    settings: Settings, tmp_path: Path, pki: dict[str, Issued]
) -> None:
    from fhirbus.producers.mllp.server import tls_context

    half = listener_settings(settings, tmp_path, tls_cert=pki["server"].cert)
    with pytest.raises(ConfigError, match="TLS_CERT and FHIRBUS_HL7__TLS_KEY"):
        tls_context(half.hl7)
    ca_only = listener_settings(settings, tmp_path, tls_client_ca=pki["ca"].cert)
    with pytest.raises(ConfigError, match="TLS_CLIENT_CA"):
        tls_context(ca_only.hl7)
    wrong = listener_settings(
        settings, tmp_path, tls_cert=pki["server"].cert, tls_key=pki["rogue"].key
    )
    with pytest.raises(ConfigError, match="cannot load"):
        tls_context(wrong.hl7)
