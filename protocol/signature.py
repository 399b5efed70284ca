"""Core: XAdES message signatures, ``signatures.xml`` (transport.md §7.4).

Signing builds the exact document the reference emits; verification follows
XML-DSig rules and accepts the older forms found in archives (message-log.md
§3): a bare ``ds:Signature`` root, exclusive C14N, direct references to
attachments, SigningCertificateV2 and legacy bare SignatureTimeStamp text.

Canonicalisation always runs on elements *where they sit in the parsed
document*, so the namespace declarations inherited from the root are part of
the canonical form (LIBRARIES.md §1b). Trust (CA path, OCSP, signer identity)
is not checked here: callers do that with the returned certificate.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from lxml import etree

from .digests import DIGEST_URIS, SHA1_URI, SHA512_URI, b64, digest, unb64
from .errors import (
    ClientRequestError,
    HashChainError,
    InvalidSignatureValue,
    MalformedSignature,
)
from .hashchain import (
    MESSAGE,
    SIG_HASH_CHAIN,
    SIG_HASH_CHAIN_RESULT,
    Leaf,
    build_batch_chains,
    build_message_chain,
    verify_hash_chain,
)
from .xml import parse_xml

ASIC_NS = "http://uri.etsi.org/02918/v1.2.1#"
ASIC_NS_V111 = "http://uri.etsi.org/02918/v1.1.1#"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

C14N_URI = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
# Canonicalisation URI -> (exclusive, with_comments).
C14N_METHODS = {
    C14N_URI: (False, False),
    C14N_URI + "#WithComments": (False, True),
    "http://www.w3.org/2001/10/xml-exc-c14n#": (True, False),
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": (True, True),
}

RSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
RSA_PSS_SHA512_URI = "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1"
ECDSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
RSA_SHA1_URI = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
ECDSA_SHA1_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1"

# SignatureMethod URI -> (key kind, hash). SHA-1 entries are refused unless the
# caller opts in: SHA-1 collisions are practical, so accepting it lets a forger
# reuse a signature over different content.
SIGNATURE_METHODS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    RSA_SHA1_URI: ("rsa", hashes.SHA1),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384),
    RSA_SHA512_URI: ("rsa", hashes.SHA512),
    "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1": ("pss", hashes.SHA256),
    "http://www.w3.org/2007/05/xmldsig-more#sha384-rsa-MGF1": ("pss", hashes.SHA384),
    RSA_PSS_SHA512_URI: ("pss", hashes.SHA512),
    ECDSA_SHA1_URI: ("ec", hashes.SHA1),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384),
    ECDSA_SHA512_URI: ("ec", hashes.SHA512),
}
_SHA1_METHODS = {RSA_SHA1_URI, ECDSA_SHA1_URI, SHA1_URI}

SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
POLICY_ID = "urn:oid:1.3.6.1.4.1.3516.16.2"
POLICY_DESCRIPTION = "Profile for High Performance Digital Signatures (version 1.2)"
POLICY_HASH = (
    "BuO0EDNfkxSVlUbxCzmQPzX1AUF1/xx9ytWHk3/6SAOe"
    "PxQiniEfDYk+90QeYb3lWpV3Izhuz9fKaYyE+lTcXw=="
)
POLICY_SPURI = "https://repo.cyber.ee/dsig-profile-1.2.pdf"

MIME_TYPES = {
    MESSAGE: "text/xml",
    SIG_HASH_CHAIN_RESULT: "application/hash-chain-result",
}

_DS = "{" + DS_NS + "}"
_XADES = "{" + XADES_NS + "}"
_NSMAP = {"asic": ASIC_NS, "ds": DS_NS, "xades": XADES_NS, "xsi": XSI_NS}
_ROOT_TAGS = {"{" + ns + "}XAdESSignatures" for ns in (ASIC_NS, ASIC_NS_V111)}
_XML_DECL = b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>'


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A signature document plus the hash-chain parts it needs, if any."""

    signature: bytes
    hash_chain_result: bytes | None
    hash_chain: bytes | None


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """What a cryptographically valid signature says; trust is still unchecked."""

    signing_cert: x509.Certificate
    ocsp_responses: list[bytes]
    extra_certs: list[x509.Certificate]
    signing_time: datetime | None
    signature_value: bytes
    data_reference: str
    timestamp_token: bytes | None


SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# -- signing ------------------------------------------------------------------


def sign_parts(
    part_digests: list[tuple[str, bytes]],
    *,
    key: SigningKey,
    cert: x509.Certificate,
    ocsp_responses: list[bytes],
    signing_time: datetime,
    extra_certs: Sequence[x509.Certificate] = (),
) -> SignedMessage:
    """Sign a message's parts (transport.md §7.2).

    A lone ``/message.xml`` is signed directly; otherwise a one-step hash chain
    over all parts is built and ``/sig-hashchainresult.xml`` is signed.

    :param part_digests: ``(name, SHA-512 digest)`` pairs, ``/message.xml`` first.
    """
    if not part_digests or part_digests[0][0] != MESSAGE:
        raise MalformedSignature("the first signed part must be /message.xml")

    common = {
        "key": key,
        "cert": cert,
        "ocsp_responses": ocsp_responses,
        "extra_certs": extra_certs,
        "signing_time": signing_time,
    }
    if len(part_digests) == 1:
        signature = build_signature(
            reference_uri=MESSAGE,
            reference_digest=part_digests[0][1],
            mime_type=MIME_TYPES[MESSAGE],
            **common,  # type: ignore[arg-type]
        )
        return SignedMessage(signature, None, None)

    files = build_message_chain(part_digests)
    signature = build_signature(
        reference_uri=SIG_HASH_CHAIN_RESULT,
        reference_digest=digest(files.result, SHA512_URI),
        mime_type=MIME_TYPES[SIG_HASH_CHAIN_RESULT],
        **common,  # type: ignore[arg-type]
    )
    return SignedMessage(signature, files.result, files.chain)


def sign_batch(
    messages: Sequence[list[tuple[str, bytes]]],
    *,
    key: SigningKey,
    cert: x509.Certificate,
    ocsp_responses: list[bytes],
    signing_time: datetime,
    extra_certs: Sequence[x509.Certificate] = (),
) -> list[SignedMessage]:
    """Sign several messages with one signature (transport.md §7.2, §7.3).

    The messages become the leaves of a Merkle tree (message-log.md §4): a
    lone ``/message.xml`` is the leaf H(message), a message with attachments
    the multi-part leaf H(DL(parts)). One signature covers the shared
    ``/sig-hashchainresult.xml``; each message gets its own chain. A batch of
    one is signed exactly as :func:`sign_parts` signs it.

    :param messages: per message, ``(name, SHA-512 digest)`` pairs as for
        :func:`sign_parts`.
    :returns: one :class:`SignedMessage` per message, in the given order.
    """
    if not messages:
        raise MalformedSignature("a signature batch needs at least one message")
    common = {
        "key": key,
        "cert": cert,
        "ocsp_responses": ocsp_responses,
        "extra_certs": extra_certs,
        "signing_time": signing_time,
    }
    if len(messages) == 1:
        return [sign_parts(messages[0], **common)]  # type: ignore[arg-type]
    if any(not parts or parts[0][0] != MESSAGE for parts in messages):
        raise MalformedSignature("the first signed part must be /message.xml")

    leaves: list[Leaf] = [
        parts[0][1] if len(parts) == 1 else list(parts) for parts in messages
    ]
    chains = build_batch_chains(leaves, MESSAGE, SIG_HASH_CHAIN + "#STEP0")
    signature = build_signature(
        reference_uri=SIG_HASH_CHAIN_RESULT,
        reference_digest=digest(chains.result, SHA512_URI),
        mime_type=MIME_TYPES[SIG_HASH_CHAIN_RESULT],
        **common,  # type: ignore[arg-type]
    )
    return [SignedMessage(signature, chains.result, chain) for chain in chains.chains]


def build_signature(
    *,
    reference_uri: str,
    reference_digest: bytes,
    mime_type: str,
    key: SigningKey,
    cert: x509.Certificate,
    ocsp_responses: list[bytes],
    extra_certs: Sequence[x509.Certificate] = (),
    signing_time: datetime,
) -> bytes:
    """Build a complete ``signatures.xml`` with one ``ds:Signature``.

    :param reference_digest: SHA-512 of the raw bytes of ``reference_uri``.
    :param signing_time: written as UTC; a naive value is taken to be UTC.
    """
    method = _signature_method_for(key)
    root = etree.Element("{" + ASIC_NS + "}XAdESSignatures", nsmap=_NSMAP)
    signature = _sub(root, _DS + "Signature", Id="signature")

    signed_info = _sub(signature, _DS + "SignedInfo")
    _sub(signed_info, _DS + "CanonicalizationMethod", Algorithm=C14N_URI)
    _sub(signed_info, _DS + "SignatureMethod", Algorithm=method)
    _reference(
        signed_info, reference_digest, Id="signature-reference-0", URI=reference_uri
    )
    props_digest = _reference(
        signed_info,
        b"",
        Id="signature-reference-1",
        Type=SIGNED_PROPERTIES_TYPE,
        URI="#signed-properties",
    )
    signature_value = _sub(signature, _DS + "SignatureValue", Id="signature-value")
    key_info = _sub(signature, _DS + "KeyInfo")
    x509_data = _sub(key_info, _DS + "X509Data")
    _sub(x509_data, _DS + "X509Certificate").text = b64(_der(cert))

    obj = _sub(signature, _DS + "Object")
    qualifying = _sub(obj, _XADES + "QualifyingProperties", Target="#signature")
    signed_props = _signed_properties(qualifying, cert, signing_time, mime_type)
    _unsigned_properties(qualifying, ocsp_responses, extra_certs)

    # Both digests are taken in document context (transport.md §7.4).
    props_digest.text = b64(digest(_c14n(signed_props, C14N_URI), SHA512_URI))
    signature_value.text = b64(_sign(key, method, _c14n(signed_info, C14N_URI)))
    return _XML_DECL + bytes(etree.tostring(root, encoding="UTF-8"))


def _signature_method_for(key: SigningKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSA_SHA512_URI
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECDSA_SHA512_URI
    raise MalformedSignature(
        f"signing key type {type(key).__name__!r} is not supported"
    )


def _sign(key: SigningKey, method: str, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA512())
    der = key.sign(data, ec.ECDSA(hashes.SHA512()))
    r, s = decode_dss_signature(der)
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _sub(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, tag, attrs)


def _reference(parent: etree._Element, value: bytes, **attrs: str) -> etree._Element:
    reference = _sub(parent, _DS + "Reference", **attrs)
    _sub(reference, _DS + "DigestMethod", Algorithm=SHA512_URI)
    digest_value = _sub(reference, _DS + "DigestValue")
    digest_value.text = b64(value)
    return digest_value


def _cert_digest(parent: etree._Element, cert: x509.Certificate) -> None:
    cert_digest = _sub(parent, _XADES + "CertDigest")
    _sub(cert_digest, _DS + "DigestMethod", Algorithm=SHA512_URI)
    _sub(cert_digest, _DS + "DigestValue").text = b64(digest(_der(cert), SHA512_URI))
    issuer_serial = _sub(parent, _XADES + "IssuerSerial")
    _sub(issuer_serial, _DS + "X509IssuerName").text = cert.issuer.rfc4514_string()
    _sub(issuer_serial, _DS + "X509SerialNumber").text = str(cert.serial_number)


def _signed_properties(
    qualifying: etree._Element,
    cert: x509.Certificate,
    signing_time: datetime,
    mime_type: str,
) -> etree._Element:
    signed = _sub(qualifying, _XADES + "SignedProperties", Id="signed-properties")
    sig_props = _sub(signed, _XADES + "SignedSignatureProperties")
    _sub(sig_props, _XADES + "SigningTime").text = _format_time(signing_time)
    signing_cert = _sub(sig_props, _XADES + "SigningCertificate")
    _cert_digest(_sub(signing_cert, _XADES + "Cert"), cert)

    policy = _sub(
        _sub(sig_props, _XADES + "SignaturePolicyIdentifier"),
        _XADES + "SignaturePolicyId",
    )
    policy_id = _sub(policy, _XADES + "SigPolicyId")
    _sub(policy_id, _XADES + "Identifier", Qualifier="OIDAsURN").text = POLICY_ID
    _sub(policy_id, _XADES + "Description").text = POLICY_DESCRIPTION
    policy_hash = _sub(policy, _XADES + "SigPolicyHash")
    _sub(policy_hash, _DS + "DigestMethod", Algorithm=SHA512_URI)
    _sub(policy_hash, _DS + "DigestValue").text = POLICY_HASH
    qualifiers = _sub(policy, _XADES + "SigPolicyQualifiers")
    _sub(
        _sub(qualifiers, _XADES + "SigPolicyQualifier"), _XADES + "SPURI"
    ).text = POLICY_SPURI

    data_props = _sub(signed, _XADES + "SignedDataObjectProperties")
    data_format = _sub(
        data_props,
        _XADES + "DataObjectFormat",
        ObjectReference="#signature-reference-0",
    )
    _sub(data_format, _XADES + "MimeType").text = mime_type
    return signed


def _unsigned_properties(
    qualifying: etree._Element,
    ocsp_responses: Sequence[bytes],
    extra_certs: Sequence[x509.Certificate],
) -> None:
    unsigned = _sub(qualifying, _XADES + "UnsignedProperties")
    props = _sub(unsigned, _XADES + "UnsignedSignatureProperties")
    if extra_certs:
        refs = _sub(
            _sub(
                props,
                _XADES + "CompleteCertificateRefs",
                Id="complete-certificate-refs",
            ),
            _XADES + "CertRefs",
        )
        for number, extra in enumerate(extra_certs, start=1):
            _cert_digest(
                _sub(refs, _XADES + "Cert", URI=f"#encapsulated-cert-{number}"), extra
            )
        values = _sub(props, _XADES + "CertificateValues")
        for number, extra in enumerate(extra_certs, start=1):
            _sub(
                values,
                _XADES + "EncapsulatedX509Certificate",
                Id=f"encapsulated-cert-{number}",
            ).text = b64(_der(extra))
    ocsp_values = _sub(_sub(props, _XADES + "RevocationValues"), _XADES + "OCSPValues")
    for number, response in enumerate(ocsp_responses, start=1):
        _sub(
            ocsp_values, _XADES + "EncapsulatedOCSPValue", Id=f"ocsp-response-{number}"
        ).text = b64(response)


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    millis = moment.microsecond // 1000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# -- verifying ------------------------------------------------------------------


def verify_signature(
    signature_xml: bytes,
    part_digests: Mapping[str, bytes],
    *,
    hash_chain_result: bytes | None = None,
    hash_chain: bytes | None = None,
    allow_sha1: bool = False,
) -> VerifiedSignature:
    """Verify the cryptography of a ``signatures.xml`` document.

    :param part_digests: part name (``/message.xml``, ``/attachment1`` ...) ->
        SHA-512 of its raw bytes. Every part must be covered by the signature,
        directly or through the hash chain.
    :param allow_sha1: accept SHA-1 signature and digest methods. Unsafe: only
        for reading old archives.
    :raises InvalidXml: the document is not acceptable XML.
    :raises MalformedSignature: the structure is wrong or unsupported; hash
        chain failures carry the chain's code as ``detail``.
    :raises InvalidSignatureValue: a digest or the signature value is wrong.
    """
    root = parse_xml(signature_xml)
    signature = _find_signature(root)
    signed_info, signature_value_el = _check_shape(signature)
    cert = _signing_certificate(signature)
    qualifying = _single(
        signature,
        f"{_DS}Object/{_XADES}QualifyingProperties",
        "xades:QualifyingProperties",
    )
    signed_props = _single(
        qualifying, _XADES + "SignedProperties", "xades:SignedProperties"
    )
    extra_certs = _extra_certificates(qualifying)
    _check_cert_digest(signed_props, cert)

    references = [
        _parse_reference(el, root, allow_sha1) for el in _references(signed_info)
    ]
    data_uri = _check_references(
        references, signed_props, part_digests, hash_chain_result
    )
    _verify_signature_value(signed_info, signature_value_el, cert, allow_sha1)
    for reference in references:
        _check_digest(reference, part_digests, hash_chain_result)
    if data_uri == SIG_HASH_CHAIN_RESULT:
        _check_hash_chain(references, part_digests, hash_chain_result, hash_chain)

    return VerifiedSignature(
        signing_cert=cert,
        ocsp_responses=_ocsp_responses(qualifying),
        extra_certs=extra_certs,
        signing_time=_signing_time(signed_props),
        signature_value=_decode(signature_value_el.text, "SignatureValue"),
        data_reference=data_uri,
        timestamp_token=_timestamp_token(qualifying),
    )


@dataclass(frozen=True, slots=True)
class _Reference:
    uri: str
    type: str | None
    method: str
    expected: bytes
    target: etree._Element | None  # same-document references only
    c14n: str  # for same-document references


def _find_signature(root: etree._Element) -> etree._Element:
    if root.tag == _DS + "Signature":
        return root
    if root.tag not in _ROOT_TAGS:
        raise MalformedSignature(f"unexpected signature root element {root.tag!r}")
    found = root.findall(_DS + "Signature")
    if len(found) != 1:
        raise MalformedSignature(f"expected one ds:Signature, found {len(found)}")
    return found[0]


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _check_shape(signature: etree._Element) -> tuple[etree._Element, etree._Element]:
    """Check the XML-DSig element order the schema demands (xmldsig-core §4)."""
    tags = [child.tag for child in _children(signature)]
    expected = [_DS + "SignedInfo", _DS + "SignatureValue"]
    rest = tags[2:]
    if rest and rest[0] == _DS + "KeyInfo":
        rest = rest[1:]
    if tags[:2] != expected or any(tag != _DS + "Object" for tag in rest):
        raise MalformedSignature("ds:Signature children are not in XML-DSig order")

    signed_info = _children(signature)[0]
    info_tags = [child.tag for child in _children(signed_info)]
    head = [_DS + "CanonicalizationMethod", _DS + "SignatureMethod"]
    if (
        info_tags[:2] != head
        or len(info_tags) < 3
        or any(tag != _DS + "Reference" for tag in info_tags[2:])
    ):
        raise MalformedSignature("ds:SignedInfo does not match the XML-DSig schema")
    return signed_info, _children(signature)[1]


def _single(parent: etree._Element, path: str, name: str) -> etree._Element:
    found = parent.findall(path)
    if len(found) != 1:
        raise MalformedSignature(f"expected one {name}, found {len(found)}")
    return found[0]


def _signing_certificate(signature: etree._Element) -> x509.Certificate:
    found = signature.findall(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate")
    if len(found) != 1:
        raise MalformedSignature(
            f"expected one signing certificate, found {len(found)}"
        )
    return _load_cert(found[0].text, "X509Certificate")


def _load_cert(text: str | None, name: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(_decode(text, name))
    except ValueError as exc:
        raise MalformedSignature(f"{name} is not a DER certificate") from exc


def _decode(text: str | None, name: str) -> bytes:
    try:
        return unb64(text or "")
    except (ClientRequestError, binascii.Error) as exc:
        raise MalformedSignature(f"{name} is not valid base64") from exc


def _extra_certificates(qualifying: etree._Element) -> list[x509.Certificate]:
    """Return the CertificateValues, checking CompleteCertificateRefs point at them."""
    unsigned = f"{_XADES}UnsignedProperties/{_XADES}UnsignedSignatureProperties/"
    by_id: dict[str, x509.Certificate] = {}
    certs: list[x509.Certificate] = []
    for element in qualifying.iterfind(
        f"{unsigned}{_XADES}CertificateValues/{_XADES}EncapsulatedX509Certificate"
    ):
        cert = _load_cert(element.text, "EncapsulatedX509Certificate")
        certs.append(cert)
        cert_id = element.get("Id")
        if cert_id:
            by_id[cert_id] = cert

    for ref in qualifying.iterfind(
        f"{unsigned}{_XADES}CompleteCertificateRefs/{_XADES}CertRefs/{_XADES}Cert"
    ):
        uri = ref.get("URI")
        if not uri or not uri.startswith("#"):
            raise MalformedSignature(
                "certificate reference without a same-document URI"
            )
        if uri[1:] not in by_id:
            raise MalformedSignature(f"referenced extra certificate {uri!r} is missing")
    return certs


def _check_cert_digest(signed_props: etree._Element, cert: x509.Certificate) -> None:
    """The signed SigningCertificate(V2) must name the KeyInfo certificate."""
    props = f"{_XADES}SignedSignatureProperties/"
    digests = signed_props.findall(
        f"{props}{_XADES}SigningCertificate/{_XADES}Cert/{_XADES}CertDigest"
    ) + signed_props.findall(
        f"{props}{_XADES}SigningCertificateV2/{_XADES}Cert/{_XADES}CertDigest"
    )
    if not digests:
        raise MalformedSignature("SignedProperties carry no SigningCertificate")

    der = _der(cert)
    for cert_digest in digests:
        method_el = cert_digest.find(_DS + "DigestMethod")
        method = method_el.get("Algorithm", "") if method_el is not None else ""
        if method not in DIGEST_URIS:
            raise MalformedSignature(f"CertDigest method {method!r} is not supported")
        value = _decode(cert_digest.findtext(_DS + "DigestValue"), "CertDigest")
        if digest(der, method) == value:
            return
    raise InvalidSignatureValue("SigningCertificate digest does not match KeyInfo")


def _references(signed_info: etree._Element) -> list[etree._Element]:
    return list(signed_info.findall(_DS + "Reference"))


def _parse_reference(
    element: etree._Element, root: etree._Element, allow_sha1: bool
) -> _Reference:
    uri = element.get("URI")
    if uri is None or uri == "":
        raise MalformedSignature("ds:Reference without URI is not supported")
    method_el = element.find(_DS + "DigestMethod")
    method = method_el.get("Algorithm", "") if method_el is not None else ""
    if method not in DIGEST_URIS or (method in _SHA1_METHODS and not allow_sha1):
        raise MalformedSignature(f"reference digest method {method!r} is not supported")
    expected = _decode(element.findtext(_DS + "DigestValue"), "DigestValue")
    transforms = [
        t.get("Algorithm", "")
        for t in element.iterfind(f"{_DS}Transforms/{_DS}Transform")
    ]

    if not uri.startswith("#"):
        if transforms:
            raise MalformedSignature(
                f"transforms on external reference {uri!r} are not supported"
            )
        return _Reference(uri, element.get("Type"), method, expected, None, "")
    if len(transforms) > 1 or any(t not in C14N_METHODS for t in transforms):
        raise MalformedSignature(f"transforms {transforms!r} are not supported")
    target = _by_id(root, uri[1:])
    c14n = transforms[0] if transforms else C14N_URI
    return _Reference(uri, element.get("Type"), method, expected, target, c14n)


def _by_id(root: etree._Element, element_id: str) -> etree._Element:
    found = root.xpath("//*[@Id=$value]", value=element_id)
    if len(found) != 1:  # duplicate Ids open the door to wrapping attacks
        raise MalformedSignature(f"Id {element_id!r} matches {len(found)} elements")
    return found[0]


def _check_references(
    references: list[_Reference],
    signed_props: etree._Element,
    part_digests: Mapping[str, bytes],
    hash_chain_result: bytes | None,
) -> str:
    """Check that the references cover what they must; return the data reference."""
    props_refs = [r for r in references if r.type == SIGNED_PROPERTIES_TYPE]
    if len(props_refs) != 1 or props_refs[0].target is not signed_props:
        raise MalformedSignature("SignedProperties must be referenced exactly once")

    external = [r.uri for r in references if r.target is None]
    data_uris = [uri for uri in external if uri in (MESSAGE, SIG_HASH_CHAIN_RESULT)]
    if len(data_uris) != 1:
        raise MalformedSignature(
            f"expected one reference to {MESSAGE} or {SIG_HASH_CHAIN_RESULT}, "
            f"found {external!r}"
        )
    if len(set(external)) != len(external):
        raise MalformedSignature(f"a part is referenced twice: {external!r}")

    for reference in references:
        if reference.target is not None and reference.type not in (
            None,
            SIGNED_PROPERTIES_TYPE,
        ):
            raise MalformedSignature(
                f"reference type {reference.type!r} is not supported"
            )
    for uri in external:
        if uri == SIG_HASH_CHAIN_RESULT:
            if hash_chain_result is None:
                raise MalformedSignature("the hash chain result is missing")
        elif uri not in part_digests:
            raise MalformedSignature(f"signature references unknown part {uri!r}")

    if data_uris[0] != SIG_HASH_CHAIN_RESULT:
        uncovered = sorted(set(part_digests) - set(external))
        if uncovered:
            raise MalformedSignature(
                f"parts not covered by the signature: {uncovered!r}"
            )
    return data_uris[0]


def _check_digest(
    reference: _Reference,
    part_digests: Mapping[str, bytes],
    hash_chain_result: bytes | None,
) -> None:
    if reference.target is not None:
        actual = digest(_c14n(reference.target, reference.c14n), reference.method)
    elif reference.uri == SIG_HASH_CHAIN_RESULT:
        actual = digest(hash_chain_result or b"", reference.method)
    else:
        if reference.method != SHA512_URI:
            raise MalformedSignature(
                f"digest method {reference.method!r} for part {reference.uri!r} "
                "is not supported: part digests are SHA-512"
            )
        actual = part_digests[reference.uri]
    if actual != reference.expected:
        raise InvalidSignatureValue(
            f"digest of reference {reference.uri!r} does not match"
        )


def _check_hash_chain(
    references: list[_Reference],
    part_digests: Mapping[str, bytes],
    hash_chain_result: bytes | None,
    hash_chain: bytes | None,
) -> None:
    if hash_chain is None or hash_chain_result is None:
        raise MalformedSignature("the hash chain is missing")
    direct = {r.uri for r in references if r.target is None}
    inputs = {uri: value for uri, value in part_digests.items() if uri not in direct}
    bound: list[str] = []

    def resolve(uri: str) -> bytes:
        # Only one chain file travels with a message: the one the result names.
        if not bound:
            bound.append(uri)
        if uri != bound[0]:
            raise KeyError(uri)
        return hash_chain

    try:
        verify_hash_chain(hash_chain_result, resolve, inputs)
    except HashChainError as exc:
        raise MalformedSignature(f"hash chain: {exc}", detail=exc.code) from exc


def _c14n(element: etree._Element, method: str) -> bytes:
    try:
        exclusive, comments = C14N_METHODS[method]
    except KeyError:
        raise MalformedSignature(
            f"canonicalization {method!r} is not supported"
        ) from None
    return bytes(
        etree.tostring(
            element, method="c14n", exclusive=exclusive, with_comments=comments
        )
    )


def _verify_signature_value(
    signed_info: etree._Element,
    value_el: etree._Element,
    cert: x509.Certificate,
    allow_sha1: bool,
) -> None:
    c14n_method = signed_info.find(_DS + "CanonicalizationMethod").get("Algorithm", "")
    method = signed_info.find(_DS + "SignatureMethod").get("Algorithm", "")
    if method not in SIGNATURE_METHODS or (method in _SHA1_METHODS and not allow_sha1):
        raise MalformedSignature(f"signature method {method!r} is not supported")
    kind, hash_type = SIGNATURE_METHODS[method]
    data = _c14n(signed_info, c14n_method)
    value = _decode(value_el.text, "SignatureValue")

    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedSignature("signing certificate key cannot be loaded") from exc
    try:
        if kind in ("rsa", "pss") and isinstance(public_key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if kind == "pss":
                pad = padding.PSS(padding.MGF1(hash_type()), padding.PSS.AUTO)
            public_key.verify(value, data, pad, hash_type())
        elif kind == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(_ecdsa_der(value), data, ec.ECDSA(hash_type()))
        else:
            raise MalformedSignature(
                f"signature method {method!r} does not fit the key"
            )
    except InvalidSignature as exc:
        raise InvalidSignatureValue("signature value does not verify") from exc


def _ecdsa_der(value: bytes) -> bytes:
    """XML-DSig writes ECDSA as r||s; cryptography wants DER."""
    if not value or len(value) % 2:
        raise InvalidSignatureValue("ECDSA signature value has an odd length")
    half = len(value) // 2
    r = int.from_bytes(value[:half], "big")
    s = int.from_bytes(value[half:], "big")
    return encode_dss_signature(r, s)


def _unsigned_path(*tail: str) -> str:
    return "/".join(
        [_XADES + "UnsignedProperties", _XADES + "UnsignedSignatureProperties", *tail]
    )


def _ocsp_responses(qualifying: etree._Element) -> list[bytes]:
    path = _unsigned_path(
        _XADES + "RevocationValues",
        _XADES + "OCSPValues",
        _XADES + "EncapsulatedOCSPValue",
    )
    return [
        _decode(el.text, "EncapsulatedOCSPValue") for el in qualifying.iterfind(path)
    ]


def _timestamp_token(qualifying: etree._Element) -> bytes | None:
    stamp = qualifying.find(_unsigned_path(_XADES + "SignatureTimeStamp"))
    if stamp is None:
        return None
    encapsulated = stamp.find(_XADES + "EncapsulatedTimeStamp")
    if encapsulated is not None:
        return _decode(encapsulated.text, "EncapsulatedTimeStamp")
    return _decode(stamp.text, "SignatureTimeStamp")  # legacy: bare base64 text


def _signing_time(signed_props: etree._Element) -> datetime | None:
    text = signed_props.findtext(
        f"{_XADES}SignedSignatureProperties/{_XADES}SigningTime"
    )
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise MalformedSignature(
            f"SigningTime {text!r} is not an xsd:dateTime"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
