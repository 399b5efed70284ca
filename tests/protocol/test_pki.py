from __future__ import annotations

import base64
import csv
import shutil
import subprocess
import warnings
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree

from protocol import ocsp, pki
from protocol.errors import (
    CertificateError,
    CertNotApproved,
    IncorrectCertificate,
    IncorrectValidationInfo,
    codes_equal,
)
from protocol.identifiers import ClientId, SecurityServerId

pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MEMBER = ClientId("INST", "GOV", "1234")
SERVER = SecurityServerId(MEMBER, "SS-A")
DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"


def fixture(rel: str) -> Path:
    path = FIXTURES / rel
    if not path.exists():
        pytest.skip(f"fixture {rel} is absent")
    return path


@dataclass
class Ca:
    key: object
    cert: x509.Certificate
    signer_key: object
    signer: x509.Certificate

    def ocsp(self, cert: x509.Certificate, status: str = "good", **kw: object) -> bytes:
        args: dict[str, object] = {"this_update": T0, "revoked_at": None}
        args.update(kw)
        return ocsp.build_ocsp_response(
            issuer=self.cert,
            cert=cert,
            status=status,
            responder_key=self.signer_key,
            responder_cert=self.signer,
            **args,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def ca() -> Ca:
    key = pki.generate_key()
    cert = pki.build_ca("INST Test CA", key, T0 - timedelta(days=10), 3650)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = pki.build_ocsp_signer_cert(
        key, cert, signer_key, T0 - timedelta(days=10), 365
    )
    return Ca(key, cert, signer_key, signer)


@pytest.fixture(scope="module")
def member_key() -> rsa.RSAPrivateKey:
    return pki.generate_key()


@pytest.fixture(scope="module")
def sign_cert(ca: Ca, member_key: rsa.RSAPrivateKey) -> x509.Certificate:
    csr = pki.build_csr(member_key, pki.sign_subject(MEMBER))
    return pki.issue_certificate(
        csr, "sign", ca.key, ca.cert, 1001, T0 - timedelta(days=1), 365,
        "http://ocsp.example/", expected_member=MEMBER,
    )  # fmt: skip


@pytest.fixture(scope="module")
def auth_cert(ca: Ca) -> x509.Certificate:
    csr = pki.build_csr(
        ec.generate_private_key(ec.SECP256R1()), pki.auth_subject(SERVER)
    )
    pem = x509.load_der_x509_csr(csr).public_bytes(serialization.Encoding.PEM)
    return pki.issue_certificate(
        pem, "auth", ca.key, ca.cert, 1002, T0 - timedelta(days=1), 365,
        expected_member=SERVER,
    )  # fmt: skip


# -- loading -------------------------------------------------------------------


def test_load_certificate_accepts_all_encodings(sign_cert: x509.Certificate) -> None:
    der = pki.cert_der(sign_cert)
    pem = sign_cert.public_bytes(serialization.Encoding.PEM)
    trusted = pem.replace(b"BEGIN CERTIFICATE", b"BEGIN TRUSTED CERTIFICATE").replace(
        b"END CERTIFICATE", b"END TRUSTED CERTIFICATE"
    )
    for form in (der, pem, base64.b64encode(der), base64.b64encode(pem), trusted):
        assert pki.load_certificate(form) == sign_cert


@pytest.mark.parametrize(
    ("rel", "subject_part"),
    [
        ("certs/common-test/root-ca.pem", "CN=Cyber"),  # TRUSTED CERTIFICATE armour
        ("certs/common-test/test_chain/root_ca.pem", "OU=Root CA"),
        ("certs/common-test/tsp.pem", "CN=timestamp1"),  # bare base64
        ("certs/common-test/NTREE.pem", "O=Aktsiaselts Sertifitseerimiskeskus"),
        ("certs/common-test/test-esteid.txt", "O=TEST-ESTEID"),  # padded base64
        ("certs/common-core/internal.crt", "CN=ubuntu-xroad-securityserver-dev"),
    ],
    ids=lambda v: v.rsplit("/", 1)[-1] if "/" in v else "",
)
def test_load_fixture_certificates(rel: str, subject_part: str) -> None:
    cert = pki.load_certificate(fixture(rel).read_bytes())
    assert subject_part in cert.subject.rfc4514_string()


def test_load_certificate_rejects_garbage() -> None:
    with pytest.raises(IncorrectCertificate):
        pki.load_certificate(b"hello world")


def test_hash_helpers(sign_cert: x509.Certificate) -> None:
    import hashlib

    der = pki.cert_der(sign_cert)
    assert pki.cert_sha1_hex(sign_cert) == hashlib.sha1(der).hexdigest()
    assert pki.cert_sha256_hex(sign_cert) == hashlib.sha256(der).hexdigest()
    assert (
        base64.b64decode(pki.cert_sha256_b64(sign_cert)) == hashlib.sha256(der).digest()
    )


# -- issuing -------------------------------------------------------------------


def test_ca_certificate_profile(ca: Ca) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.critical and constraints.value.ca
    assert usage.key_cert_sign and usage.crl_sign
    ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    eku = ca.signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.OCSP_SIGNING in eku
    assert ca.signer.issuer == ca.cert.subject


def test_sign_certificate_profile(ca: Ca, sign_cert: x509.Certificate) -> None:
    usage = sign_cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.content_commitment
    assert not usage.value.digital_signature and not usage.value.key_encipherment
    aia = sign_cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert aia.value[0].access_location.value == "http://ocsp.example/"
    assert sign_cert.serial_number == 1001
    assert pki.find_issuer(sign_cert, [ca.signer, ca.cert]) == ca.cert
    pki.check_sign_cert_usage(sign_cert)
    with pytest.raises(pki.WrongCertUsage):
        pki.check_auth_cert_usage(sign_cert)


def test_auth_certificate_profile(auth_cert: x509.Certificate) -> None:
    usage = auth_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    eku = auth_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert not usage.content_commitment
    assert set(eku) == {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    }
    assert (
        auth_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SS-A"
    )
    pki.check_auth_cert_usage(auth_cert)
    with pytest.raises(pki.WrongCertUsage) as info:
        pki.check_sign_cert_usage(auth_cert)
    assert info.value.code == "WrongCertUsage"


def test_auth_certificate_passes_openssl_purposes(
    ca: Ca, auth_cert: x509.Certificate, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(pem))
    (tmp_path / "auth.pem").write_bytes(auth_cert.public_bytes(pem))
    attime = str(int((T0 + timedelta(days=1)).timestamp()))
    for purpose in ("sslclient", "sslserver"):
        result = subprocess.run(
            ["openssl", "verify", "-attime", attime, "-purpose", purpose,
             "-CAfile", "ca.pem", "auth.pem"],
            cwd=tmp_path, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_issue_rejects_bad_csr_signature(ca: Ca, member_key: rsa.RSAPrivateKey) -> None:
    csr = bytearray(pki.build_csr(member_key, pki.sign_subject(MEMBER)))
    csr[-3] ^= 0x01
    with pytest.raises(pki.InvalidCsr) as info:
        pki.issue_certificate(bytes(csr), "sign", ca.key, ca.cert, 5, T0, 10)
    assert info.value.code == "InvalidCsr"


def test_issue_rejects_wrong_member(ca: Ca, member_key: rsa.RSAPrivateKey) -> None:
    csr = pki.build_csr(member_key, pki.sign_subject(MEMBER))
    other = ClientId("INST", "GOV", "9999")
    with pytest.raises(pki.InvalidCsr):
        pki.issue_certificate(
            csr, "sign", ca.key, ca.cert, 5, T0, 10, expected_member=other
        )
    with pytest.raises(pki.InvalidCsr):
        pki.issue_certificate(
            csr, "auth", ca.key, ca.cert, 5, T0, 10, expected_member=SERVER
        )


def test_issue_rejects_short_rsa_key_and_unknown_kind(ca: Ca) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = pki.build_csr(weak, pki.sign_subject(MEMBER))
    with pytest.raises(pki.InvalidCsr):
        pki.issue_certificate(csr, "sign", ca.key, ca.cert, 5, T0, 10)
    with pytest.raises(pki.InvalidCsr):
        pki.issue_certificate(csr, "tls", ca.key, ca.cert, 5, T0, 10)  # type: ignore[arg-type]


# -- profiles ------------------------------------------------------------------


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, v, _validate=False) for oid, v in pairs])


C, ORG, OU, CN = (
    NameOID.COUNTRY_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.COMMON_NAME,
)
SN, BC = NameOID.SERIAL_NUMBER, NameOID.BUSINESS_CATEGORY


@pytest.mark.parametrize(
    ("profile", "name", "expected"),
    [
        (pki.EJBCA_PROFILE, _name((C, "INST"), (ORG, "GOV"), (CN, "1234")), "INST/GOV/1234"),
        (pki.TEST_PROFILE, _name((CN, "consumer")), "EE/BUSINESS/consumer"),
        (pki.BASIC_PROFILE, _name((C, "FI"), (BC, "COM"), (SN, "55")), "EE/COM/55"),
        (
            pki.FIVRK_PROFILE,
            _name((C, "FI"), (ORG, "Org"), (CN, "4321"), (SN, "DEV/ss2/COM")),
            "DEV/COM/4321",
        ),
        (pki.FIVRK_PROFILE, _name((C, "FI"), (ORG, "DEV"), (OU, "GOV"), (CN, "7")), "DEV/GOV/7"),
        (pki.FIVRK_PROFILE, _name((C, "XX"), (ORG, "GOV"), (CN, "7")), "XX/GOV/7"),
        (
            pki.FO_PROFILE,
            _name((C, "FO"), (ORG, "FO-I"), (OU, "GOV"), (CN, "8"), (SN, "x")),
            "FO-I/GOV/8",
        ),
        (pki.IS_PROFILE, _name((C, "IS"), (ORG, "COM"), (CN, "9")), "IS/COM/9"),
        (pki.SK_ESTEID_PROFILE, _name((SN, "47101010033")), "EE/PERSON/47101010033"),
        (pki.SK_KLASS3_PROFILE, _name((pki.ORGANIZATION_IDENTIFIER, "GO:EE-70000001")),
         "EE/GOV/70000001"),
        (pki.SK_KLASS3_PROFILE, _name((SN, "80000001")), "EE/NGO/80000001"),
        (pki.EJBCA_PROFILE, _name((C, "I"), (ORG, "A,B"), (CN, "x")), "I/A\\,B/x"),
    ],
    ids=[
        "ejbca", "test", "basic", "fivrk", "fivrk-ou", "fivrk-ejbca", "fo", "is-ejbca",
        "esteid", "sk-orgid", "sk-serial", "rfc2253-escaped",
    ],
)  # fmt: skip
def test_decode_subject(profile: str, name: x509.Name, expected: str) -> None:
    member = pki.decode_subject(name, profile, "EE")
    assert member.parts() == tuple(expected.split("/"))
    assert member.subsystem_code is None


@pytest.mark.parametrize(
    ("profile", "name"),
    [
        (pki.EJBCA_PROFILE, _name((C, "INST"), (CN, "1234"))),
        (
            pki.FIVRK_PROFILE,
            _name((C, "SE"), (ORG, "x"), (CN, "1"), (SN, "DEV/ss2/COM")),
        ),
        (pki.FIVRK_PROFILE, _name((C, "FI"), (ORG, "x"), (CN, "1"), (SN, "DEV/COM"))),
        (pki.FO_PROFILE, _name((C, "FO"), (ORG, "I"), (OU, "GOV"), (CN, "8"))),
        (pki.SK_KLASS3_PROFILE, _name((SN, "1234"))),
    ],
    ids=["ejbca-no-O", "fivrk-country", "fivrk-serial", "fo-no-serial", "sk-short"],
)
def test_decode_subject_refuses(profile: str, name: x509.Name) -> None:
    with pytest.raises(IncorrectCertificate):
        pki.decode_subject(name, profile, "EE")


def test_decode_unknown_profile() -> None:
    with pytest.raises(pki.UnsupportedProfile) as info:
        pki.decode_subject(_name((CN, "x")), "com.example.Nope", "EE")
    assert "not supported" in str(info.value)


def test_repeated_attribute_takes_last_in_der_order() -> None:
    name = _name((C, "INST"), (ORG, "GOV"), (CN, "first"), (CN, "second"))
    assert pki.decode_subject(name, pki.EJBCA_PROFILE, "X").member_code == "second"


def test_sign_subject_round_trip(sign_cert: x509.Certificate) -> None:
    assert pki.decode_member(sign_cert, pki.EJBCA_PROFILE, "INST") == MEMBER


def test_ntree_fixture_decodes() -> None:
    cert = pki.load_certificate(fixture("certs/common-test/NTREE.pem").read_bytes())
    assert pki.decode_member(cert, pki.SK_KLASS3_PROFILE, "EE") == ClientId(
        "EE", "COM", "10747013"
    )


def test_esteid_fixture_serial() -> None:
    cert = pki.load_certificate(
        fixture("certs/common-test/test-esteid.txt").read_bytes()
    )
    member = pki.decode_member(cert, pki.SK_ESTEID_PROFILE, "EE")
    assert member.member_code == "47101010033"


# -- verify_certificate --------------------------------------------------------


def _verify(cert: x509.Certificate, ca: Ca, responses: list[bytes], **kw: object):
    kw.setdefault("at", T0)
    return pki.verify_certificate(
        cert,
        ca_certs=[ca.cert],
        ocsp_responses=responses,
        freshness_seconds=3600,
        **kw,  # type: ignore[arg-type]
    )


def test_verify_certificate_good(ca: Ca, sign_cert: x509.Certificate) -> None:
    other = ca.ocsp(ca.signer)
    result = _verify(sign_cert, ca, [other, ca.ocsp(sign_cert)])
    assert result.issuer == ca.cert
    assert result.ocsp.status is ocsp.OCSPCertStatus.GOOD
    assert result.ocsp_response != other


def test_verify_certificate_unknown_issuer(ca: Ca, sign_cert: x509.Certificate) -> None:
    with pytest.raises(CertNotApproved) as info:
        pki.verify_certificate(
            sign_cert,
            ca_certs=[ca.signer],
            ocsp_responses=[],
            at=T0,
            freshness_seconds=1,
        )
    assert str(info.value) == (
        "Certificate is not issued by approved certification service provider."
    )
    assert info.value.code == "InternalError"


@pytest.mark.parametrize(
    ("at", "detail"),
    [
        (T0 - timedelta(days=2), "CertificateNotYetValid"),
        (T0 + timedelta(days=400), "CertificateExpired"),
    ],
)
def test_verify_certificate_dates(
    ca: Ca, sign_cert: x509.Certificate, at: datetime, detail: str
) -> None:
    with pytest.raises(CertificateError) as info:
        _verify(sign_cert, ca, [ca.ocsp(sign_cert, this_update=at)], at=at)
    assert info.value.full_code == f"CertValidation.{detail}"


def test_verify_certificate_without_ocsp(ca: Ca, sign_cert: x509.Certificate) -> None:
    with pytest.raises(CertificateError) as info:
        _verify(sign_cert, ca, [ca.ocsp(ca.signer)])
    assert info.value.code == "CertValidation"


def test_verify_certificate_stale_ocsp(ca: Ca, sign_cert: x509.Certificate) -> None:
    stale = ca.ocsp(sign_cert, this_update=T0 - timedelta(hours=2))
    with pytest.raises(IncorrectValidationInfo):
        _verify(sign_cert, ca, [stale])


def test_verify_certificate_revoked(ca: Ca, sign_cert: x509.Certificate) -> None:
    when = T0 - timedelta(hours=3)
    with pytest.raises(pki.CertValidationError) as info:
        _verify(sign_cert, ca, [ca.ocsp(sign_cert, "revoked", revoked_at=when)])
    assert info.value.revoked_at == when
    assert info.value.code == "CertValidation"


def test_verify_certificate_forged_issuer(ca: Ca, sign_cert: x509.Certificate) -> None:
    # same subject DN as our CA, different key
    key = pki.generate_key()
    fake = pki.build_ca("INST Test CA", key, T0 - timedelta(days=10), 3650)
    with pytest.raises(CertificateError) as info:
        pki.verify_certificate(
            sign_cert, ca_certs=[fake], ocsp_responses=[], at=T0, freshness_seconds=1
        )
    assert info.value.detail == "InvalidSignature"


def test_dev_fixture_sign_cert() -> None:
    """The FiVRK sign cert of valid-signed-message verifies against DEV trust."""
    params = fixture("globalconf/dirs/globalconf_good2_v3/DEV/shared-params.xml")
    tree = etree.parse(str(params))
    trust = [pki.load_certificate(e.text.encode()) for e in tree.iter("cert")]
    assert tree.findtext(".//certificateProfileInfo") == pki.FIVRK_PROFILE
    asice = fixture("asic/verifier/valid-signed-message.asice")
    with zipfile.ZipFile(asice) as archive:
        root = etree.fromstring(archive.read("META-INF/signatures.xml"))
    cert = pki.load_certificate(root.findtext(f".//{{{DS}}}X509Certificate").encode())
    response = base64.b64decode(
        "".join(root.findtext(f".//{{{XADES}}}EncapsulatedOCSPValue").split())
    )

    assert pki.decode_member(cert, pki.FIVRK_PROFILE, "DEV") == ClientId(
        "DEV", "COM", "4321"
    )
    pki.check_sign_cert_usage(cert)
    result = pki.verify_certificate(
        cert,
        ca_certs=trust[:1],
        ocsp_responses=[response],
        at=datetime(2024, 12, 5, 13, 16, 35, tzinfo=UTC),
        freshness_seconds=3600,
        ocsp_responder_certs=trust[1:2],
    )
    assert result.issuer == trust[0]
    assert result.ocsp.responder_cert == trust[1]


# -- MANIFEST rows: topic certs (chains and loading) ---------------------------

CHAIN = "certs/common-test/test_chain/"


def _p12(name: str) -> tuple[object, x509.Certificate]:
    data = fixture(f"{CHAIN}{name}.p12").read_bytes()
    key, cert, _ = pkcs12.load_key_and_certificates(data, b"test")
    assert cert is not None
    return key, cert


def _chain_ocsp(
    path: list[x509.Certificate],
    keys: dict[x509.Name, object],
    at: datetime,
    status: str = "good",
    skip: str | None = None,
) -> list[bytes]:
    """Responses for each cert of the path, signed by its issuing CA itself."""
    responses = []
    for cert, issuer in zip(path, path[1:], strict=False):
        if skip and skip in cert.subject.rfc4514_string():
            continue
        responses.append(
            ocsp.build_ocsp_response(
                issuer=issuer, cert=cert, status=status, this_update=at,
                revoked_at=at - timedelta(hours=1) if status == "revoked" else None,
                responder_key=keys[issuer.subject], responder_cert=issuer,
            )
        )  # fmt: skip
    return responses


def _run_chain_case(row: dict[str, str]) -> None:
    user = row["path"].rsplit("/", 1)[-1].removesuffix(".p12")
    error = row["expected_error"]
    root_key, root = _p12("root_ca")
    loaded = [_p12(n) for n in ("ca_1", "ca_2", "ca_3", "ca_4_no_ext")]
    keys = {cert.subject: key for key, cert in [*loaded, (root_key, root)]}
    user_cert = _p12(user)[1]
    intermediates = [c for _, c in loaded]
    if "ca_2 left out" in error:
        intermediates = [
            c for c in intermediates if "OU=CA 2" not in c.subject.rfc4514_string()
        ]
    at = root.not_valid_before_utc + timedelta(days=1)
    if user == "user_0":
        at = user_cert.not_valid_before_utc + timedelta(days=1)

    def run() -> list[pki.CertVerification]:
        path = pki.build_cert_path(user_cert, intermediates, [root])
        status = "revoked" if "REVOKED" in error else "good"
        skip = "OU=CA 2" if "no OCSP response supplied for ca_2" in error else None
        responses = _chain_ocsp(path, keys, at, status, skip)
        return pki.verify_cert_path(
            user_cert, intermediates, anchors=[root], ocsp_responses=responses,
            at=at, freshness_seconds=3600,
        )  # fmt: skip

    if row["expected"] == "accept":
        results = run()
        assert results[0].cert == user_cert and results[-1].issuer == root
        if user == "user_3":
            assert len(results) == 4  # user_3, ca_3, ca_2, ca_1
        return
    with pytest.raises(CertificateError) as info:
        run()
    if error.startswith("cert path cannot be built"):
        assert isinstance(info.value, pki.CannotCreateCertPath)
    else:
        assert codes_equal(info.value.code, "invalid_cert_path")
        if "cert_validation" in error:
            assert codes_equal(
                info.value.full_code, "invalid_cert_path.cert_validation"
            )


def _manifest_rows() -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [r for r in rows if r["topic"] == "certs"]


def _row_id(row: dict[str, str]) -> str:
    return (
        row["path"].removeprefix("certs/")
        + ":"
        + row["expected"]
        + ":"
        + row["expected_error"][:24]
    )


@pytest.mark.parametrize("row", _manifest_rows(), ids=_row_id)
def test_manifest_certs_row(row: dict[str, str]) -> None:
    path = fixture(row["path"])
    if path.suffix == ".p12" and (CHAIN + "user_") in row["path"]:
        _run_chain_case(row)
        return
    if row["path"].endswith("ca_4_no_ext.p12") and row["expected"] == "reject":
        # the row's scenario: ca_4_no_ext as an intermediate of user_4
        _run_chain_case({**row, "path": CHAIN + "user_4.p12"})
        return
    if row["expected"] != "accept":
        pytest.skip("reject row outside path validation")
    if path.suffix == ".key":
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert key.public_key() is not None
        return
    if path.suffix == ".p12":
        with warnings.catch_warnings():  # ca2testorg.p12 is BER, not DER
            warnings.simplefilter("ignore", UserWarning)
            _, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), b"test")
        assert cert is not None
        if "ca_4_no_ext" in row["path"]:  # used only as a broken intermediate
            with pytest.raises(x509.ExtensionNotFound):
                cert.extensions.get_extension_for_class(x509.BasicConstraints)
        return
    cert = pki.load_certificate(path.read_bytes())
    assert cert.serial_number > 0
