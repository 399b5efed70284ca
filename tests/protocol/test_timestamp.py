from __future__ import annotations

import base64
import csv
import hashlib
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree

from protocol.errors import MalformedSignature, TimestampError, codes_equal
from protocol.timestamp import (
    XADES_NS,
    TimeStampResp,
    TimestampSignerVerificationFailed,
    TspCertificateNotFound,
    add_tsa_cert,
    build_timestamp_request,
    build_timestamp_response,
    embed_timestamp,
    parse_timestamp_response,
    signature_value,
    verify_timestamp_signature,
    verify_timestamp_token,
)

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
POLICY = "1.2.3.4.1"
DATA = b"<ds:SignatureValue>pretend</ds:SignatureValue>"


def fixture(path: str) -> Path:
    full = FIXTURES / path
    if not full.exists():
        pytest.skip(f"fixture {path} is absent")
    return full


def make_tsa(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, name: str = "TSA"):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(4711)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def rsa_tsa():
    return make_tsa(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def stamp(tsa, data: bytes = DATA, nonce: int | None = None, serial: int = 7):
    key, cert = tsa
    request = build_timestamp_request(data, nonce=nonce)
    reply = build_timestamp_response(
        request, key=key, cert=cert, serial=serial, gen_time=NOW, policy_oid=POLICY
    )
    return request, reply


def status_of(reply: bytes) -> dict:
    return TimeStampResp.load(reply)["status"].native


# -- MANIFEST rows of topic tsp ---------------------------------------------


def _shared_params_certs(directory: Path, parent: str) -> list[x509.Certificate]:
    """<cert> children of <parent> in every shared-params.xml (PEM text or DER)."""
    certs = []
    for path in sorted(directory.glob("*/shared-params.xml")):
        for element in etree.parse(str(path)).getroot().iter():
            if (
                not isinstance(element.tag, str)
                or etree.QName(element).localname != "cert"
            ):
                continue
            if etree.QName(element.getparent()).localname != parent:
                continue
            raw = base64.b64decode("".join(element.text.split()))
            if raw.startswith(b"-----BEGIN"):
                certs.append(x509.load_pem_x509_certificate(raw))
            else:
                certs.append(x509.load_der_x509_certificate(raw))
    return certs


def _tsp_rows() -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [row for row in rows if row["topic"] == "tsp"]


def _row_id(row: dict[str, str]) -> str:
    return f"{row['path']}-{row['expected']}-{row['expected_error'].split(' ')[0]}"


def _run_row(row: dict[str, str]) -> None:
    good_v2 = fixture("globalconf/dirs/globalconf_good_v2")
    path = row["path"]
    if path == "tsp/tsp.response":
        tsa_cert = x509.load_der_x509_certificate(
            base64.b64decode(fixture("certs/common-test/tsp.pem").read_bytes())
        )
        reply = fixture(path).read_bytes()
        token_info = TimeStampResp.load(reply)["time_stamp_token"]["content"]
        parsed = token_info["encap_content_info"]["content"].parsed
        own_imprint = parsed["message_imprint"]["hashed_message"].native
        token = parse_timestamp_response(reply, own_imprint)
        info = verify_timestamp_signature(token, [tsa_cert])
        assert info.gen_time == datetime(2014, 5, 6, 8, 28, 49, tzinfo=UTC)
        return

    token = fixture("tsp/valid").read_bytes()
    data = fixture("tsp/stamped-data").read_bytes()
    tsa_certs = _shared_params_certs(good_v2, "approvedTSA")
    code = row["expected_error"].split(" ")[0]
    if row["expected"] == "accept":
        info = verify_timestamp_token(token, data, tsa_certs)
        assert info.gen_time == datetime(2012, 11, 29, 13, 10, 4, tzinfo=UTC)
        assert info.hash_algorithm == "sha256"
        return

    if code == "malformed_signature":
        altered = bytearray(data)
        altered[42] = 0x01
        trust: list[x509.Certificate] = []  # no trust list: imprint comes first
        data = bytes(altered)
    else:
        trust = _shared_params_certs(good_v2, "ocsp")
    with pytest.raises(TimestampError if "tsp" in code else MalformedSignature) as err:
        verify_timestamp_token(token, data, trust)
    assert codes_equal(err.value.code, code.removeprefix("mlog."))


@pytest.mark.parametrize("row", _tsp_rows(), ids=_row_id)
def test_manifest_tsp_row(row: dict[str, str]) -> None:
    _run_row(row)


def test_manifest_has_tsp_rows() -> None:
    fixture("MANIFEST.tsv")
    assert len(_tsp_rows()) >= 5


def test_token_embedded_in_reference_signature_verifies() -> None:
    container = fixture("asic/verifier/valid-signed-message.asice")
    signatures = zipfile.ZipFile(container).read("META-INF/signatures.xml")
    dev = fixture("globalconf/dirs/globalconf_good2_v3")
    tsa_certs = _shared_params_certs(dev, "approvedTSA")
    text = (
        etree.fromstring(signatures)
        .find(f".//{{{XADES_NS}}}EncapsulatedTimeStamp")
        .text
    )
    token = base64.b64decode("".join(text.split()))

    info = verify_timestamp_token(token, signature_value(signatures), tsa_certs)

    assert info.gen_time == datetime(2024, 12, 5, 13, 16, 35, tzinfo=UTC)
    assert info.hash_algorithm == "sha512"


# -- our own TSA round trips ------------------------------------------------


def test_round_trip_rsa(rsa_tsa) -> None:
    request, reply = stamp(rsa_tsa)
    token = parse_timestamp_response(reply, request)
    info = verify_timestamp_token(token, DATA, [rsa_tsa[1]])

    assert status_of(reply)["status"] == "granted"
    assert info.gen_time == NOW
    assert info.serial == 7
    assert info.hash_algorithm == "sha512"
    assert info.tsa_cert == rsa_tsa[1]


def test_round_trip_ec() -> None:
    tsa = make_tsa(ec.generate_private_key(ec.SECP256R1()))
    request, reply = stamp(tsa)
    token = parse_timestamp_response(reply, request)

    assert verify_timestamp_token(token, DATA, [tsa[1]]).serial == 7


def test_parse_accepts_bare_imprint(rsa_tsa) -> None:
    _, reply = stamp(rsa_tsa)
    token = parse_timestamp_response(reply, hashlib.sha512(DATA).digest())
    assert verify_timestamp_token(token, DATA, [rsa_tsa[1]]).serial == 7


def test_nonce_is_echoed_and_checked(rsa_tsa) -> None:
    request, reply = stamp(rsa_tsa, nonce=2**70 + 1)
    token = parse_timestamp_response(reply, request)
    tst_info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"]
    assert tst_info.parsed["nonce"].native == 2**70 + 1

    other = build_timestamp_request(DATA, nonce=5)
    with pytest.raises(TimestampError) as err:
        parse_timestamp_response(reply, other)
    assert err.value.code == "TimestamperFailed"


def test_parse_rejects_other_imprint(rsa_tsa) -> None:
    _, reply = stamp(rsa_tsa)
    with pytest.raises(TimestampError) as err:
        parse_timestamp_response(reply, build_timestamp_request(b"other data"))
    assert err.value.code == "TimestamperFailed"


def test_request_shape() -> None:
    request = tsp.TimeStampReq.load(build_timestamp_request(b"abc"))

    assert request["version"].native == "v1"
    assert request["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha512"
    assert (
        request["message_imprint"]["hashed_message"].native
        == hashlib.sha512(b"abc").digest()
    )
    assert request["nonce"].native is None
    assert request["req_policy"].native is None
    assert request["cert_req"].native is False
    with pytest.raises(TimestampError):
        build_timestamp_request(b"abc", hash_algorithm="md5")


def _sha1_request() -> bytes:
    imprint = {"hash_algorithm": {"algorithm": "sha1"}, "hashed_message": b"\0" * 20}
    return tsp.TimeStampReq({"version": "v1", "message_imprint": imprint}).dump()


def _policy_request() -> bytes:
    request = tsp.TimeStampReq.load(build_timestamp_request(DATA))
    request["req_policy"] = "1.9.9"
    return request.dump(force=True)


def _short_imprint_request() -> bytes:
    imprint = {"hash_algorithm": {"algorithm": "sha512"}, "hashed_message": b"\1" * 20}
    return tsp.TimeStampReq({"version": "v1", "message_imprint": imprint}).dump()


@pytest.mark.parametrize(
    ("request_der", "fail_bit"),
    [
        (b"", "bad_data_format"),
        (b"not der at all", "bad_data_format"),
        (build_timestamp_request(DATA)[:-5], "bad_data_format"),
        (build_timestamp_request(DATA) + b"\0", "bad_data_format"),
        (_sha1_request(), "bad_alg"),
        (_short_imprint_request(), "bad_data_format"),
        (_policy_request(), "unaccepted_policy"),
    ],
    ids=["empty", "garbage", "truncated", "trailing", "sha1", "short", "policy"],
)
def test_tsa_rejects_bad_requests(rsa_tsa, request_der: bytes, fail_bit: str) -> None:
    key, cert = rsa_tsa
    reply = build_timestamp_response(
        request_der, key=key, cert=cert, serial=1, gen_time=NOW, policy_oid=POLICY
    )

    status = status_of(reply)
    assert status["status"] == "rejection"
    assert status["fail_info"] == {fail_bit}
    with pytest.raises(TimestampError) as err:
        parse_timestamp_response(reply, request_der)
    assert err.value.code == "TimestamperFailed"


def test_tsa_requires_aware_time(rsa_tsa) -> None:
    key, cert = rsa_tsa
    with pytest.raises(ValueError):
        build_timestamp_response(
            build_timestamp_request(DATA),
            key=key,
            cert=cert,
            serial=1,
            gen_time=NOW.replace(tzinfo=None),
            policy_oid=POLICY,
        )


def test_garbage_reply_is_timestamper_failed() -> None:
    with pytest.raises(TimestampError) as err:
        parse_timestamp_response(b"\x30\x03\x02\x01", build_timestamp_request(DATA))
    assert err.value.code == "TimestamperFailed"


# -- verification failures --------------------------------------------------


def _token(tsa) -> bytes:
    request, reply = stamp(tsa)
    return parse_timestamp_response(reply, request)


def test_imprint_mismatch_is_malformed_signature(rsa_tsa) -> None:
    with pytest.raises(MalformedSignature) as err:
        verify_timestamp_token(_token(rsa_tsa), DATA + b"!", [rsa_tsa[1]])
    assert err.value.code == "MalformedSignature"
    assert "Timestamp hashes do not match" in str(err.value)


def test_unknown_signer(rsa_tsa) -> None:
    stranger = make_tsa(ec.generate_private_key(ec.SECP256R1()), "Other")[1]
    with pytest.raises(TspCertificateNotFound) as err:
        verify_timestamp_token(_token(rsa_tsa), DATA, [stranger])
    assert codes_equal(err.value.code, "tsp_certificate_not_found")


def test_same_name_and_serial_other_key_fails_signature(rsa_tsa) -> None:
    # Same issuer + serial, different key: the lookup matches, the signature must not.
    impostor = make_tsa(ec.generate_private_key(ec.SECP256R1()), "TSA")[1]
    with pytest.raises(TimestampSignerVerificationFailed) as err:
        verify_timestamp_token(_token(rsa_tsa), DATA, [impostor])
    assert codes_equal(err.value.code, "timestamp_signer_verification_failed")


def _mutate_signer(token: bytes, mutate) -> bytes:
    content_info = cms.ContentInfo.load(token)
    signer_info = content_info["content"]["signer_infos"][0]
    mutate(signer_info)
    return content_info.dump(force=True)


def test_tampered_signature_fails(rsa_tsa) -> None:
    def flip(signer_info) -> None:
        value = bytearray(signer_info["signature"].native)
        value[10] ^= 0xFF
        signer_info["signature"] = bytes(value)

    token = _mutate_signer(_token(rsa_tsa), flip)
    with pytest.raises(TimestampSignerVerificationFailed):
        verify_timestamp_token(token, DATA, [rsa_tsa[1]])


def test_signer_found_by_subject_key_identifier(rsa_tsa) -> None:
    ski = x509.SubjectKeyIdentifier.from_public_key(rsa_tsa[1].public_key()).digest

    def by_ski(signer_info) -> None:
        signer_info["version"] = "v3"
        signer_info["sid"] = cms.SignerIdentifier(
            name="subject_key_identifier", value=ski
        )

    token = _mutate_signer(_token(rsa_tsa), by_ski)
    assert verify_timestamp_token(token, DATA, [rsa_tsa[1]]).serial == 7


def test_garbage_token_is_malformed() -> None:
    with pytest.raises(MalformedSignature):
        verify_timestamp_token(b"\x30\x80junk", DATA, [])


# -- add_tsa_cert -----------------------------------------------------------


def test_add_tsa_cert_to_fixture_token_without_certs() -> None:
    token = fixture("tsp/valid").read_bytes()
    data = fixture("tsp/stamped-data").read_bytes()
    tsa_certs = _shared_params_certs(
        fixture("globalconf/dirs/globalconf_good_v2"), "approvedTSA"
    )
    signer = verify_timestamp_token(token, data, tsa_certs).tsa_cert

    with_cert = add_tsa_cert(token, signer)

    certs = cms.ContentInfo.load(with_cert)["content"]["certificates"]
    assert [c.chosen.dump() for c in certs] == [
        signer.public_bytes(serialization.Encoding.DER)
    ]
    assert verify_timestamp_token(with_cert, data, tsa_certs).tsa_cert == signer
    assert add_tsa_cert(with_cert, signer) == with_cert


def test_add_second_cert_keeps_token_valid(rsa_tsa) -> None:
    token = _token(rsa_tsa)
    assert add_tsa_cert(token, rsa_tsa[1]) == token  # our TSA already includes it

    other = make_tsa(ec.generate_private_key(ec.SECP256R1()), "Other")[1]
    extended = add_tsa_cert(token, other)
    assert len(cms.ContentInfo.load(extended)["content"]["certificates"]) == 2
    assert verify_timestamp_token(extended, DATA, [rsa_tsa[1]]).serial == 7


# -- signatures.xml ---------------------------------------------------------


def _unstamped_signature() -> bytes:
    return fixture("signatures/sign-0.xml").read_bytes()


def test_signature_value_tolerates_wrapping() -> None:
    document = _unstamped_signature()
    value = signature_value(document)
    wrapped = re.sub(
        rb"(<ds:SignatureValue[^>]*>)([^<]+)<",
        lambda m: (
            m.group(1)
            + b"\r\n"
            + m.group(2)[:10]
            + b"&#13;\n "
            + m.group(2)[10:]
            + b"<"
        ),
        document,
    )

    assert wrapped != document
    assert signature_value(wrapped) == value
    assert len(value) >= 128


def test_signature_value_requires_one_signature() -> None:
    with pytest.raises(MalformedSignature):
        signature_value(b"<root/>")


def test_embed_keeps_bytes_outside_the_insertion(rsa_tsa) -> None:
    document = _unstamped_signature()
    token = _token(rsa_tsa)

    stamped = embed_timestamp(document, token)

    tag = b"<xades:UnsignedSignatureProperties>"
    cut = document.index(tag) + len(tag)
    inserted = stamped[cut : len(stamped) - (len(document) - cut)]
    assert stamped[:cut] == document[:cut]
    assert stamped[cut + len(inserted) :] == document[cut:]
    assert inserted.startswith(b'<xades:SignatureTimeStamp Id="signature-timestamp">')

    root = etree.fromstring(stamped)
    first = root.find(f".//{{{XADES_NS}}}UnsignedSignatureProperties")[0]
    assert etree.QName(first).localname == "SignatureTimeStamp"
    encapsulated = first.find(f"{{{XADES_NS}}}EncapsulatedTimeStamp").text
    assert base64.b64decode(encapsulated) == token
    assert signature_value(stamped) == signature_value(document)


def test_embed_into_self_closing_element(rsa_tsa) -> None:
    document = re.sub(
        rb"<xades:UnsignedSignatureProperties>.*</xades:UnsignedSignatureProperties>",
        b"<xades:UnsignedSignatureProperties/>",
        _unstamped_signature(),
        flags=re.S,
    )
    stamped = embed_timestamp(document, _token(rsa_tsa))

    assert stamped.startswith(document[: document.index(b"<xades:UnsignedSignature")])
    properties = etree.fromstring(stamped).find(
        f".//{{{XADES_NS}}}UnsignedSignatureProperties"
    )
    assert [etree.QName(c).localname for c in properties] == ["SignatureTimeStamp"]


def test_embed_without_unsigned_properties(rsa_tsa) -> None:
    document = re.sub(
        rb"<xades:UnsignedProperties>.*</xades:UnsignedProperties>",
        b"",
        _unstamped_signature(),
        flags=re.S,
    )
    assert b"UnsignedProperties" not in document

    stamped = embed_timestamp(document, _token(rsa_tsa))

    stamp_el = etree.fromstring(stamped).find(
        f".//{{{XADES_NS}}}UnsignedProperties/{{{XADES_NS}}}UnsignedSignatureProperties"
        f"/{{{XADES_NS}}}SignatureTimeStamp"
    )
    assert stamp_el is not None


def test_embed_twice_is_refused(rsa_tsa) -> None:
    stamped = embed_timestamp(_unstamped_signature(), _token(rsa_tsa))
    with pytest.raises(TimestampError):
        embed_timestamp(stamped, _token(rsa_tsa))


def test_stamped_reference_signature_is_refused(rsa_tsa) -> None:
    container = fixture("asic/verifier/valid-signed-message.asice")
    signatures = zipfile.ZipFile(container).read("META-INF/signatures.xml")
    with pytest.raises(TimestampError):
        embed_timestamp(signatures, _token(rsa_tsa))
