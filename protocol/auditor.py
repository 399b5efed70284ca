"""Core: the auditor's verification of one ASiC-E container (message-log.md §8).

``verify_container`` runs §8 steps 1-9 in the reference's order and stops
at the first failure. All trust comes from the given configuration, and the
judgement is made at the container's own timestamp time, so an old
container verifies long after its certificates expired. The errors carry the
reference codes in the classic spelling (``codes_equal`` folds them to the
snake case of X-Road 7.8+); an error's ``code`` is its complete code.
"""

from __future__ import annotations

import binascii
import io
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar

from cryptography import x509
from lxml import etree

from . import pki
from .asic import (
    ENTRY_SIG_HASH_CHAIN,
    ENTRY_SIGNATURE,
    ENTRY_TS_HASH_CHAIN,
    ASiCContainer,
    parse_asic,
)
from .digests import SHA512_URI, digest, unb64
from .errors import (
    CertificateError,
    CertNotApproved,
    ClientRequestError,
    HashChainError,
    HashChainUnusedInputs,
    IncorrectCertificate,
    IncorrectValidationInfo,
    InvalidHashChainRef,
    InvalidSignatureValue,
    MalformedSignature,
    XRoadError,
)
from .globalconf import GlobalConf
from .hashchain import MESSAGE, SIG_HASH_CHAIN_RESULT, verify_hash_chain
from .identifiers import (
    XROAD_NS,
    ClientId,
    ServiceId,
    client_from_xml,
    service_from_xml,
)
from .rest import is_response_part, parse_request_part, parse_response_part
from .signature import DS_NS, XADES_NS, VerifiedSignature, verify_signature
from .soap import SOAP_ENV_NS
from .timestamp import (
    TimestampInfo,
    TimestampSignerVerificationFailed,
    TspCertificateNotFound,
    signature_value,
    verify_timestamp_token,
)
from .xml import parse_xml

_DS = "{" + DS_NS + "}"
_XADES = "{" + XADES_NS + "}"
_SOAP_ENVELOPE = f"{{{SOAP_ENV_NS}}}Envelope"
_SOAP_HEADER = f"{{{SOAP_ENV_NS}}}Header"
_SOAP_BODY = f"{{{SOAP_ENV_NS}}}Body"
_XROAD_CLIENT = f"{{{XROAD_NS}}}client"
_XROAD_SERVICE = f"{{{XROAD_NS}}}service"
TS_DATA_REF = "/" + ENTRY_SIGNATURE
LEGACY_TS_MANIFEST_ID = "ts-root-manifest"
# Our marker entry in containers of records logged without their body
# (message-log.md §1); its text is for a human who unpacks the container.
BODY_NOT_LOGGED_ENTRY = "META-INF/xgate-body-not-logged.txt"
BODY_NOT_LOGGED_NOTE = (
    b"Body logging was off for this message: message.xml lacks its body (SOAP)"
    b" or its path, query and body (REST), so the signature cannot verify.\n"
)
BODY_NOT_LOGGED_REPORT = "The message body was not logged (body logging was off)."


# -- errors whose code is the reference's full code ---------------------------


class MlogTspCertificateNotFound(TspCertificateNotFound):
    code = "Mlog.TspCertificateNotFound"


class MlogTimestampSignerVerificationFailed(TimestampSignerVerificationFailed):
    code = "Mlog.TimestampSignerVerificationFailed"


class SignatureHashChainInvalid(MalformedSignature):
    code = "MalformedSignature.InvalidHashChain"


class SignatureHashChainRefInvalid(MalformedSignature):
    code = "MalformedSignature.InvalidHashChainRef"


class SignatureHashChainUnusedInputs(MalformedSignature):
    code = "MalformedSignature.HashChainUnusedInputs"


class InvalidCertPathValidation(pki.InvalidCertPath):
    code = "InvalidCertPath.CertValidation"


class InvalidCertPathValidationInfo(pki.InvalidCertPath):
    code = "InvalidCertPath.IncorrectValidationInfo"


class MessageBodyNotLogged(InvalidSignatureValue):
    """The container says its body was not logged, and its signature fails."""

    code = "MessageBodyNotLogged"


class InvalidReference(MalformedSignature):
    code: ClassVar[str] = "InvalidReference"


# -- the verdict ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachmentDigest:
    """A ``/attachmentN`` digest the signature covers, and whether it was checked.

    ``verified`` is True only when the attachment is in the container and its
    SHA-512 equals the signed digest (§8 step 5).
    """

    uri: str
    digest: bytes
    verified: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a successfully verified container proves."""

    signer: ClientId
    signing_cert: x509.Certificate
    ocsp_responder_cert: x509.Certificate
    ocsp_produced_at: datetime
    timestamp_time: datetime
    tsa_cert: x509.Certificate
    attachments: tuple[AttachmentDigest, ...]
    batch_signature: bool
    batch_timestamp: bool
    # False: the container carries the body-not-logged marker and still
    # verified, e.g. a REST response whose body is only referenced through
    # the signature hash chain (§8 step 5): the body digest stays unverified.
    body_logged: bool = True

    def report(self) -> str:
        """The text the reference verifier prints on success (§8 output)."""
        lines = ["Verification successful.", "Signer", "    Certificate:"]
        lines += _cert_lines(self.signing_cert, "        ")
        lines.append(f"    ID: {self.signer}")
        lines += ["OCSP response", "    Signed by:"]
        lines += _cert_lines(self.ocsp_responder_cert, "        ")
        lines.append(f"    Produced at: {java_date(self.ocsp_produced_at)}")
        lines += ["Timestamp", "    Signed by:"]
        lines += _cert_lines(self.tsa_cert, "        ")
        lines.append(f"    Date: {java_date(self.timestamp_time)}")
        for item in self.attachments:
            state = "verified" if item.verified else "unverified"
            lines.append(
                f'The digest for "{item.uri}" is: {item.digest.hex()} ({state})'
            )
        if not self.body_logged:
            lines.append(BODY_NOT_LOGGED_REPORT)
        return "\n".join(lines)


def failure_report(err: XRoadError) -> str:
    """The text printed for a container that does not verify."""
    return f"Verification failed: {err.message} [{err.full_code}]"


def java_date(moment: datetime) -> str:
    """Java's ``Date.toString()`` form, in UTC: ``Thu Dec 05 13:16:35 UTC 2024``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


def _cert_lines(cert: x509.Certificate, indent: str) -> list[str]:
    return [
        f"{indent}Subject: {_dn(cert.subject)}",
        f"{indent}Issuer: {_dn(cert.issuer)}",
        f"{indent}Serial number: {cert.serial_number}",
        f"{indent}Valid from: {java_date(cert.not_valid_before_utc)}",
        f"{indent}Valid until: {java_date(cert.not_valid_after_utc)}",
    ]


def _dn(name: x509.Name) -> str:
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


# -- verification ---------------------------------------------------------------


def verify_container(data: bytes, conf: GlobalConf) -> Verdict:
    """Verify one ``.asice`` container at its own timestamp time (§8 steps 1-9).

    A container carrying the :data:`BODY_NOT_LOGGED_ENTRY` marker holds a
    message logged without its body (message-log.md §1). Its timestamp is
    checked as usual (steps 3-4, before step 2), but a failure of the
    remaining steps is reported as :class:`MessageBodyNotLogged`: the
    signature covers bytes that were never logged. Such a container can
    still verify when only a hash-chained body is missing (a REST response,
    §8 step 5); its verdict then has ``body_logged=False``.

    :param conf: the trust configuration (a verification configuration or a
        security server's ``globalconf/``); its expiry is not checked.
    :raises XRoadError: the first failed check; ``code`` is the full code.
    """
    container = parse_asic(data)
    if has_body_not_logged_marker(data):
        return _verify_stripped(container, conf)

    signer = signer_of(container.message)
    signature = _find_signature(container.signature)
    data_uri = _check_data_reference(signature)
    stamp = _verify_timestamp(container, signature, conf)
    return _verify_signed(container, signature, data_uri, stamp, signer, conf)


def _verify_stripped(container: ASiCContainer, conf: GlobalConf) -> Verdict:
    signature = _find_signature(container.signature)
    data_uri = _check_data_reference(signature)
    stamp = _verify_timestamp(container, signature, conf)
    try:
        signer = signer_of(container.message)
        verdict = _verify_signed(container, signature, data_uri, stamp, signer, conf)
    except XRoadError as exc:
        raise MessageBodyNotLogged(
            "the message was logged without its body (message-log.md §1), so its"
            f" signature cannot verify; first failed check: {exc.full_code}"
        ) from exc
    return replace(verdict, body_logged=False)


def _verify_signed(
    container: ASiCContainer,
    signature: etree._Element,
    data_uri: str,
    stamp: TimestampInfo,
    signer: ClientId,
    conf: GlobalConf,
) -> Verdict:
    """Steps 5-9, once the timestamp has given the time *T*."""
    at = stamp.gen_time
    attachments: tuple[AttachmentDigest, ...] = ()
    if data_uri == SIG_HASH_CHAIN_RESULT:
        attachments = _verify_signature_chain(container)

    cert = _signing_cert(signature)
    _check_signer(cert, signer, conf)
    verified = _verify_signature_value(container, signature)
    if not attachments:
        attachments = _direct_attachments(container, signature)
    if signature.getroottree().xpath("//*[@Id=$value]", value=LEGACY_TS_MANIFEST_ID):
        raise InvalidReference("legacy ts-root-manifest timestamps are not supported")

    path = _verify_certificate(cert, verified, signer, conf, at)
    return Verdict(
        signer=signer,
        signing_cert=cert,
        ocsp_responder_cert=path.ocsp.responder_cert,
        ocsp_produced_at=path.ocsp.produced_at,
        timestamp_time=at,
        tsa_cert=stamp.tsa_cert,
        attachments=attachments,
        batch_signature=data_uri == SIG_HASH_CHAIN_RESULT,
        batch_timestamp=container.timestamp is not None,
    )


# -- the body-not-logged marker (message-log.md §1) -------------------------------


def add_body_not_logged_marker(data: bytes, *, time: datetime) -> bytes:
    """``data`` (an ``.asice``) with the :data:`BODY_NOT_LOGGED_ENTRY` added.

    The entry is ours, not X-Road's: other readers ignore it (§6), and it is
    not signed, so it can only make a container fail, never pass.
    """
    moment = time.astimezone(UTC) if time.tzinfo else time
    stamp = max(moment.timetuple()[:6], (1980, 1, 1, 0, 0, 0))
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(BODY_NOT_LOGGED_ENTRY, date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, BODY_NOT_LOGGED_NOTE)
    return buffer.getvalue()


def has_body_not_logged_marker(data: bytes) -> bool:
    """True when the container says its message was logged without the body."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return BODY_NOT_LOGGED_ENTRY in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def signer_of(message: bytes) -> ClientId:
    """Who signed a logged message (§8 step 2).

    SOAP: the client of a request, the service provider of a response (its
    body element is the service code plus ``Response``). Not SOAP: a REST
    header part, whose first line says request or response. Only the header
    identifiers are read: an archived message need not pass today's checks.
    """
    try:
        root = parse_xml(message)
    except ClientRequestError:
        return _rest_signer(message)
    if root.tag != _SOAP_ENVELOPE:
        raise MalformedSignature(f"message.xml root is {root.tag!r}, not SOAP")
    try:
        client = client_from_xml(_single_child(root, _SOAP_HEADER, _XROAD_CLIENT))
        service = service_from_xml(_single_child(root, _SOAP_HEADER, _XROAD_SERVICE))
    except ClientRequestError as exc:
        raise MalformedSignature(
            f"message.xml header names no signer: {exc.message}"
        ) from exc
    body = root.find(_SOAP_BODY)
    children = [] if body is None else [c for c in body if isinstance(c.tag, str)]
    first = children[0] if children else None
    if first is not None and etree.QName(first).localname == (
        service.service_code + "Response"
    ):
        return service.provider
    return client


def _single_child(root: etree._Element, *path: str) -> etree._Element:
    found = root.findall("/".join(path))
    if len(found) != 1:
        raise MalformedSignature(f"expected one {path[-1]!r}, found {len(found)}")
    return found[0]


def _rest_signer(message: bytes) -> ClientId:
    try:
        if is_response_part(message):
            headers = parse_response_part(message).headers
            return ServiceId.parse_slash(_header(headers, "X-Road-Service")).provider
        headers = parse_request_part(message).headers
        return ClientId.parse_slash(_header(headers, "X-Road-Client"))
    except ClientRequestError as exc:
        raise MalformedSignature(
            f"message.xml is neither SOAP nor a REST header part: {exc.message}"
        ) from exc


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str:
    values = [value for key, value in headers if key.lower() == name.lower()]
    if len(values) > 1:
        # Which copy is "the" signer would be a guess: refuse.
        raise MalformedSignature(f"REST message names {name} more than once")
    if values:
        return values[0]
    raise MalformedSignature(f"REST message has no {name} header")


def _find_signature(signature_xml: bytes) -> etree._Element:
    try:
        root = parse_xml(signature_xml)
    except ClientRequestError as exc:
        raise MalformedSignature(f"signatures.xml is not XML: {exc.message}") from exc
    if root.tag == _DS + "Signature":
        return root
    found = root.findall(_DS + "Signature")
    if len(found) != 1:
        raise MalformedSignature(f"expected one ds:Signature, found {len(found)}")
    return found[0]


def _check_data_reference(signature: etree._Element) -> str:
    """Step 3: the signature must cover the message or the chain result."""
    uris = [
        ref.get("URI") for ref in signature.iterfind(f"{_DS}SignedInfo/{_DS}Reference")
    ]
    for uri in (SIG_HASH_CHAIN_RESULT, MESSAGE):
        if uri in uris:
            return uri
    raise MalformedSignature(
        f"signature references neither {MESSAGE} nor {SIG_HASH_CHAIN_RESULT}: {uris!r}"
    )


def _verify_timestamp(
    container: ASiCContainer, signature: etree._Element, conf: GlobalConf
) -> TimestampInfo:
    """Step 4: the token over the signature value or the ts chain result."""
    token = container.timestamp or _embedded_token(signature)
    if container.ts_hash_chain_result is not None:
        chain = container.ts_hash_chain or b""
        try:
            verify_hash_chain(
                container.ts_hash_chain_result,
                _resolver(ENTRY_TS_HASH_CHAIN, chain),
                {},
                data={TS_DATA_REF: container.signature},
            )
        except HashChainError as exc:
            raise MalformedSignature(
                f"timestamp hash chain does not verify: {exc.message}"
            ) from exc
        stamped = container.ts_hash_chain_result
    else:
        stamped = signature_value(container.signature)

    tsa_certs = [tsa.cert for tsa in conf.approved_tsas()]
    try:
        return verify_timestamp_token(token, stamped, tsa_certs)
    except TspCertificateNotFound as exc:
        raise MlogTspCertificateNotFound(exc.message) from exc
    except TimestampSignerVerificationFailed as exc:
        raise MlogTimestampSignerVerificationFailed(exc.message) from exc


def _embedded_token(signature: etree._Element) -> bytes:
    stamp = signature.find(
        f"{_DS}Object/{_XADES}QualifyingProperties/{_XADES}UnsignedProperties/"
        f"{_XADES}UnsignedSignatureProperties/{_XADES}SignatureTimeStamp"
    )
    if stamp is None:
        raise MalformedSignature("signature carries no SignatureTimeStamp")
    encapsulated = stamp.find(_XADES + "EncapsulatedTimeStamp")
    text = encapsulated.text if encapsulated is not None else stamp.text
    try:
        token = unb64(text or "")
    except (ClientRequestError, binascii.Error) as exc:
        raise MalformedSignature("the embedded timestamp is not base64") from exc
    if not token:
        raise MalformedSignature("the embedded timestamp is empty")
    return token


def _resolver(entry: str, chain: bytes):  # type: ignore[no-untyped-def]
    def resolve(uri: str) -> bytes:
        if uri.lstrip("/") != entry:
            raise KeyError(uri)
        return chain

    return resolve


def _verify_signature_chain(container: ASiCContainer) -> tuple[AttachmentDigest, ...]:
    """Step 5: the message's chain up to the signed result; report attachments."""
    result = container.sig_hash_chain_result or b""
    chain = container.sig_hash_chain or b""
    try:
        reports = verify_hash_chain(
            result,
            _resolver(ENTRY_SIG_HASH_CHAIN, chain),
            {},
            data={MESSAGE: container.message},
        )
    except InvalidHashChainRef as exc:
        raise SignatureHashChainRefInvalid(exc.message) from exc
    except HashChainUnusedInputs as exc:
        raise SignatureHashChainUnusedInputs(exc.message) from exc
    except HashChainError as exc:
        raise SignatureHashChainInvalid(exc.message) from exc

    actual = container.attachment_digests
    return tuple(
        AttachmentDigest(r.uri, r.digest, actual.get(r.uri) == r.digest)
        for r in reports
        if r.uri.startswith("/attachment")
    )


def _signing_cert(signature: etree._Element) -> x509.Certificate:
    found = signature.findall(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate")
    if len(found) != 1:
        raise MalformedSignature(
            f"expected one signing certificate, found {len(found)}"
        )
    try:
        return x509.load_der_x509_certificate(unb64(found[0].text or ""))
    except (ClientRequestError, binascii.Error, ValueError) as exc:
        raise MalformedSignature("the signing certificate does not parse") from exc


def _check_signer(cert: x509.Certificate, signer: ClientId, conf: GlobalConf) -> None:
    """Step 6: a signing certificate of the signer's member, from its instance's CA."""
    try:
        pki.check_sign_cert_usage(cert)
    except XRoadError as exc:
        raise MalformedSignature(exc.message) from exc
    approved = conf.approved_ca_for(cert, signer.instance)
    if approved is None or approved.authentication_only:
        raise CertNotApproved(
            "Certificate is not issued by approved certification service provider."
        )
    try:
        member = pki.decode_member(cert, approved.profile, signer.instance)
    except XRoadError as exc:
        raise IncorrectCertificate(exc.message) from exc
    if member != signer.member:
        raise IncorrectCertificate(
            f"signing certificate belongs to {member}, expected {signer.member}"
        )


def _verify_signature_value(
    container: ASiCContainer, signature: etree._Element
) -> VerifiedSignature:
    """Step 7: XML-DSig over the container's own entries."""
    available = {MESSAGE: digest(container.message, SHA512_URI)}
    available.update(container.attachment_digests)
    referenced = {
        ref.get("URI") for ref in signature.iterfind(f"{_DS}SignedInfo/{_DS}Reference")
    }
    part_digests = {u: d for u, d in available.items() if u in referenced}
    return verify_signature(
        container.signature,
        part_digests,
        hash_chain_result=container.sig_hash_chain_result,
        hash_chain=container.sig_hash_chain,
    )


def _direct_attachments(
    container: ASiCContainer, signature: etree._Element
) -> tuple[AttachmentDigest, ...]:
    """Attachments the signature references directly: verified by step 7."""
    digests = container.attachment_digests
    uris = [
        ref.get("URI") or ""
        for ref in signature.iterfind(f"{_DS}SignedInfo/{_DS}Reference")
    ]
    return tuple(
        AttachmentDigest(uri, digests[uri], True)
        for uri in uris
        if uri.startswith("/attachment") and uri in digests
    )


def _verify_certificate(
    cert: x509.Certificate,
    verified: VerifiedSignature,
    signer: ClientId,
    conf: GlobalConf,
    at: datetime,
) -> pki.CertVerification:
    """Step 9: the signing certificate at *T* with the signature's OCSP evidence."""
    approved = conf.approved_ca_for(cert, signer.instance)
    responders: list[x509.Certificate] = []
    if approved is not None:
        issuers = [ca for ca in approved.certs if ca.subject == cert.issuer]
        infos = approved.ocsp_for(issuers[0]) if issuers else approved.all_ocsp()
        responders = [info.cert for info in infos if info.cert is not None]
    try:
        return pki.verify_certificate(
            cert,
            ca_certs=conf.ca_certs(signer.instance),
            ocsp_responses=verified.ocsp_responses,
            at=at,
            freshness_seconds=conf.ocsp_freshness_seconds,
            ocsp_responder_certs=responders,
        )
    except CertNotApproved:
        raise
    except IncorrectValidationInfo as exc:
        raise InvalidCertPathValidationInfo(exc.message) from exc
    except CertificateError as exc:
        raise InvalidCertPathValidation(exc.message) from exc
