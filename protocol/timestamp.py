"""Core: RFC 3161 time-stamp requests, responses and tokens (message-log.md §5).

Both sides live here: the security server builds requests, checks replies
and verifies tokens; the TSA role builds replies. Bytes in, bytes or value
objects out: no clock, no randomness, no I/O. Tokens are also embedded into
a signatures.xml document as a XAdES SignatureTimeStamp (message-log.md §3).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from lxml import etree

from .digests import b64, unb64
from .errors import MalformedSignature, TimestampError, XRoadError
from .xml import parse_xml

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"

# Imprint algorithms we stamp and accept. SHA-1 is left out on purpose: an
# imprint is only as strong as its hash, and X-Road itself uses SHA-512.
IMPRINT_ALGORITHMS = ("sha224", "sha256", "sha384", "sha512")
# Digests accepted for the CMS signature over the signed attributes.
_CMS_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_STATUS_OK = ("granted", "granted_with_mods")


class TspCertificateNotFound(TimestampError):
    """The token's signer is not among the approved TSA certificates."""

    code: ClassVar[str] = "TspCertificateNotFound"


class TimestampSignerVerificationFailed(TimestampError):
    """The CMS signature or its signed attributes do not verify."""

    code: ClassVar[str] = "TimestampSignerVerificationFailed"


class MalformedTimestamp(MalformedSignature):
    """A token or reply that cannot be parsed, or whose imprint does not match."""


class TimeStampResp(core.Sequence):
    """RFC 3161 §2.4.2 TimeStampResp with the token OPTIONAL, as the RFC says.

    asn1crypto's own class makes the token mandatory, so it can neither
    build nor read a rejection.
    """

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True, slots=True)
class TimestampInfo:
    """What a verified token says: when, by whom, over which hash."""

    gen_time: datetime
    tsa_cert: x509.Certificate
    hash_algorithm: str
    serial: int


# -- requests (security server side) ----------------------------------------


def build_timestamp_request(
    data: bytes,
    hash_algorithm: str = "sha512",
    nonce: int | None = None,
    cert_req: bool = False,
) -> bytes:
    """Build a DER TimeStampReq v1 over ``data`` (no policy; RFC 3161 §2.4.1)."""
    if hash_algorithm not in IMPRINT_ALGORITHMS:
        raise TimestampError(f"hash algorithm {hash_algorithm!r} is not supported")
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": _imprint(data, hash_algorithm),
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    return tsp.TimeStampReq(fields).dump()


def _imprint(data: bytes, hash_algorithm: str) -> tsp.MessageImprint:
    return tsp.MessageImprint(
        {
            "hash_algorithm": {"algorithm": hash_algorithm},
            "hashed_message": hashlib.new(hash_algorithm, data).digest(),
        }
    )


def parse_timestamp_response(der: bytes, request_der_or_imprint: bytes) -> bytes:
    """Check a TimeStampResp and return its token (DER ContentInfo).

    Every failure is a :class:`TimestampError` (``TimestamperFailed``): the
    caller tries the next TSA.

    ``request_der_or_imprint`` is either the DER request that was sent, or
    the bare hashed message. The status must be granted or grantedWithMods,
    the token's imprint must equal the request's, and a request nonce must
    be echoed (RFC 3161 §2.4.2).
    """
    try:
        response = TimeStampResp.load(der, strict=True)
        status = response["status"]["status"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError(f"unparseable time-stamp reply: {exc}") from exc
    if status not in _STATUS_OK:
        text = response["status"]["status_string"].native or []
        raise TimestampError(
            f"TSA refused the request: status {status!r} {'; '.join(text)!r}"
        )
    if isinstance(response["time_stamp_token"], core.Void):
        raise MalformedTimestamp("granted time-stamp reply carries no token")

    token = response["time_stamp_token"].dump()
    try:
        tst_info = _tst_info(cms.ContentInfo.load(token))
    except MalformedSignature as exc:
        raise TimestampError(str(exc)) from exc
    imprint = tst_info["message_imprint"]
    expected_alg, expected_hash, nonce = _expected_imprint(request_der_or_imprint)
    if imprint["hashed_message"].native != expected_hash or (
        expected_alg and imprint["hash_algorithm"]["algorithm"].native != expected_alg
    ):
        raise TimestampError("time-stamp imprint differs from the request")
    if nonce is not None and tst_info["nonce"].native != nonce:
        raise TimestampError("time-stamp nonce differs from the request")
    return token


def _expected_imprint(value: bytes) -> tuple[str | None, bytes, int | None]:
    """Read (algorithm, hash, nonce) from a DER request, else take a bare hash."""
    try:
        request = tsp.TimeStampReq.load(value, strict=True)
        imprint = request["message_imprint"]
        return (
            imprint["hash_algorithm"]["algorithm"].native,
            imprint["hashed_message"].native,
            request["nonce"].native,
        )
    except (ValueError, TypeError, KeyError):
        return None, value, None


# -- replies (TSA side) -----------------------------------------------------


def build_timestamp_response(
    request_der: bytes,
    *,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    serial: int,
    gen_time: datetime,
    policy_oid: str,
    accuracy_seconds: int = 1,
) -> bytes:
    """Answer a DER TimeStampReq with a DER TimeStampResp.

    Bad input never raises: it gets a rejection reply with a failure
    reason (RFC 3161 §2.4.2). Only a naive ``gen_time`` is a caller error.
    """
    if gen_time.tzinfo is None:
        raise ValueError("gen_time must be timezone-aware")
    try:
        request = tsp.TimeStampReq.load(request_der, strict=True)
        refusal = _check_request(request, policy_oid)
    except (ValueError, TypeError, KeyError):
        return _rejection("bad_data_format", "request is not a DER TimeStampReq")
    if refusal:
        return _rejection(*refusal)

    tst_fields: dict[str, object] = {
        "version": "v1",
        "policy": policy_oid,
        "message_imprint": request["message_imprint"],
        "serial_number": serial,
        "gen_time": gen_time.astimezone(UTC).replace(microsecond=0),
        "accuracy": {"seconds": accuracy_seconds},
        "tsa": _directory_name(cert.subject),
    }
    if request["nonce"].native is not None:
        tst_fields["nonce"] = request["nonce"]
    tst_info = tsp.TSTInfo(tst_fields)
    token = _sign_token(tst_info, key, cert, gen_time)
    return TimeStampResp(
        {"status": {"status": "granted"}, "time_stamp_token": token}
    ).dump()


def _check_request(
    request: tsp.TimeStampReq, policy_oid: str
) -> tuple[str, str] | None:
    """Return (failure bit, text) when the request cannot be granted."""
    imprint = request["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if request["version"].native != "v1":
        return "bad_request", "only TimeStampReq v1 is supported"
    if algorithm not in IMPRINT_ALGORITHMS:
        return "bad_alg", "imprint algorithm is not supported"
    if len(imprint["hashed_message"].native) != hashlib.new(algorithm).digest_size:
        return "bad_data_format", "imprint length does not fit its algorithm"
    policy = request["req_policy"].native
    if policy is not None and policy != policy_oid:
        return "unaccepted_policy", "requested policy is not offered"
    if request["extensions"].native:
        return "unaccepted_extensions", "request extensions are not supported"
    return None


def _rejection(fail_bit: str, text: str) -> bytes:
    status = {
        "status": "rejection",
        "status_string": [text],
        "fail_info": {fail_bit},
    }
    return TimeStampResp({"status": status}).dump()


def _directory_name(name: x509.Name) -> asn1_x509.GeneralName:
    return asn1_x509.GeneralName(
        name="directory_name", value=asn1_x509.Name.load(name.public_bytes())
    )


def _signed_attrs(
    tst_info: tsp.TSTInfo, asn1_cert: asn1_x509.Certificate, signing_time: datetime
) -> cms.CMSAttributes:
    issuer_serial = {
        "issuer": [
            asn1_x509.GeneralName(name="directory_name", value=asn1_cert.issuer)
        ],
        "serial_number": asn1_cert.serial_number,
    }
    # ESS signing-certificate-v2 with the default SHA-256 (RFC 5816): without
    # it openssl rejects the token.
    ess_cert_id = {
        "cert_hash": hashlib.sha256(asn1_cert.dump()).digest(),
        "issuer_serial": issuer_serial,
    }
    ess = tsp.SigningCertificateV2({"certs": [ess_cert_id]})
    tst_digest = hashlib.sha256(tst_info.dump()).digest()
    return cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "signing_time", "values": [_utc_time(signing_time)]},
            {"type": "signing_certificate_v2", "values": [ess]},
            {"type": "message_digest", "values": [tst_digest]},
        ]
    )


def _sign_token(
    tst_info: tsp.TSTInfo,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    signing_time: datetime,
) -> cms.ContentInfo:
    """Wrap a TSTInfo into CMS SignedData the way ``openssl ts -verify`` wants."""
    asn1_cert = asn1_x509.Certificate.load(
        cert.public_bytes(serialization.Encoding.DER)
    )
    attrs = _signed_attrs(tst_info, asn1_cert, signing_time)
    # A standalone CMSAttributes dumps with the SET tag, which is what is signed.
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
        signature_algorithm = "rsassa_pkcs1v15"
    else:
        signature = key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256()))
        signature_algorithm = "sha256_ecdsa"

    sid = {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value=sid),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": signature_algorithm},
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            # The object, not its bytes: asn1crypto fails on raw bytes here.
            "encap_content_info": {"content_type": "tst_info", "content": tst_info},
            "certificates": [asn1_cert],
            "signer_infos": [signer_info],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})


def _utc_time(moment: datetime) -> cms.Time:
    moment = moment.astimezone(UTC).replace(microsecond=0)
    # RFC 5652 §11.3: UTCTime up to 2049, GeneralizedTime from 2050 on.
    kind = "utc_time" if moment.year < 2050 else "generalized_time"
    return cms.Time(name=kind, value=moment)


# -- token verification -----------------------------------------------------


def verify_timestamp_token(
    token_der: bytes, data: bytes, tsa_certs: list[x509.Certificate]
) -> TimestampInfo:
    """Verify a TimeStampToken over ``data`` against the approved TSA certs.

    The imprint is checked first, with the token's own hash algorithm, then
    the signer lookup and the CMS signature (message-log.md §5, §8 step 4).
    TSA certificate dates are not checked, as in the reference.

    :raises MalformedSignature: unparseable token or imprint mismatch.
    :raises TspCertificateNotFound: no approved certificate matches the signer.
    :raises TimestampSignerVerificationFailed: the CMS signature is wrong.
    """
    content_info = _load_token(token_der)
    imprint = _tst_info(content_info)["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if algorithm not in IMPRINT_ALGORITHMS:
        raise MalformedTimestamp(f"imprint algorithm {algorithm!r} is not supported")
    if hashlib.new(algorithm, data).digest() != imprint["hashed_message"].native:
        raise MalformedTimestamp("Timestamp hashes do not match")
    return _verify_signed_data(content_info, tsa_certs)


def verify_timestamp_signature(
    token_der: bytes, tsa_certs: list[x509.Certificate]
) -> TimestampInfo:
    """Verify only who signed a token and its CMS signature, not the imprint."""
    return _verify_signed_data(_load_token(token_der), tsa_certs)


def _load_token(token_der: bytes) -> cms.ContentInfo:
    try:
        content_info = cms.ContentInfo.load(token_der)
        _tst_info(content_info)
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedTimestamp(f"unparseable time-stamp token: {exc}") from exc
    return content_info


def _tst_info(content_info: cms.ContentInfo) -> tsp.TSTInfo:
    try:
        if content_info["content_type"].native != "signed_data":
            raise MalformedTimestamp("time-stamp token is not CMS SignedData")
        encap = content_info["content"]["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise MalformedTimestamp("time-stamp token does not hold a TSTInfo")
        tst_info = encap["content"].parsed
        _ = tst_info.native  # a full parse, so errors surface here
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedTimestamp(f"unparseable time-stamp token: {exc}") from exc
    return tst_info


def _verify_signed_data(
    content_info: cms.ContentInfo, tsa_certs: list[x509.Certificate]
) -> TimestampInfo:
    signed_data = content_info["content"]
    signer_infos = signed_data["signer_infos"]
    if len(signer_infos) != 1:
        raise MalformedTimestamp("time-stamp token must have exactly one signer")
    signer_info = signer_infos[0]
    tsa_cert = _find_signer(signer_info["sid"], tsa_certs)

    encap = signed_data["encap_content_info"]
    try:
        _check_signed_attrs(signer_info, bytes(encap["content"]), tsa_cert)
        _check_cms_signature(signer_info, tsa_cert)
    except (ValueError, TypeError, KeyError, UnsupportedAlgorithm) as exc:
        raise TimestampSignerVerificationFailed(
            f"time-stamp signer check failed: {exc}"
        ) from exc

    tst_info = encap["content"].parsed
    return TimestampInfo(
        gen_time=tst_info["gen_time"].native,
        tsa_cert=tsa_cert,
        hash_algorithm=tst_info["message_imprint"]["hash_algorithm"][
            "algorithm"
        ].native,
        serial=tst_info["serial_number"].native,
    )


def _find_signer(
    sid: cms.SignerIdentifier, tsa_certs: list[x509.Certificate]
) -> x509.Certificate:
    """Match the CMS SignerIdentifier by issuer + serial or by SKI (RFC 5652 §5.3)."""
    for cert in tsa_certs or []:
        asn1_cert = asn1_x509.Certificate.load(
            cert.public_bytes(serialization.Encoding.DER)
        )
        if sid.name == "issuer_and_serial_number":
            if (
                sid.chosen["serial_number"].native == asn1_cert.serial_number
                and sid.chosen["issuer"] == asn1_cert.issuer
            ):
                return cert
        elif sid.chosen.native == _subject_key_id(cert):
            return cert
    raise TspCertificateNotFound(
        "no approved TSA certificate matches the time-stamp signer"
    )


def _subject_key_id(cert: x509.Certificate) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _check_signed_attrs(
    signer_info: cms.SignerInfo, econtent: bytes, tsa_cert: x509.Certificate
) -> None:
    """content_type, message_digest and the ESS certificate binding (RFC 5035)."""
    attrs = {
        attr["type"].native: attr["values"] for attr in signer_info["signed_attrs"]
    }
    if "content_type" not in attrs or attrs["content_type"][0].native != "tst_info":
        raise TimestampSignerVerificationFailed("signed content type is not TSTInfo")
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _CMS_HASHES:
        raise TimestampSignerVerificationFailed(
            f"signer digest {digest_name!r} is not supported"
        )
    message_digest = attrs.get("message_digest")
    if (
        not message_digest
        or message_digest[0].native != hashlib.new(digest_name, econtent).digest()
    ):
        raise TimestampSignerVerificationFailed(
            "message digest of the TSTInfo is wrong"
        )

    cert_der = tsa_cert.public_bytes(serialization.Encoding.DER)
    if "signing_certificate_v2" in attrs:
        ess_id = attrs["signing_certificate_v2"][0]["certs"][0]
        name = ess_id["hash_algorithm"]["algorithm"].native
        expected = hashlib.new(name, cert_der).digest()
    elif "signing_certificate" in attrs:
        ess_id = attrs["signing_certificate"][0]["certs"][0]
        expected = hashlib.sha1(cert_der).digest()  # fixed by RFC 2634 §5.4
    else:
        raise TimestampSignerVerificationFailed("token has no ESS signing certificate")
    if ess_id["cert_hash"].native != expected:
        raise TimestampSignerVerificationFailed(
            "ESS certificate hash names another cert"
        )


def _check_cms_signature(
    signer_info: cms.SignerInfo, tsa_cert: x509.Certificate
) -> None:
    # Signed over the attributes re-tagged as a universal SET (RFC 5652 §5.4).
    signed = signer_info["signed_attrs"].untag().dump()
    signature = signer_info["signature"].native
    algorithm: algos.SignedDigestAlgorithm = signer_info["signature_algorithm"]
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    public_key = tsa_cert.public_key()
    try:
        kind = algorithm.signature_algo
        if kind == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                signature, signed, padding.PKCS1v15(), _CMS_HASHES[digest_name]()
            )
        elif kind == "rsassa_pss" and isinstance(public_key, rsa.RSAPublicKey):
            params = algorithm["parameters"]
            pss_hash = _CMS_HASHES[params["hash_algorithm"]["algorithm"].native]()
            pss = padding.PSS(padding.MGF1(pss_hash), params["salt_length"].native)
            public_key.verify(signature, signed, pss, pss_hash)
        elif kind == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, signed, ec.ECDSA(_CMS_HASHES[digest_name]()))
        else:
            raise TimestampSignerVerificationFailed(
                f"signature algorithm {kind!r} with this key is not supported"
            )
    except InvalidSignature as exc:
        raise TimestampSignerVerificationFailed(
            "time-stamp CMS signature is invalid"
        ) from exc


def add_tsa_cert(token_der: bytes, tsa_cert: x509.Certificate) -> bytes:
    """Return the token with ``tsa_cert`` in its certificate set (message-log.md §5).

    The signed parts keep their encoding; a token that already holds the
    certificate comes back unchanged.
    """
    content_info = _load_token(token_der)
    signed_data = content_info["content"]
    cert_der = tsa_cert.public_bytes(serialization.Encoding.DER)
    present = signed_data["certificates"]
    existing = [choice.chosen.dump() for choice in present] if present else []
    if cert_der in existing:
        return token_der

    certificates = cms.CertificateSet(
        [cms.CertificateChoices.load(der) for der in existing]
        + [
            cms.CertificateChoices(
                name="certificate", value=asn1_x509.Certificate.load(cert_der)
            )
        ]
    )
    fields = {
        name: signed_data[name]
        for name in (
            "version",
            "digest_algorithms",
            "encap_content_info",
            "crls",
            "signer_infos",
        )
        if signed_data[name].native is not None
    }
    fields["certificates"] = certificates
    rebuilt = cms.SignedData(fields)
    return cms.ContentInfo({"content_type": "signed_data", "content": rebuilt}).dump()


# -- signatures.xml ---------------------------------------------------------


def _single_signature(root: etree._Element) -> etree._Element:
    signatures = list(root.iter(f"{{{DS_NS}}}Signature"))
    if len(signatures) != 1:
        raise MalformedSignature(
            f"expected exactly one ds:Signature, found {len(signatures)}"
        )
    return signatures[0]


def signature_value(signature_xml: bytes) -> bytes:
    """Return the decoded ds:SignatureValue: what a single timestamp stamps."""
    signature = _single_signature(parse_xml(signature_xml))
    value = signature.find(f"{{{DS_NS}}}SignatureValue")
    if value is None or not (value.text or "").strip():
        raise MalformedSignature("signature has no ds:SignatureValue")
    try:
        return unb64(value.text or "")
    except XRoadError as exc:
        raise MalformedSignature("ds:SignatureValue is not base64") from exc


def embed_timestamp(signature_xml: bytes, token_der: bytes) -> bytes:
    """Insert a SignatureTimeStamp as first child of UnsignedSignatureProperties.

    The bytes around the insertion point are kept as they are, so the signed
    parts still verify; a document whose layout defeats that is re-serialised
    by lxml instead (same infoset, so the signature still holds).
    """
    root = parse_xml(signature_xml)
    signature = _single_signature(root)
    qualifying = signature.find(f"{{{DS_NS}}}Object/{{{XADES_NS}}}QualifyingProperties")
    if qualifying is None:
        raise MalformedSignature("signature has no xades:QualifyingProperties")
    unsigned = qualifying.find(
        f"{{{XADES_NS}}}UnsignedProperties/{{{XADES_NS}}}UnsignedSignatureProperties"
    )
    if (
        unsigned is not None
        and unsigned.find(f"{{{XADES_NS}}}SignatureTimeStamp") is not None
    ):
        raise TimestampError("signature already carries a SignatureTimeStamp")

    stamp_id = _free_id(root, "signature-timestamp")
    if unsigned is not None:
        spliced = _splice(signature_xml, unsigned, stamp_id, token_der)
        if spliced is not None:
            return spliced
    return _rebuild(root, qualifying, stamp_id, token_der)


def _free_id(root: etree._Element, base: str) -> str:
    taken = set(root.xpath("//@Id"))
    candidate, n = base, 0
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _stamp_markup(prefix: str | None, stamp_id: str, token_der: bytes) -> bytes:
    p = f"{prefix}:" if prefix else ""
    return (
        f'<{p}SignatureTimeStamp Id="{stamp_id}"><{p}EncapsulatedTimeStamp>'
        f"{b64(token_der)}</{p}EncapsulatedTimeStamp></{p}SignatureTimeStamp>"
    ).encode("ascii")


def _splice(
    document: bytes, unsigned: etree._Element, stamp_id: str, token_der: bytes
) -> bytes | None:
    """Insert the markup into the raw bytes; None if the tag cannot be found once."""
    prefix = unsigned.prefix
    qname = (f"{prefix}:" if prefix else "").encode(
        "ascii"
    ) + b"UnsignedSignatureProperties"
    pattern = re.compile(rb"<" + re.escape(qname) + rb"(\s[^<>]*?)?(/?)>")
    matches = list(pattern.finditer(document))
    if len(matches) != 1:
        return None
    match = matches[0]
    markup = _stamp_markup(prefix, stamp_id, token_der)
    if match.group(2):
        opening = b"<" + qname + (match.group(1) or b"") + b">"
        result = document[: match.start()] + opening + markup + b"</" + qname + b">"
        result += document[match.end() :]
    else:
        result = document[: match.end()] + markup + document[match.end() :]

    # Make sure the splice landed where we meant it to.
    try:
        check = parse_xml(result)
    except XRoadError:
        return None
    first = check.find(
        f".//{{{XADES_NS}}}UnsignedSignatureProperties/{{{XADES_NS}}}SignatureTimeStamp"
    )
    if (
        first is None
        or first.getparent().index(first) != 0
        or first.get("Id") != stamp_id
    ):
        return None
    return result


def _rebuild(
    root: etree._Element, qualifying: etree._Element, stamp_id: str, token_der: bytes
) -> bytes:
    unsigned_props = qualifying.find(f"{{{XADES_NS}}}UnsignedProperties")
    if unsigned_props is None:
        unsigned_props = etree.SubElement(
            qualifying, f"{{{XADES_NS}}}UnsignedProperties"
        )
    unsigned = unsigned_props.find(f"{{{XADES_NS}}}UnsignedSignatureProperties")
    if unsigned is None:
        unsigned = etree.Element(f"{{{XADES_NS}}}UnsignedSignatureProperties")
        unsigned_props.insert(0, unsigned)
    stamp = etree.Element(f"{{{XADES_NS}}}SignatureTimeStamp", Id=stamp_id)
    etree.SubElement(stamp, f"{{{XADES_NS}}}EncapsulatedTimeStamp").text = b64(
        token_der
    )
    unsigned.insert(0, stamp)
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


__all__ = [
    "IMPRINT_ALGORITHMS",
    "MalformedTimestamp",
    "TimeStampResp",
    "TimestampInfo",
    "TimestampSignerVerificationFailed",
    "TspCertificateNotFound",
    "add_tsa_cert",
    "build_timestamp_request",
    "build_timestamp_response",
    "embed_timestamp",
    "parse_timestamp_response",
    "signature_value",
    "verify_timestamp_signature",
    "verify_timestamp_token",
]
