from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import CertificateError
from protocol.identifiers import ClientId, SecurityServerId
from security_server.token import (
    CertNotFound,
    KeyNotFound,
    PinIncorrect,
    SoftToken,
    TokenAlreadyInitialized,
    TokenNotActive,
    TokenNotInitialized,
)

from . import Issued, issue

PIN = "1234-secret"
MEMBER = ClientId("EE", "GOV", "1234")
SUBSYSTEM = ClientId("EE", "GOV", "1234", "SUB")
SERVER_ID = SecurityServerId(MEMBER, "SS1")
CA = issue("Token Test CA", ca=True)
INT = issue("Token Test INT", CA, ca=True)


def sign_csr(csr_der: bytes, issuer: Issued, *, auth: bool) -> x509.Certificate:
    csr = x509.load_der_x509_csr(csr_der)
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    usage["digital_signature" if auth else "content_commitment"] = True
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.KeyUsage(**usage), critical=True)
    )
    if auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer.key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token with an auth key (cert + chain) and a sign key for MEMBER."""
    path = tmp_path_factory.mktemp("token")
    token = SoftToken.initialize(path, PIN)
    token.login(PIN)
    auth_csr = token.generate_auth_key(SERVER_ID)
    sign_csr_der = token.generate_sign_key(SUBSYSTEM)
    token.import_certificate(pem(sign_csr(auth_csr, INT, auth=True)), [der(INT.cert)])
    token.import_certificate(der(sign_csr(sign_csr_der, CA, auth=False)))
    return path


def test_pin_is_not_stored_and_keys_are_private(token_dir: Path) -> None:
    files = list(token_dir.iterdir())

    assert all(PIN.encode() not in f.read_bytes() for f in files)
    keys = [f for f in files if f.name.endswith(".key.pem")]
    assert len(keys) == 2
    for key_file in keys:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(key_file.read_bytes(), None)


def test_login_checks_pin(token_dir: Path) -> None:
    token = SoftToken(token_dir)

    with pytest.raises(PinIncorrect) as info:
        token.login("wrong")
    assert info.value.code == "PinIncorrect"
    assert not token.active
    with pytest.raises(TokenNotActive):
        _ = token.auth_key
    token.login(PIN)
    assert token.active


def test_auth_key_cert_and_chain(token_dir: Path) -> None:
    token = SoftToken(token_dir)
    token.login(PIN)

    cert = token.auth_cert
    assert cert.public_key() == token.auth_key.public_key()
    assert token.auth_chain == [cert, INT.cert]
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SS1"


def test_sign_key_by_member_or_subsystem(token_dir: Path) -> None:
    token = SoftToken(token_dir)
    token.login(PIN)

    key, cert = token.sign_key(SUBSYSTEM)
    assert key.public_key() == cert.public_key()
    assert token.sign_key(MEMBER)[1] == cert
    assert token.sign_members() == [MEMBER]
    assert token.certificates() == [token.auth_cert, cert]
    with pytest.raises(KeyNotFound):
        token.sign_key(ClientId("EE", "COM", "999"))


def test_certificates_readable_without_login(token_dir: Path) -> None:
    token = SoftToken(token_dir)

    assert len(token.certificates()) == 2
    with pytest.raises(TokenNotActive):
        token.sign_key(MEMBER)


def test_import_refuses_foreign_or_misused_certificates(tmp_path: Path) -> None:
    token = SoftToken.initialize(tmp_path, PIN)
    token.login(PIN)
    csr = token.generate_sign_key(MEMBER)

    foreign = issue("stranger", CA)
    with pytest.raises(KeyNotFound):
        token.import_certificate(pem(foreign.cert))
    with pytest.raises(CertificateError):
        token.import_certificate(pem(sign_csr(csr, CA, auth=True)))
    with pytest.raises(CertNotFound):
        _ = token.auth_cert
    assert [k.has_cert for k in token.keys()] == [False]


def test_lifecycle_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenNotInitialized):
        SoftToken(tmp_path).login(PIN)
    SoftToken.initialize(tmp_path, PIN)
    with pytest.raises(TokenAlreadyInitialized):
        SoftToken.initialize(tmp_path, PIN)
    with pytest.raises(TokenNotActive):
        SoftToken(tmp_path).generate_auth_key(SERVER_ID)
