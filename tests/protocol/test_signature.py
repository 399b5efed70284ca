"""Tests for protocol.signature: building and verifying signatures.xml."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import signxml
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from protocol.digests import b64, unb64
from protocol.errors import (
    InvalidSignatureValue,
    InvalidXml,
    MalformedSignature,
    XRoadError,
    codes_equal,
)
from protocol.signature import (
    ASIC_NS,
    DS_NS,
    XADES_NS,
    XSI_NS,
    build_signature,
    sign_parts,
    verify_signature,
)

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
SIGNING_TIME = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
MESSAGE = b'<?xml version="1.0"?><e:Envelope xmlns:e="urn:e"><e:Body/></e:Envelope>'
ATTACHMENT = b"\x00binary attachment\xff"
DS = "{" + DS_NS + "}"
XADES = "{" + XADES_NS + "}"


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def make_cert(key, common_name: str = "signer") -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "EE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Org"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(4242)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module", params=["rsa", "ec"])
def signer(request: pytest.FixtureRequest):
    if request.param == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key, make_cert(key)


@pytest.fixture(scope="module")
def extra_cert() -> x509.Certificate:
    return make_cert(ec.generate_private_key(ec.SECP256R1()), "intermediate")


def sign_message(signer, parts=None, **kwargs):
    key, cert = signer
    parts = parts or [("/message.xml", sha512(MESSAGE))]
    return sign_parts(
        parts,
        key=key,
        cert=cert,
        ocsp_responses=kwargs.pop("ocsp_responses", [b"ocsp-1", b"ocsp-2"]),
        signing_time=SIGNING_TIME,
        **kwargs,
    )


def signxml_verify(signature: bytes, cert: x509.Certificate, files: dict[str, bytes]):
    return XMLVerifier().verify(
        signature,
        x509_cert=cert,
        uri_resolver=lambda uri: files[uri],
        expect_config=SignatureConfiguration(expect_references=2),
    )


def code_of(excinfo: pytest.ExceptionInfo[XRoadError]) -> str:
    return excinfo.value.full_code


# -- building ------------------------------------------------------------------


def test_plain_signature_verifies_here_and_in_signxml(signer) -> None:
    signed = sign_message(signer)

    verified = verify_signature(signed.signature, {"/message.xml": sha512(MESSAGE)})

    assert signed.hash_chain is None and signed.hash_chain_result is None
    assert verified.signing_cert == signer[1]
    assert verified.data_reference == "/message.xml"
    assert verified.ocsp_responses == [b"ocsp-1", b"ocsp-2"]
    assert verified.signing_time == SIGNING_TIME.replace(microsecond=123000)
    assert verified.extra_certs == []
    assert verified.timestamp_token is None
    assert signxml_verify(signed.signature, signer[1], {"/message.xml": MESSAGE})


def test_hash_chain_signature_verifies_here_and_in_signxml(signer) -> None:
    parts = [("/message.xml", sha512(MESSAGE)), ("/attachment1", sha512(ATTACHMENT))]
    signed = sign_message(signer, parts)

    verified = verify_signature(
        signed.signature,
        dict(parts),
        hash_chain_result=signed.hash_chain_result,
        hash_chain=signed.hash_chain,
    )

    assert verified.data_reference == "/sig-hashchainresult.xml"
    files = {"/sig-hashchainresult.xml": signed.hash_chain_result}
    assert signxml_verify(signed.signature, signer[1], files)
    root = etree.fromstring(signed.signature)
    assert root.findtext(f".//{XADES}MimeType") == "application/hash-chain-result"


def test_document_shape_follows_the_reference(signer, extra_cert) -> None:
    signed = sign_message(signer, extra_certs=[extra_cert])
    root = etree.fromstring(signed.signature)

    assert signed.signature.startswith(b'<?xml version="1.0" encoding="UTF-8"')
    assert root.tag == "{" + ASIC_NS + "}XAdESSignatures"
    assert root.nsmap == {
        "asic": ASIC_NS,
        "ds": DS_NS,
        "xades": XADES_NS,
        "xsi": XSI_NS,
    }
    signature = root[0]
    assert signature.get("Id") == "signature"
    assert [etree.QName(c).localname for c in signature] == [
        "SignedInfo",
        "SignatureValue",
        "KeyInfo",
        "Object",
    ]
    refs = signature.findall(f"{DS}SignedInfo/{DS}Reference")
    assert [r.get("Id") for r in refs] == [
        "signature-reference-0",
        "signature-reference-1",
    ]
    assert [r.get("URI") for r in refs] == ["/message.xml", "#signed-properties"]
    assert signature.find(f"{DS}SignatureValue").get("Id") == "signature-value"
    assert "\n" not in signature.findtext(f"{DS}SignatureValue")
    assert root.findtext(f".//{XADES}SigningTime") == "2024-05-01T12:00:00.123Z"
    assert root.findtext(f".//{XADES}MimeType") == "text/xml"
    assert (
        root.findtext(f".//{XADES}SPURI")
        == "https://repo.cyber.ee/dsig-profile-1.2.pdf"
    )
    ocsp_ids = [e.get("Id") for e in root.iter(f"{XADES}EncapsulatedOCSPValue")]
    assert ocsp_ids == ["ocsp-response-1", "ocsp-response-2"]
    cert_refs = root.findall(
        f".//{XADES}CompleteCertificateRefs/{XADES}CertRefs/{XADES}Cert"
    )
    assert [c.get("URI") for c in cert_refs] == ["#encapsulated-cert-1"]


def test_extra_certs_are_returned(signer, extra_cert) -> None:
    signed = sign_message(signer, extra_certs=[extra_cert])

    verified = verify_signature(signed.signature, {"/message.xml": sha512(MESSAGE)})

    assert verified.extra_certs == [extra_cert]


def test_ecdsa_value_is_raw_r_and_s() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signed = sign_message((key, make_cert(key)))

    value = etree.fromstring(signed.signature).findtext(f".//{DS}SignatureValue")
    assert len(unb64(value)) == 64


# -- tampering -------------------------------------------------------------------


def test_changed_message_is_invalid_signature_value(signer) -> None:
    signed = sign_message(signer)

    with pytest.raises(InvalidSignatureValue):
        verify_signature(signed.signature, {"/message.xml": sha512(MESSAGE + b" ")})
    with pytest.raises(signxml.exceptions.InvalidSignature):
        signxml_verify(signed.signature, signer[1], {"/message.xml": MESSAGE + b" "})


def test_changed_signed_properties_are_detected(signer) -> None:
    signed = sign_message(signer)
    forged = signed.signature.replace(
        b"2024-05-01T12:00:00.123Z", b"2020-05-01T12:00:00.123Z"
    )

    with pytest.raises(InvalidSignatureValue):
        verify_signature(forged, {"/message.xml": sha512(MESSAGE)})
    with pytest.raises(signxml.exceptions.InvalidSignature):
        signxml_verify(forged, signer[1], {"/message.xml": MESSAGE})


def test_changed_signature_value_is_detected(signer) -> None:
    signed = sign_message(signer)
    root = etree.fromstring(signed.signature)
    value_el = root.find(f".//{DS}SignatureValue")
    value = bytearray(unb64(value_el.text))
    value[5] ^= 0x01
    value_el.text = b64(bytes(value))
    forged = etree.tostring(root)

    with pytest.raises(InvalidSignatureValue) as excinfo:
        verify_signature(forged, {"/message.xml": sha512(MESSAGE)})
    assert codes_equal(code_of(excinfo), "invalid_signature_value")
    with pytest.raises(signxml.exceptions.InvalidSignature):
        signxml_verify(forged, signer[1], {"/message.xml": MESSAGE})


def test_changed_attachment_breaks_the_hash_chain(signer) -> None:
    parts = [("/message.xml", sha512(MESSAGE)), ("/attachment1", sha512(ATTACHMENT))]
    signed = sign_message(signer, parts)
    wrong = dict(parts) | {"/attachment1": sha512(b"other")}

    with pytest.raises(MalformedSignature) as excinfo:
        verify_signature(
            signed.signature,
            wrong,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
        )
    assert codes_equal(code_of(excinfo), "malformed_signature.invalid_hash_chain")


def test_extra_part_not_in_chain_is_unused_input(signer) -> None:
    parts = [("/message.xml", sha512(MESSAGE)), ("/attachment1", sha512(ATTACHMENT))]
    signed = sign_message(signer, parts)

    with pytest.raises(MalformedSignature) as excinfo:
        verify_signature(
            signed.signature,
            dict(parts) | {"/attachment2": sha512(b"x")},
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
        )
    assert codes_equal(code_of(excinfo), "MalformedSignature.HashChainUnusedInputs")


def test_unsigned_part_is_rejected(signer) -> None:
    signed = sign_message(signer)
    parts = {"/message.xml": sha512(MESSAGE), "/attachment1": sha512(ATTACHMENT)}

    with pytest.raises(MalformedSignature, match="not covered"):
        verify_signature(signed.signature, parts)


def test_missing_hash_chain_is_malformed(signer) -> None:
    parts = [("/message.xml", sha512(MESSAGE)), ("/attachment1", sha512(ATTACHMENT))]
    signed = sign_message(signer, parts)

    with pytest.raises(MalformedSignature):
        verify_signature(signed.signature, dict(parts))


def test_duplicate_id_is_refused(signer) -> None:
    signed = sign_message(signer)
    root = etree.fromstring(signed.signature)
    decoy = etree.SubElement(root[0].find(f"{DS}Object"), f"{XADES}Decoy")
    decoy.set("Id", "signed-properties")

    with pytest.raises(MalformedSignature, match="matches 2"):
        verify_signature(etree.tostring(root), {"/message.xml": sha512(MESSAGE)})


def test_sha1_signature_method_is_refused(signer) -> None:
    signed = sign_message(signer)
    forged = signed.signature.replace(
        b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        b"http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    ).replace(
        b"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        b"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
    )

    with pytest.raises(MalformedSignature, match="not supported"):
        verify_signature(forged, {"/message.xml": sha512(MESSAGE)})


def test_build_signature_for_hash_chain_result_reference(signer) -> None:
    key, cert = signer
    result = b"<result/>"
    signature = build_signature(
        reference_uri="/sig-hashchainresult.xml",
        reference_digest=sha512(result),
        mime_type="application/hash-chain-result",
        key=key,
        cert=cert,
        ocsp_responses=[],
        signing_time=SIGNING_TIME,
    )

    assert signxml_verify(signature, cert, {"/sig-hashchainresult.xml": result})


# -- timestamps in unsigned properties ----------------------------------------------


def _with_timestamp(signature: bytes, token: bytes, *, legacy: bool) -> bytes:
    root = etree.fromstring(signature)
    props = root.find(f".//{XADES}UnsignedSignatureProperties")
    stamp = etree.Element(f"{XADES}SignatureTimeStamp")
    if legacy:
        stamp.text = b64(token)
    else:
        etree.SubElement(stamp, f"{XADES}EncapsulatedTimeStamp").text = b64(token)
    props.insert(0, stamp)
    return etree.tostring(root)


@pytest.mark.parametrize("legacy", [False, True], ids=["encapsulated", "legacy"])
def test_timestamp_token_is_extracted(signer, legacy: bool) -> None:
    signed = sign_message(signer)
    stamped = _with_timestamp(signed.signature, b"\x30\x03token", legacy=legacy)

    verified = verify_signature(stamped, {"/message.xml": sha512(MESSAGE)})

    assert verified.timestamp_token == b"\x30\x03token"


# -- reference fixtures ----------------------------------------------------------------


def manifest_rows(topic: str) -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as handle:
        return [
            row
            for row in csv.DictReader(handle, delimiter="\t")
            if row["topic"] == topic
        ]


def need_fixtures() -> None:
    if not FIXTURES.is_dir():
        pytest.skip("X-Road fixtures are not available")


def expected_code(row: dict[str, str]) -> str:
    return row["expected_error"].removeprefix("exact code ").split()[0]


def row_id(row: dict[str, str]) -> str:
    return f"{row['path']}:{row['expected']}:{row['expected_error'][:24]}"


SIGNATURE_ROWS = [r for r in manifest_rows("signature") if r["needs"] != "support file"]


@pytest.mark.parametrize("row", SIGNATURE_ROWS, ids=[row_id(r) for r in SIGNATURE_ROWS])
def test_manifest_signature_rows(row: dict[str, str]) -> None:
    need_fixtures()
    if row["expected_error"].startswith("incorrect_certificate"):
        pytest.skip("signer identity: tests/protocol/test_signature_signer_rows.py")
    folder = FIXTURES / "signatures"
    signature = (folder / Path(row["path"]).name).read_bytes()
    parts = {"/message.xml": sha512((folder / "message-0.xml").read_bytes())}
    chain: dict[str, bytes] = {}
    if 'bytes "foo"' in row["expected_error"]:
        parts = {"/message.xml": sha512(b"foo")}
    if row["path"].endswith("batch-sig.xml"):
        parts = {
            "/message.xml": sha512((folder / "message-1.xml").read_bytes()),
            "/attachment1": sha512(b"blaah"),
        }
        chain = {
            "hash_chain_result": (folder / "hash-chain-result.xml").read_bytes(),
            "hash_chain": (folder / "hash-chain-1.xml").read_bytes(),
        }

    if row["expected"] == "accept":
        verified = verify_signature(signature, parts, **chain)
        assert verified.signing_cert.serial_number == 4
        return
    with pytest.raises(
        (InvalidXml, MalformedSignature, InvalidSignatureValue)
    ) as excinfo:
        verify_signature(signature, parts, **chain)
    assert codes_equal(code_of(excinfo), expected_code(row))


ASIC_ROWS = [r for r in manifest_rows("asic") if r["path"].startswith("asic/verifier/")]


def open_container(path: str):
    container = zipfile.ZipFile(FIXTURES / path)
    names = set(container.namelist())
    parts = {"/message.xml": sha512(container.read("message.xml"))}
    if "attachment1" in names:
        parts["/attachment1"] = sha512(container.read("attachment1"))
    chain: dict[str, bytes] = {}
    if "sig-hashchainresult.xml" in names:
        chain = {
            "hash_chain_result": container.read("sig-hashchainresult.xml"),
            "hash_chain": container.read("sig-hashchain.xml"),
        }
    return container.read("META-INF/signatures.xml"), parts, chain


@pytest.mark.parametrize("row", ASIC_ROWS, ids=[row_id(r) for r in ASIC_ROWS])
def test_manifest_asic_verifier_rows(row: dict[str, str]) -> None:
    need_fixtures()
    signature, parts, chain = open_container(row["path"])

    if row["expected"] == "accept":
        verified = verify_signature(signature, parts, **chain)
        assert verified.ocsp_responses
        return
    with pytest.raises((MalformedSignature, InvalidSignatureValue)) as excinfo:
        verify_signature(signature, parts, **chain)
    assert codes_equal(code_of(excinfo), expected_code(row))


@pytest.mark.parametrize(
    ("name", "has_token"),
    [
        ("valid-signed-message", True),
        ("valid-signed-hashchain", True),
        ("valid-batch-ts", False),
        ("valid-non-batch-rest", False),
    ],
)
def test_asic_embedded_timestamp_token(name: str, has_token: bool) -> None:
    need_fixtures()
    signature, parts, chain = open_container(f"asic/verifier/{name}.asice")

    verified = verify_signature(signature, parts, **chain)

    if not has_token:
        assert verified.timestamp_token is None
        return
    token = cms.ContentInfo.load(verified.timestamp_token)
    assert token["content_type"].native == "signed_data"


def test_asic_fixtures_also_verify_in_signxml() -> None:
    need_fixtures()
    container = zipfile.ZipFile(FIXTURES / "asic/verifier/valid-signed-message.asice")
    signature = container.read("META-INF/signatures.xml")
    cert = verify_signature(
        signature, {"/message.xml": sha512(container.read("message.xml"))}
    ).signing_cert

    assert signxml_verify(
        signature, cert, {"/message.xml": container.read("message.xml")}
    )
