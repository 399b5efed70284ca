from __future__ import annotations

import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from lxml import etree

from protocol import ocsp, pki
from protocol.digests import unb64
from protocol.errors import CertificateError, IncorrectValidationInfo
from protocol.identifiers import ClientId

pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    if not path.exists():
        pytest.skip(f"fixture {rel} is absent")
    return path


@dataclass
class Pki:
    ca_key: object
    ca: x509.Certificate
    signer_key: object
    signer: x509.Certificate
    leaf: x509.Certificate


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_pki(name: str, now: datetime = T0) -> Pki:
    start = now - timedelta(days=1)
    ca_key = pki.generate_key()
    ca = pki.build_ca(name, ca_key, start, 3650)
    signer_key = _ec_key()
    signer = pki.build_ocsp_signer_cert(ca_key, ca, signer_key, start, 365)
    csr = pki.build_csr(_ec_key(), pki.sign_subject(ClientId("INST", "GOV", "1234")))
    leaf = pki.issue_certificate(csr, "sign", ca_key, ca, 4242, start, 365)
    return Pki(ca_key, ca, signer_key, signer, leaf)


@pytest.fixture(scope="module")
def test_pki() -> Pki:
    return _make_pki("Test CA")


@pytest.fixture(scope="module")
def other_pki() -> Pki:
    return _make_pki("Other CA")


def _response(p: Pki, status: str = "good", **kw: object) -> bytes:
    args: dict[str, object] = {
        "issuer": p.ca,
        "cert": p.leaf,
        "status": status,
        "this_update": T0,
        "responder_key": p.signer_key,
        "responder_cert": p.signer,
    }
    args.update(kw)
    return ocsp.build_ocsp_response(**args)  # type: ignore[arg-type]


def _verify(p: Pki, der: bytes, **kw: object) -> ocsp.OCSPStatus:
    kw.setdefault("at", T0)
    kw.setdefault("freshness_seconds", 3600)
    return ocsp.verify_ocsp_response(der, p.leaf, p.ca, **kw)  # type: ignore[arg-type]


# -- requests ------------------------------------------------------------------


def test_request_round_trip(test_pki: Pki) -> None:
    der = ocsp.build_ocsp_request(test_pki.leaf, test_pki.ca)
    cert_id = ocsp.parse_ocsp_request(der)
    assert cert_id == ocsp.cert_id_for(4242, test_pki.ca)
    name_hash, key_hash, serial = cert_id
    assert serial == 4242 and len(name_hash) == len(key_hash) == 20
    assert len(x509_ocsp.load_der_ocsp_request(der).extensions) == 0  # no nonce


def test_parse_request_rejects_garbage() -> None:
    with pytest.raises(ocsp.MalformedOCSPRequest) as info:
        ocsp.parse_ocsp_request(b"\x30\x03\x02\x01\x00")
    assert info.value.code == "MalformedOCSPRequest"


# -- build -> verify round trip ------------------------------------------------


def test_good_round_trip(test_pki: Pki) -> None:
    verdict = _verify(test_pki, _response(test_pki))
    assert verdict.status is ocsp.OCSPCertStatus.GOOD
    assert verdict.this_update == T0
    assert verdict.responder_cert == test_pki.signer
    assert verdict.revoked_at is None


def test_response_by_serial_matches_by_cert(test_pki: Pki) -> None:
    der = _response(test_pki, cert=None, cert_serial=4242)
    assert ocsp.ocsp_response_matches(der, test_pki.leaf, test_pki.ca)
    assert _verify(test_pki, der).status is ocsp.OCSPCertStatus.GOOD


def test_revoked_raises_with_time(test_pki: Pki) -> None:
    revoked_at = T0 - timedelta(hours=5)
    der = _response(
        test_pki,
        "revoked",
        revoked_at=revoked_at,
        revocation_reason=x509.ReasonFlags.key_compromise,
    )
    with pytest.raises(ocsp.CertValidationError) as info:
        _verify(test_pki, der)
    assert info.value.code == "CertValidation"
    assert info.value.revoked_at == revoked_at
    assert info.value.reason == "keyCompromise"
    verdict = _verify(test_pki, der, require_good=False)
    assert verdict.status is ocsp.OCSPCertStatus.REVOKED


def test_unknown_raises(test_pki: Pki) -> None:
    with pytest.raises(ocsp.CertValidationError) as info:
        _verify(test_pki, _response(test_pki, "unknown"))
    assert info.value.status is ocsp.OCSPCertStatus.UNKNOWN
    assert not isinstance(info.value, IncorrectValidationInfo)


def test_stale_refused(test_pki: Pki) -> None:
    der = _response(test_pki, this_update=T0 - timedelta(seconds=3601))
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, der)
    # exactly at the edge of the window is still fresh
    edge = _response(test_pki, this_update=T0 - timedelta(seconds=3600))
    assert _verify(test_pki, edge).status is ocsp.OCSPCertStatus.GOOD


def test_future_this_update_accepted(test_pki: Pki) -> None:
    der = _response(test_pki, this_update=T0 + timedelta(days=900))
    assert _verify(test_pki, der).status is ocsp.OCSPCertStatus.GOOD


def test_next_update_enforced_unless_disabled(test_pki: Pki) -> None:
    der = _response(
        test_pki,
        this_update=T0 - timedelta(minutes=30),
        next_update=T0 - timedelta(minutes=1),
    )
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, der)
    assert _verify(test_pki, der, verify_next_update=False).next_update is not None


def test_wrong_responder_refused(test_pki: Pki, other_pki: Pki) -> None:
    # an OCSPSigning delegate of another CA signs for our certificate
    der = _response(
        test_pki, responder_key=other_pki.signer_key, responder_cert=other_pki.signer
    )
    with pytest.raises(IncorrectValidationInfo) as info:
        _verify(test_pki, der)
    assert info.value.code == "IncorrectValidationInfo"


def test_configured_responder_accepted(test_pki: Pki, other_pki: Pki) -> None:
    der = _response(
        test_pki, responder_key=other_pki.signer_key, responder_cert=other_pki.signer
    )
    verdict = _verify(test_pki, der, responder_certs=[other_pki.signer])
    assert verdict.responder_cert == other_pki.signer


def test_ca_itself_may_respond(test_pki: Pki) -> None:
    der = _response(test_pki, responder_key=test_pki.ca_key, responder_cert=test_pki.ca)
    assert _verify(test_pki, der).responder_cert == test_pki.ca


def test_delegate_without_eku_refused(test_pki: Pki) -> None:
    key = _ec_key()
    csr = pki.build_csr(key, pki.sign_subject(ClientId("INST", "GOV", "responder")))
    not_a_responder = pki.issue_certificate(
        csr, "sign", test_pki.ca_key, test_pki.ca, 77, T0 - timedelta(days=1), 30
    )
    der = _response(test_pki, responder_key=key, responder_cert=not_a_responder)
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, der)


def test_tampered_signature_refused(test_pki: Pki) -> None:
    der = bytearray(_response(test_pki))
    response = x509_ocsp.load_der_ocsp_response(bytes(der))
    offset = bytes(der).rindex(response.signature)
    der[offset + 5] ^= 0x01
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, bytes(der))


def test_other_certificate_does_not_match(test_pki: Pki) -> None:
    der = _response(test_pki, cert=None, cert_serial=999)
    assert not ocsp.ocsp_response_matches(der, test_pki.leaf, test_pki.ca)
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, der)


@pytest.mark.parametrize("status", ["malformed_request", "unauthorized", "tryLater"])
def test_error_responses_are_incorrect_validation_info(
    test_pki: Pki, status: str
) -> None:
    der = ocsp.build_ocsp_error(status)
    assert x509_ocsp.load_der_ocsp_response(der).response_status.name != "SUCCESSFUL"
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, der)
    assert not ocsp.ocsp_response_matches(der, test_pki.leaf, test_pki.ca)


def test_garbage_is_incorrect_validation_info(test_pki: Pki) -> None:
    with pytest.raises(IncorrectValidationInfo):
        _verify(test_pki, b"not der at all")


def test_naive_time_refused(test_pki: Pki) -> None:
    with pytest.raises(ValueError):
        _verify(test_pki, _response(test_pki), at=T0.replace(tzinfo=None))


def test_openssl_reports_good(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    # openssl checks the responder chain at the real current time
    test_pki = _make_pki("Openssl CA", datetime.now(UTC))
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(test_pki.ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(test_pki.leaf.public_bytes(pem))
    (tmp_path / "resp.der").write_bytes(
        _response(test_pki, this_update=datetime.now(UTC))
    )
    result = subprocess.run(
        [
            "openssl", "ocsp", "-respin", "resp.der", "-issuer", "ca.pem",
            "-cert", "leaf.pem", "-CAfile", "ca.pem", "-no_nonce",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip
    assert "Response verify OK" in result.stderr + result.stdout
    assert "leaf.pem: good" in result.stdout


# -- fixtures ------------------------------------------------------------------


def test_fixture_test_ocsp_parses() -> None:
    """MANIFEST row ocsp/test.ocsp: successful, good, producedAt 2013-02-07T09:02:33Z."""
    der = fixture("ocsp/test.ocsp").read_bytes()
    response = x509_ocsp.load_der_ocsp_response(der)
    assert response.response_status is x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is x509_ocsp.OCSPCertStatus.GOOD
    assert response.produced_at_utc == datetime(2013, 2, 7, 9, 2, 33, tzinfo=UTC)
    assert response.responder_key_hash is not None  # byKey


def _dev_trust() -> list[x509.Certificate]:
    path = fixture("globalconf/dirs/globalconf_good2_v3/DEV/shared-params.xml")
    tree = etree.parse(str(path))
    return [pki.load_certificate(e.text.encode()) for e in tree.iter("cert")]


def _signature_parts(asice: str) -> tuple[x509.Certificate, bytes]:
    with zipfile.ZipFile(fixture(asice)) as archive:
        root = etree.fromstring(archive.read("META-INF/signatures.xml"))
    cert = root.findtext(f".//{{{DS}}}X509Certificate")
    value = root.findtext(f".//{{{XADES}}}EncapsulatedOCSPValue")
    return pki.load_certificate(cert.encode()), unb64(value)


@pytest.mark.parametrize(
    ("asice", "gen_time"),
    [
        (
            "asic/verifier/valid-signed-message.asice",
            datetime(2024, 12, 5, 13, 16, 35, tzinfo=UTC),
        ),
        (
            "asic/verifier/valid-batch-ts.asice",
            datetime(2024, 12, 5, 7, 34, 14, tzinfo=UTC),
        ),
    ],
    ids=["valid-signed-message", "valid-batch-ts"],
)
def test_encapsulated_ocsp_verifies_against_dev_ca(
    asice: str, gen_time: datetime
) -> None:
    ca, responder, _tsa = _dev_trust()
    cert, der = _signature_parts(asice)
    verdict = ocsp.verify_ocsp_response(
        der, cert, ca, at=gen_time, freshness_seconds=3600, responder_certs=[responder]
    )
    assert verdict.status is ocsp.OCSPCertStatus.GOOD
    assert verdict.responder_cert == responder
    # the same evidence is stale an hour and a bit later
    with pytest.raises(IncorrectValidationInfo):
        ocsp.verify_ocsp_response(
            der, cert, ca, at=verdict.this_update + timedelta(seconds=3601),
            freshness_seconds=3600, responder_certs=[responder],
        )  # fmt: skip


def test_encapsulated_ocsp_refused_for_other_issuer(other_pki: Pki) -> None:
    cert, der = _signature_parts("asic/verifier/valid-signed-message.asice")
    with pytest.raises(CertificateError):
        ocsp.verify_ocsp_response(
            der, cert, other_pki.ca, at=datetime(2024, 12, 5, 13, 16, 35, tzinfo=UTC)
        )
