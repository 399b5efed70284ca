from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp

from central_server.ca import (
    CA_KEY,
    OCSP_KEY,
    CertificateAuthority,
    UnknownCertificate,
    ocsp_app,
)
from protocol import ocsp, pki
from protocol.identifiers import ClientId, SecurityServerId

pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
MEMBER = ClientId("INST", "GOV", "1234")
SERVER = SecurityServerId(MEMBER, "SS-A")
PASSPHRASE = b"correct horse"


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca")
    CertificateAuthority.create(
        path, "INST", T0, passphrase=PASSPHRASE, ocsp_url="http://ca.example/ocsp"
    )
    return path


@pytest.fixture(scope="module")
def ca(ca_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.open(ca_dir, passphrase=PASSPHRASE)


def _csr(subject: x509.Name) -> bytes:
    return pki.build_csr(ec.generate_private_key(ec.SECP256R1()), subject)


def _status_of(
    ca: CertificateAuthority, cert: x509.Certificate, at: datetime
) -> ocsp.OCSPStatus:
    request = ocsp.build_ocsp_request(cert, ca.ca_cert)
    der = ca.ocsp_response(request, at)
    return ocsp.verify_ocsp_response(
        der, cert, ca.ca_cert, at=at, freshness_seconds=60, require_good=False
    )


def test_create_writes_private_files(ca_dir: Path) -> None:
    for name in (CA_KEY, OCSP_KEY):
        mode = stat.S_IMODE((ca_dir / name).stat().st_mode)
        assert mode == 0o600
        data = (ca_dir / name).read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in data
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, None)
    with pytest.raises(FileExistsError):
        CertificateAuthority.create(ca_dir, "INST", T0)


def test_open_round_trip(ca: CertificateAuthority) -> None:
    assert ca.instance == "INST"
    assert ca.ocsp_url == "http://ca.example/ocsp"
    assert ca.ocsp_cert.issuer == ca.ca_cert.subject
    assert pki.find_issuer(ca.ocsp_cert, [ca.ca_cert]) == ca.ca_cert


def test_issue_sign_and_auth(ca: CertificateAuthority) -> None:
    sign = ca.issue(_csr(pki.sign_subject(MEMBER)), "sign", T0, expected_member=MEMBER)
    auth = ca.issue(_csr(pki.auth_subject(SERVER)), "auth", T0, expected_member=SERVER)
    pki.check_sign_cert_usage(sign)
    pki.check_auth_cert_usage(auth)
    assert pki.decode_member(sign, pki.EJBCA_PROFILE, "INST") == MEMBER
    for cert in (sign, auth):
        assert 0 < cert.serial_number < 2**63
        record = ca.status(cert.serial_number)
        assert record is not None and record.der == pki.cert_der(cert)
        assert record.status is ocsp.OCSPCertStatus.GOOD
    assert sign.serial_number != auth.serial_number
    assert ca.status(sign.serial_number).kind == "sign"  # type: ignore[union-attr]


def test_issue_refuses_wrong_member(ca: CertificateAuthority) -> None:
    with pytest.raises(pki.InvalidCsr):
        ca.issue(
            _csr(pki.sign_subject(MEMBER)), "sign", T0, ClientId("INST", "GOV", "9")
        )


def test_issue_refuses_sign_cert_without_member(ca: CertificateAuthority) -> None:
    with pytest.raises(pki.InvalidCsr):
        ca.issue(_csr(pki.sign_subject(MEMBER)), "sign", T0)


def test_ocsp_good_revoked_unknown(ca: CertificateAuthority) -> None:
    cert = ca.issue(_csr(pki.sign_subject(MEMBER)), "sign", T0, expected_member=MEMBER)
    later = T0 + timedelta(hours=1)
    verdict = _status_of(ca, cert, later)
    assert verdict.status is ocsp.OCSPCertStatus.GOOD
    assert verdict.responder_cert == ca.ocsp_cert

    ca.revoke(cert.serial_number, later, x509.ReasonFlags.key_compromise)
    ca.revoke(cert.serial_number, later + timedelta(hours=1))  # keeps the first
    verdict = _status_of(ca, cert, later + timedelta(hours=2))
    assert verdict.status is ocsp.OCSPCertStatus.REVOKED
    assert verdict.revoked_at == later
    assert verdict.revocation_reason == "keyCompromise"

    record = ca.status(cert.serial_number)
    assert record is not None and record.revoked_at == later

    never = pki.issue_certificate(
        _csr(pki.sign_subject(MEMBER)), "sign", ca.ca_key, ca.ca_cert, 12345, T0, 1
    )
    assert _status_of(ca, never, later).status is ocsp.OCSPCertStatus.UNKNOWN
    with pytest.raises(UnknownCertificate):
        ca.revoke(12345, later)


def test_ocsp_for_other_ca_is_unauthorized(ca: CertificateAuthority) -> None:
    key = pki.generate_key()
    other = pki.build_ca("Other", key, T0, 10)
    leaf = pki.issue_certificate(
        _csr(pki.sign_subject(MEMBER)), "sign", key, other, 7, T0, 1
    )
    der = ca.ocsp_response(ocsp.build_ocsp_request(leaf, other), T0)
    status = x509_ocsp.load_der_ocsp_response(der).response_status
    assert status is x509_ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_ocsp_garbage_is_malformed(ca: CertificateAuthority) -> None:
    der = ca.ocsp_response(b"\x00garbage", T0)
    status = x509_ocsp.load_der_ocsp_response(der).response_status
    assert status is x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


# -- the aiohttp endpoint ------------------------------------------------------


@pytest_asyncio.fixture
async def client(ca: CertificateAuthority):
    app = ocsp_app(ca, lambda: T0 + timedelta(minutes=5))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.asyncio
async def test_http_post_and_get(client: TestClient, ca: CertificateAuthority) -> None:
    cert = ca.issue(_csr(pki.sign_subject(MEMBER)), "sign", T0, expected_member=MEMBER)
    request = ocsp.build_ocsp_request(cert, ca.ca_cert)

    reply = await client.post(
        "/", data=request, headers={"Content-Type": ocsp.OCSP_REQUEST_TYPE}
    )
    assert reply.status == 200
    assert reply.content_type == ocsp.OCSP_RESPONSE_TYPE
    body = await reply.read()
    verdict = ocsp.verify_ocsp_response(
        body, cert, ca.ca_cert, at=T0 + timedelta(minutes=5), freshness_seconds=60
    )
    assert verdict.this_update == T0 + timedelta(minutes=5)

    encoded = quote(base64.b64encode(request).decode("ascii"), safe="")
    reply = await client.get("/" + encoded)
    assert reply.content_type == ocsp.OCSP_RESPONSE_TYPE
    assert ocsp.ocsp_response_matches(await reply.read(), cert, ca.ca_cert)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    [
        ("POST", "/", b"garbage", ocsp.OCSP_REQUEST_TYPE),
        ("POST", "/", b"\x30\x00", "text/plain"),
        ("POST", "/", b"\x30" * 20000, ocsp.OCSP_REQUEST_TYPE),
        ("GET", "/not*base64", b"", ""),
        ("GET", "/" + base64.b64encode(b"junk").decode(), b"", ""),
    ],
    ids=["post-garbage", "post-wrong-type", "post-too-big", "get-bad-b64", "get-junk"],
)
async def test_http_bad_input_is_malformed_request(
    client: TestClient, method: str, path: str, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = await client.request(method, path, data=body or None, headers=headers)
    assert reply.status == 200
    der = await reply.read()
    status = x509_ocsp.load_der_ocsp_response(der).response_status
    assert status is x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
