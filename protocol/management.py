"""Core: management requests from security servers to the central server.

Spec: management-services.md §2 (bodies), §3 (signed multipart), §5
(verification). Builds and parses authCertReg, clientReg, clientDeletion,
ownerChange and addressChange requests and their responses; signatures are
raw PKCS#1/ECDSA signatures over the exact bytes of the SOAP part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from lxml import etree

from . import pki
from .digests import b64, unb64
from .errors import InvalidRequest, XRoadError
from .globalconf import GlobalConf
from .identifiers import (
    XROAD_NS,
    ClientId,
    SecurityServerId,
    ServiceId,
    client_from_xml,
    server_from_xml,
    to_xml,
)
from .mime import MimePart, build_multipart, parse_content_type, parse_multipart
from .soap import SoapHeader, SoapMessage, build_soap_request, parse_soap
from .xml import parse_xml

SOAP_PART_TYPE = "text/xml; charset=UTF-8"
BINARY_PART_TYPE = "application/octet-stream"
ALGORITHM_HEADER = "signature-algorithm-id"
MAX_REQUEST_BYTES = 100_000  # §3: the reference central server's limit
MAX_NAME_LENGTH = 255
_FORBIDDEN = set(":;%/\\\ufeff\u200b")


class ManagementRequestError(InvalidRequest):
    """A management request or response is malformed."""

    code: ClassVar[str] = "InvalidManagementRequest"


class UnsupportedManagementService(ManagementRequestError):
    code: ClassVar[str] = "UnsupportedManagementService"


class ManagementSignatureError(ManagementRequestError):
    """A signature or certificate of a management request does not verify."""

    code: ClassVar[str] = "InvalidManagementSignature"


class ManagementSenderMismatch(ManagementRequestError):
    """The sender, the signer and the server owner do not agree (§5 steps 6-7)."""

    code: ClassVar[str] = "ManagementSenderMismatch"


class ManagementService(StrEnum):
    AUTH_CERT_REG = "authCertReg"
    CLIENT_REG = "clientReg"
    CLIENT_DELETION = "clientDeletion"
    OWNER_CHANGE = "ownerChange"
    ADDRESS_CHANGE = "addressChange"


# Services whose signer must be the client's member (§5 step 7).
CLIENT_SIGNED = frozenset(
    {ManagementService.CLIENT_REG, ManagementService.OWNER_CHANGE}
)


@dataclass(frozen=True, slots=True)
class ManagementRequest:
    """The body of one management request (§2); ``request_id`` only in responses."""

    service: ManagementService
    server: SecurityServerId
    client: ClientId | None = None
    subsystem_name: str | None = None
    address: str | None = None
    auth_cert: bytes | None = None  # DER
    request_id: int | None = None


@dataclass(frozen=True, slots=True)
class RawSignature:
    algorithm: str  # JCA-style name, e.g. SHA512withRSA
    value: bytes


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A parsed multipart request (§3): the exact SOAP bytes and its evidence."""

    soap: bytes
    header: SoapHeader
    request: ManagementRequest
    owner_signature: RawSignature
    sign_cert: bytes  # DER
    ocsp_response: bytes  # DER
    auth_signature: RawSignature | None = None
    auth_cert: bytes | None = None  # DER, part 4 of authCertReg


# -- bodies ---------------------------------------------------------------------


def _q(name: str) -> str:
    return f"{{{XROAD_NS}}}{name}"


def _check_request(request: ManagementRequest) -> None:
    service = request.service
    if service in (ManagementService.CLIENT_REG, ManagementService.CLIENT_DELETION):
        if request.client is None:
            raise ManagementRequestError(f"{service} needs a client")
    if service is ManagementService.OWNER_CHANGE:
        if request.client is None or request.client.subsystem_code is not None:
            raise ManagementRequestError("ownerChange needs a member as new owner")
    if request.subsystem_name is not None and (
        service is not ManagementService.CLIENT_REG
        or request.client is None
        or request.client.subsystem_code is None
    ):
        raise ManagementRequestError("subsystemName is only allowed for a subsystem")
    if service is ManagementService.AUTH_CERT_REG and not request.auth_cert:
        raise ManagementRequestError("authCertReg needs the authentication cert")
    if service in (ManagementService.AUTH_CERT_REG, ManagementService.ADDRESS_CHANGE):
        check_address(request.address)
    check_server_id(request.server)


def check_server_id(server: SecurityServerId) -> None:
    """§5 step 5: each part non-empty, short, without control or path characters."""
    for part in server.parts():
        if not part or len(part) > MAX_NAME_LENGTH:
            raise ManagementRequestError(f"server id part {part!r} has a bad length")
        if any(ord(ch) < 0x20 or ch in _FORBIDDEN for ch in part):
            raise ManagementRequestError(f"server id part {part!r} is not allowed")


def check_address(address: str | None) -> None:
    """§5 step 9: an IP literal or a domain name (``host:port`` accepted too)."""
    if not address:
        raise ManagementRequestError("the server address is missing")
    host, _, port = address.rpartition(":") if address.count(":") == 1 else ("", "", "")
    host = host or address
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ManagementRequestError(f"address {address!r} has a bad port")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
    if len(host) > 253 or not set(host) <= allowed or host.startswith(("-", ".")):
        raise ManagementRequestError(f"address {address!r} is not a host name or IP")


def build_management_body(request: ManagementRequest) -> etree._Element:
    """Build the body element; the response form when ``request_id`` is set."""
    _check_request(request)
    name = request.service.value
    if request.request_id is not None:
        name += "Response"
    root = etree.Element(_q(name), nsmap={"xroad": XROAD_NS})
    root.append(to_xml(request.server, _q("server")))
    if request.client is not None:
        root.append(to_xml(request.client, _q("client")))
    if request.subsystem_name is not None:
        etree.SubElement(root, _q("subsystemName")).text = request.subsystem_name
    if request.address is not None:
        etree.SubElement(root, _q("address")).text = request.address
    if request.auth_cert is not None:
        etree.SubElement(root, _q("authCert")).text = b64(request.auth_cert)
    if request.request_id is not None:
        etree.SubElement(root, _q("requestId")).text = str(request.request_id)
    return root


def parse_management_body(body: etree._Element) -> ManagementRequest:
    """Parse a request or response body element (§2).

    :raises UnsupportedManagementService: an unknown service code.
    :raises ManagementRequestError: a missing, repeated or unknown child.
    """
    local = etree.QName(body).localname
    service_code = local.removesuffix("Response")
    if etree.QName(body).namespace != XROAD_NS:
        raise ManagementRequestError(f"body element {body.tag!r} is not in {XROAD_NS}")
    try:
        service = ManagementService(service_code)
    except ValueError:
        raise UnsupportedManagementService(
            f"management service {service_code!r} is not supported"
        ) from None

    fields: dict[str, etree._Element] = {}
    for child in body:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace != XROAD_NS or qname.localname in fields:
            raise ManagementRequestError(f"unexpected body element {child.tag!r}")
        fields[qname.localname] = child
    known = {"server", "client", "subsystemName", "address", "authCert", "requestId"}
    if unknown := set(fields) - known - {"dryRun"}:
        raise ManagementRequestError(f"unknown body elements {sorted(unknown)!r}")
    if "server" not in fields:
        raise ManagementRequestError(f"{service} has no server")
    if "dryRun" in fields:
        raise UnsupportedManagementService("dryRun is not supported")

    try:
        request = ManagementRequest(
            service=service,
            server=server_from_xml(fields["server"]),
            client=client_from_xml(fields["client"]) if "client" in fields else None,
            subsystem_name=_text(fields.get("subsystemName")),
            address=_text(fields.get("address")),
            auth_cert=_cert_bytes(fields.get("authCert")),
            request_id=_request_id(fields.get("requestId")),
        )
    except ManagementRequestError:
        raise
    except XRoadError as err:
        raise ManagementRequestError(f"bad identifier: {err.message}") from err
    _check_request(request)
    return request


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    return (element.text or "").strip()


def _cert_bytes(element: etree._Element | None) -> bytes | None:
    if element is None:
        return None
    try:
        return unb64((element.text or "").strip())
    except (ValueError, XRoadError) as err:
        raise ManagementRequestError("authCert is not base64") from err


def _request_id(element: etree._Element | None) -> int | None:
    text = _text(element)
    if text is None:
        return None
    if not text.isdigit():
        raise ManagementRequestError(f"requestId {text!r} is not an integer")
    return int(text)


# -- SOAP envelopes -------------------------------------------------------------


def build_management_request(
    request: ManagementRequest,
    *,
    sender: ClientId,
    provider: ClientId,
    query_id: str,
) -> bytes:
    """Build the SOAP part: client = server owner, service = provider + code (§2)."""
    service = ServiceId(provider, request.service.value)
    return build_soap_request(sender, service, query_id, build_management_body(request))


def parse_management_request(soap: bytes) -> tuple[SoapHeader, ManagementRequest]:
    """Parse the SOAP part of a request; the service code must match the body."""
    message = _parse_envelope(soap)
    body = _body_element(message)
    request = parse_management_body(body)
    if request.request_id is not None:
        raise ManagementRequestError("a request must not carry a requestId")
    if message.header.service.service_code.lower() != request.service.value.lower():
        raise ManagementRequestError(
            f"service code {message.header.service.service_code!r} does not match"
            f" body {request.service.value!r}"
        )
    return message.header, request


def _parse_envelope(soap: bytes) -> SoapMessage:
    try:
        parsed = parse_soap(soap, SOAP_PART_TYPE)
    except XRoadError as err:
        raise ManagementRequestError(f"bad SOAP part: {err.message}") from err
    if not isinstance(parsed, SoapMessage):
        raise ManagementRequestError(f"SOAP fault {parsed.code}: {parsed.string}")
    return parsed


def _body_element(message: SoapMessage) -> etree._Element:
    root = parse_xml(message.raw)
    bodies = root.findall("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    elements = [e for e in bodies[0] if isinstance(e.tag, str)] if bodies else []
    if len(elements) != 1:
        raise ManagementRequestError("the SOAP body must hold exactly one element")
    return elements[0]


def build_management_response(soap: bytes, request_id: int) -> bytes:
    """Answer a request: same header, ``<code>Response`` body plus requestId (§3)."""
    root = parse_xml(soap)
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    if body is None:
        raise ManagementRequestError("request has no body")
    request = parse_management_body(next(e for e in body if isinstance(e.tag, str)))
    response = ManagementRequest(
        service=request.service,
        server=request.server,
        client=request.client,
        subsystem_name=request.subsystem_name,
        address=request.address,
        auth_cert=request.auth_cert,
        request_id=request_id,
    )
    for child in list(body):
        body.remove(child)
    body.append(build_management_body(response))
    etree.cleanup_namespaces(root)
    out: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return out


def parse_management_response(raw: bytes, request_header: SoapHeader) -> int:
    """Check a response against its request and return the request id (§3).

    :raises ManagementRequestError: a fault, a mismatching header or no id.
    """
    message = _parse_envelope(raw)
    header = message.header
    if (header.query_id, header.client, header.service) != (
        request_header.query_id,
        request_header.client,
        request_header.service,
    ):
        raise ManagementRequestError("response header does not match the request")
    response = parse_management_body(_body_element(message))
    if response.request_id is None:
        raise ManagementRequestError("response carries no requestId")
    return response.request_id


# -- raw signatures -------------------------------------------------------------

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


def _algorithm(name: str) -> tuple[hashes.HashAlgorithm, str]:
    digest, _, rest = name.partition("with")
    kind = {"RSA": "rsa", "RSAandMGF1": "pss", "ECDSA": "ecdsa"}.get(rest)
    if digest not in _HASHES or kind is None:
        raise ManagementSignatureError(f"signature algorithm {name!r} is not supported")
    return _HASHES[digest](), kind


def sign_raw(
    key: object, data: bytes, algorithm: str = "SHA512withRSA"
) -> RawSignature:
    """Sign ``data`` with an RSA or EC private key (§3, JCA algorithm names)."""
    digest, kind = _algorithm(algorithm)
    if isinstance(key, rsa.RSAPrivateKey) and kind == "rsa":
        return RawSignature(algorithm, key.sign(data, padding.PKCS1v15(), digest))
    if isinstance(key, rsa.RSAPrivateKey) and kind == "pss":
        return RawSignature(algorithm, key.sign(data, _pss(digest), digest))
    if isinstance(key, ec.EllipticCurvePrivateKey) and kind == "ecdsa":
        return RawSignature(algorithm, key.sign(data, ec.ECDSA(digest)))
    raise ManagementSignatureError(f"key type does not match {algorithm!r}")


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


def verify_raw(cert: x509.Certificate, signature: RawSignature, data: bytes) -> None:
    """:raises ManagementSignatureError: the signature does not verify."""
    digest, kind = _algorithm(signature.algorithm)
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and kind in ("rsa", "pss"):
            pad = padding.PKCS1v15() if kind == "rsa" else _pss(digest)
            key.verify(signature.value, data, pad, digest)
            return
        if isinstance(key, ec.EllipticCurvePublicKey) and kind == "ecdsa":
            key.verify(signature.value, data, ec.ECDSA(digest))
            return
    except InvalidSignature:
        raise ManagementSignatureError(
            f"signature by certificate serial {cert.serial_number:#x} does not verify"
        ) from None
    raise ManagementSignatureError(
        f"key of certificate serial {cert.serial_number:#x} cannot verify"
        f" {signature.algorithm!r}"
    )


# -- multipart ------------------------------------------------------------------


def build_signed_request(
    soap: bytes,
    *,
    owner_key: object,
    sign_cert: bytes,
    ocsp_response: bytes,
    boundary: str,
    auth_key: object | None = None,
    auth_cert: bytes | None = None,
) -> tuple[bytes, str]:
    """Frame the multipart request of §3; returns (body, Content-Type).

    With ``auth_key`` (authCertReg) the six-part form is built: proof of
    possession by the authentication key first, then the owner's signature.
    """
    owner = sign_raw(owner_key, soap)
    parts = [MimePart((("Content-Type", SOAP_PART_TYPE),), soap)]
    if auth_key is not None:
        if auth_cert is None:
            raise ManagementRequestError("authCertReg needs the auth certificate")
        parts.append(_signature_part(sign_raw(auth_key, soap)))
    parts.append(_signature_part(owner))
    if auth_cert is not None:
        parts.append(_binary_part(auth_cert))
    parts += [_binary_part(sign_cert), _binary_part(ocsp_response)]
    content_type = (
        f'multipart/related; type="{BINARY_PART_TYPE}"; charset=UTF-8;'
        f' boundary="{boundary}"'
    )
    return build_multipart(parts, boundary), content_type


def _signature_part(signature: RawSignature) -> MimePart:
    headers = (
        ("Content-Type", BINARY_PART_TYPE),
        (ALGORITHM_HEADER, signature.algorithm),
    )
    return MimePart(headers, signature.value)


def _binary_part(data: bytes) -> MimePart:
    return MimePart((("Content-Type", BINARY_PART_TYPE),), data)


def parse_signed_request(raw: bytes, content_type: str) -> SignedRequest:
    """Split a multipart management request into its parts, in fixed order (§3).

    :raises ManagementRequestError: wrong type, wrong part count or order.
    """
    if len(raw) > MAX_REQUEST_BYTES:
        raise ManagementRequestError(f"request of {len(raw)} bytes is too large")
    mime_type, params = parse_content_type(content_type)
    if mime_type != "multipart/related" or not params.get("boundary"):
        raise ManagementRequestError(f"expected multipart/related, got {mime_type!r}")
    try:
        parts = parse_multipart(raw, params["boundary"])
    except XRoadError as err:
        raise ManagementRequestError(f"bad multipart: {err.message}") from err

    header, request = parse_management_request(parts[0].body)
    is_auth = request.service is ManagementService.AUTH_CERT_REG
    if len(parts) != (6 if is_auth else 4):
        raise ManagementRequestError(
            f"{request.service} needs {6 if is_auth else 4} parts, got {len(parts)}"
        )
    if parts[0].mime_type != "text/xml":
        raise ManagementRequestError("the first part must be text/xml")
    signatures = [_signature_of(p) for p in parts[1 : 3 if is_auth else 2]]
    rest = parts[3:] if is_auth else parts[2:]
    return SignedRequest(
        soap=parts[0].body,
        header=header,
        request=request,
        owner_signature=signatures[-1],
        sign_cert=rest[-2].body,
        ocsp_response=rest[-1].body,
        auth_signature=signatures[0] if is_auth else None,
        auth_cert=rest[0].body if is_auth else None,
    )


def _signature_of(part: MimePart) -> RawSignature:
    algorithm = part.header(ALGORITHM_HEADER)
    if not algorithm:
        raise ManagementRequestError(f"signature part has no {ALGORITHM_HEADER}")
    _algorithm(algorithm)
    return RawSignature(algorithm, part.body)


# -- verification (§5) ----------------------------------------------------------


def verify_management_request(
    signed: SignedRequest,
    *,
    global_conf: GlobalConf,
    provider: ClientId,
    at: datetime,
) -> ClientId:
    """Verify a signed request against the instance's approved CAs (§5).

    Returns the member decoded from the signing certificate.

    :raises ManagementSignatureError: a signature or certificate check failed.
    :raises ManagementSenderMismatch: sender, signer and server owner disagree.
    """
    instance = global_conf.own_instance
    request, header = signed.request, signed.header
    if header.service != ServiceId(provider, header.service.service_code):
        raise ManagementSenderMismatch(
            f"service {header.service} is not the management service of {provider}"
        )
    if header.client.instance != instance or header.client != request.server.owner:
        raise ManagementSenderMismatch("Sender does not match server owner")

    sign_cert = _load(signed.sign_cert, "signing certificate")
    signer = _verify_sign_cert(sign_cert, signed, global_conf, at)
    verify_raw(sign_cert, signed.owner_signature, signed.soap)

    if request.service in CLIENT_SIGNED:
        assert request.client is not None  # checked when parsed
        if signer != request.client.member:
            raise ManagementSenderMismatch(
                f"request for {request.client} is signed by {signer}"
            )
    elif request.service in (
        ManagementService.AUTH_CERT_REG,
        ManagementService.CLIENT_DELETION,
    ):
        # TODO(#6): clientDeletion travels unsigned over X-Road in the spec;
        # sent straight to the central server it must carry the owner's signature.
        if signer != request.server.owner:
            raise ManagementSenderMismatch(
                f"request for {request.server} is signed by {signer}"
            )
    if request.service is ManagementService.AUTH_CERT_REG:
        _verify_auth_cert(signed, global_conf, at)
    return signer


def _load(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise ManagementRequestError(f"the {what} is not DER") from err


def _verify_sign_cert(
    cert: x509.Certificate, signed: SignedRequest, global_conf: GlobalConf, at: datetime
) -> ClientId:
    instance = global_conf.own_instance
    approved = global_conf.approved_ca_for(cert, instance)
    if approved is None or approved.authentication_only:
        raise ManagementSignatureError(
            "signing certificate is not issued by an approved CA"
        )
    try:
        pki.check_sign_cert_usage(cert)
        pki.verify_certificate(
            cert,
            ca_certs=global_conf.ca_certs(instance),
            ocsp_responses=[signed.ocsp_response],
            at=at,
            freshness_seconds=global_conf.ocsp_freshness_seconds,
            ocsp_responder_certs=global_conf.ocsp_responder_certs(instance),
        )
        return pki.decode_member(cert, approved.profile, instance)
    except XRoadError as err:
        raise ManagementSignatureError(
            f"signing certificate rejected: {err.full_code}: {err.message}"
        ) from err


def _verify_auth_cert(
    signed: SignedRequest, global_conf: GlobalConf, at: datetime
) -> None:
    """§5 step 10: approved, valid auth cert, and proof of possession of its key."""
    if signed.auth_cert is None or signed.auth_signature is None:
        raise ManagementRequestError("authCertReg lacks the auth cert or its proof")
    if signed.auth_cert != signed.request.auth_cert:
        raise ManagementRequestError("the auth cert part differs from the body")
    cert = _load(signed.auth_cert, "authentication certificate")
    issuers: Sequence[x509.Certificate] = global_conf.ca_certs(global_conf.own_instance)
    try:
        pki.check_auth_cert_usage(cert)
        if pki.find_issuer(cert, issuers) is None:
            raise ManagementSignatureError(
                "authentication certificate is not issued by an approved CA"
            )
        pki.check_validity(cert, at)
    except ManagementSignatureError:
        raise
    except XRoadError as err:
        raise ManagementSignatureError(
            f"authentication certificate rejected: {err.full_code}: {err.message}"
        ) from err
    verify_raw(cert, signed.auth_signature, signed.soap)
