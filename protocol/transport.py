"""Core: the multipart messages between security servers (transport.md §5-8).

Encodes and decodes the ``multipart/mixed`` request and response layouts,
classifies parts by type, enforces their order, and lists the part digests
a signature covers (§7.1). Signing itself lives elsewhere.

Part order (optional parts omitted)::

    OCSP responses* -> SOAP | REST header part -> attachments | REST body
      -> hash-chain result -> hash chain -> signature | SOAP fault
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asn1crypto import ocsp

from .digests import SHA512_URI, digest
from .errors import (
    InvalidContentType,
    InvalidMessage,
    MimeParsingFailed,
    MissingRest,
    MissingSignature,
    MissingSoap,
    XRoadIOError,
)
from .mime import (
    MimePart,
    build_multipart,
    check_boundary,
    parse_content_type,
    parse_multipart,
)
from .soap import SOAP_CONTENT_TYPES, SoapFault, SoapMessage, parse_soap

# Part types (transport.md §6, §8).
OCSP_RESPONSE = "application/ocsp-response"
REST_REQUEST = "application/x-road-rest-request"
REST_RESPONSE = "application/x-road-rest-response"
REST_BODY = "application/x-road-rest-body"
HASH_CHAIN_RESULT = "application/hash-chain-result"
HASH_CHAIN = "application/hash-chain"
SIGNATURE = "signature/bdoc-1.0/ts"
MULTIPART_MIXED = "multipart/mixed"
FAULT_TYPE = "text/xml; charset=UTF-8"

# HTTP headers between security servers (transport.md §5).
HEADER_HASH_ALGORITHM = "x-hash-algorithm"
HEADER_PROXY_VERSION = "x-proxy-version"
HEADER_ORIGINAL_CONTENT_TYPE = "x-original-content-type"
HEADER_ORIGINAL_SOAPACTION = "x-original-soapaction"
HEADER_REQUEST_ID = "x-road-request-id"
HEADER_MESSAGE_TYPE = "x-road-message-type"
MESSAGE_TYPE_REST = "REST"
HASH_ALGORITHM = "SHA-512"

MESSAGE_NAME = "/message.xml"

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Stages a decoder walks through; a part may not go back to an earlier one.
_OCSP, _MESSAGE, _CONTENT, _CHAIN_RESULT, _CHAIN, _LAST = range(6)


@dataclass(frozen=True, slots=True)
class ProxyMessage:
    """The parts of one message between security servers, in wire order."""

    ocsp_responses: list[bytes] = field(default_factory=list)
    soap: MimePart | None = None  # with its own content type and MIME headers
    attachments: list[MimePart] = field(default_factory=list)
    rest_request: bytes | None = None
    rest_response: bytes | None = None
    rest_body: bytes | None = None
    hash_chain_result: bytes | None = None
    hash_chain: bytes | None = None
    signature: bytes | None = None
    fault: bytes | None = None
    # Set by the decoder: the SOAP part already parsed and checked.
    soap_message: SoapMessage | None = field(default=None, compare=False)


def proxy_content_type(boundary: str) -> str:
    """The Content-Type of a message between security servers."""
    return f"{MULTIPART_MIXED}; charset=UTF-8; boundary={boundary}"


def random_boundary(rand_bytes: bytes, prefix: str = "xtop") -> str:
    """``prefix`` + 30 letters drawn from caller-supplied random bytes."""
    if len(rand_bytes) < 30:
        raise ValueError("random_boundary needs at least 30 random bytes")
    return prefix + "".join(_LETTERS[b % len(_LETTERS)] for b in rand_bytes[:30])


# -- encoding ----------------------------------------------------------------


def encode_proxy_message(
    msg: ProxyMessage, boundary: str, attachment_boundary: str
) -> bytes:
    """Frame a message in the part order of transport.md §6 and §8.

    A fault with a signature stands in the SOAP position (a signed fault);
    a fault without one is the last part.
    """
    parts = [
        MimePart((("content-type", OCSP_RESPONSE),), der) for der in msg.ocsp_responses
    ]
    if msg.soap is not None:
        parts.append(_soap_part(msg.soap))
    elif msg.fault is not None and msg.signature is not None:
        parts.append(_typed(FAULT_TYPE, msg.fault))
    if msg.attachments:
        nested = build_multipart(msg.attachments, attachment_boundary)
        parts.append(_typed(proxy_content_type(attachment_boundary), nested))

    optional = (
        (REST_REQUEST, msg.rest_request),
        (REST_RESPONSE, msg.rest_response),
        (REST_BODY, msg.rest_body),
        (HASH_CHAIN_RESULT, msg.hash_chain_result),
        (HASH_CHAIN, msg.hash_chain),
        (SIGNATURE, msg.signature),
    )
    parts.extend(_typed(kind, body) for kind, body in optional if body is not None)
    if msg.fault is not None and msg.signature is None:
        parts.append(_typed(FAULT_TYPE, msg.fault))
    return build_multipart(parts, boundary)


def _typed(content_type: str, body: bytes) -> MimePart:
    return MimePart((("content-type", content_type),), body)


def _soap_part(part: MimePart) -> MimePart:
    content_type = part.content_type or FAULT_TYPE
    return MimePart((("content-type", content_type),) + part.extra_headers(), part.body)


# -- decoding ----------------------------------------------------------------


def decode_proxy_message(data: bytes, content_type: str) -> ProxyMessage:
    """Split a message between security servers into its classified parts.

    A whole ``text/xml`` body must be a SOAP fault. The SOAP part is parsed
    and checked here, as the reference does while reading the stream.

    :raises InvalidContentType: unsupported message type, or a part with a
        missing or unknown type.
    :raises InvalidMessage: parts out of order, a repeated part, a part
        after the signature, or a non-fault ``text/xml`` body.
    :raises XRoadIOError: an OCSP part that is not a DER OCSPResponse.
    :raises MimeParsingFailed: broken framing.
    """
    mime_type, params = parse_content_type(content_type)
    if mime_type in SOAP_CONTENT_TYPES:
        return _whole_fault(data, content_type)
    if mime_type != MULTIPART_MIXED:
        raise InvalidContentType(f"invalid message content type {mime_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise MimeParsingFailed("multipart content type has no boundary")

    decoder = _Decoder()
    for part in parse_multipart(data, boundary):
        decoder.add(part)
    return decoder.result()


def _whole_fault(data: bytes, content_type: str) -> ProxyMessage:
    parsed = parse_soap(data, content_type)
    if not isinstance(parsed, SoapFault):
        raise InvalidMessage("a text/xml message between servers must be a SOAP fault")
    return ProxyMessage(fault=data)


def new_decoder() -> _Decoder:
    """A decoder fed part by part, for messages parsed as they stream in."""
    return _Decoder()


class _Decoder:
    """Accumulates classified parts and enforces their order."""

    def __init__(self) -> None:
        self.stage = _OCSP
        self.values: dict[str, object] = {"ocsp_responses": [], "attachments": []}
        self.finished = False
        self.kind: str | None = None  # "soap", "rest-request", "rest-response"

    def add(self, part: MimePart) -> None:
        if self.finished:
            raise InvalidMessage("no part may follow the signature or the fault")
        mime_type = part.mime_type
        if mime_type is None:
            raise InvalidContentType("MIME part has no Content-Type")

        if mime_type == OCSP_RESPONSE:
            self._advance(_OCSP, mime_type, repeatable=True)
            self._list("ocsp_responses").append(_checked_ocsp(part.body))
        elif mime_type in SOAP_CONTENT_TYPES:
            self._soap_or_fault(part)
        elif mime_type in (REST_REQUEST, REST_RESPONSE):
            self._advance(_MESSAGE, mime_type)
            self.kind = mime_type
            key = "rest_request" if mime_type == REST_REQUEST else "rest_response"
            self.values[key] = part.body
        elif mime_type == REST_BODY:
            self._require_kind((REST_REQUEST, REST_RESPONSE), mime_type)
            self._advance(_CONTENT, mime_type)
            self.values["rest_body"] = part.body
        elif mime_type.startswith("multipart/"):
            self._attachments(part)
        elif mime_type == HASH_CHAIN_RESULT:
            self._advance(_CHAIN_RESULT, mime_type)
            self.values["hash_chain_result"] = part.body
        elif mime_type == HASH_CHAIN:
            self._advance(_CHAIN, mime_type)
            self.values["hash_chain"] = part.body
        elif mime_type == SIGNATURE:
            self._advance(_LAST, mime_type)
            self.values["signature"] = part.body
            self.finished = True
        else:
            raise InvalidContentType(f"unexpected part content type {mime_type!r}")

    def _soap_or_fault(self, part: MimePart) -> None:
        if self.stage > _OCSP:
            # After the message part only a fault may come, and it is last.
            parsed = parse_soap(part.body, part.content_type or "")
            if not isinstance(parsed, SoapFault):
                raise InvalidMessage("a second SOAP part is not allowed")
            self.values["fault"] = part.body
            self.stage, self.finished = _LAST, True
            return

        parsed = parse_soap(part.body, part.content_type or "")
        self.stage = _MESSAGE
        self.kind = "soap"
        if isinstance(parsed, SoapFault):
            self.values["fault"] = part.body
        else:
            self.values["soap"] = part
            self.values["soap_message"] = parsed

    def add_attachment_frame(self, part: MimePart) -> str:
        """Accept the nested attachment multipart by its headers alone.

        For a streaming reader that keeps the attachments itself; returns the
        nested boundary. ``attachments`` of the result stays empty.
        """
        if self.finished:
            raise InvalidMessage("no part may follow the signature or the fault")
        self._require_kind(("soap",), "attachments")
        self._advance(_CONTENT, "attachments")
        _, params = parse_content_type(part.content_type)
        boundary = params.get("boundary")
        if not boundary:
            raise MimeParsingFailed("attachment multipart has no boundary")
        check_boundary(boundary)
        return boundary

    def _attachments(self, part: MimePart) -> None:
        boundary = self.add_attachment_frame(part)
        attachments = parse_multipart(part.body, boundary)
        for attachment in attachments:
            if attachment.content_type is None:
                raise InvalidContentType("attachment has no Content-Type")
        self.values["attachments"] = attachments

    def _advance(self, stage: int, what: str, *, repeatable: bool = False) -> None:
        if stage < self.stage or (stage == self.stage and not repeatable):
            raise InvalidMessage(f"part {what!r} is out of order or repeated")
        self.stage = stage

    def _require_kind(self, kinds: tuple[str, ...], what: str) -> None:
        if self.kind not in kinds:
            raise InvalidMessage(f"part {what!r} does not fit a {self.kind} message")

    def _list(self, key: str) -> list[bytes]:
        value = self.values[key]
        assert isinstance(value, list)
        return value

    def result(self) -> ProxyMessage:
        return ProxyMessage(**self.values)  # type: ignore[arg-type]


def _checked_ocsp(der: bytes) -> bytes:
    """Refuse an OCSP part that is not a DER OCSPResponse (reference: IOError)."""
    try:
        response = ocsp.OCSPResponse.load(der, strict=True)
        response["response_status"].native  # noqa: B018 - forces the parse
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, ...
        raise XRoadIOError("OCSP response part is not valid DER") from exc
    return der


def check_proxy_message(msg: ProxyMessage, *, rest: bool) -> None:
    """Require the message part and the signature, unless it carries a fault.

    :raises MissingSoap: / :raises MissingRest: no SOAP or REST part.
    :raises MissingSignature: no signature part.
    """
    if msg.fault is not None and msg.signature is None:
        return
    if rest and msg.rest_request is None and msg.rest_response is None:
        raise MissingRest("message has no REST part")
    if not rest and msg.soap is None and msg.fault is None:
        raise MissingSoap("message has no SOAP part")
    if msg.signature is None:
        raise MissingSignature("message has no signature")


# -- what is signed ------------------------------------------------------------


def part_digests(msg: ProxyMessage, uri: str = SHA512_URI) -> list[tuple[str, bytes]]:
    """The named part digests a signature covers, in order (transport.md §7.1).

    ``/message.xml`` is the SOAP part body or the REST header part; then
    ``/attachment1..N`` are the attachment bodies, or the REST body.
    """
    if msg.soap is not None:
        message = msg.soap.body
    elif msg.rest_request is not None:
        message = msg.rest_request
    elif msg.rest_response is not None:
        message = msg.rest_response
    elif msg.fault is not None:
        message = msg.fault
    else:
        raise MissingSoap("message has no part to sign")

    bodies = [a.body for a in msg.attachments]
    if msg.rest_body is not None:
        bodies.append(msg.rest_body)
    named = [(MESSAGE_NAME, digest(message, uri))]
    named.extend((f"/attachment{i}", digest(b, uri)) for i, b in enumerate(bodies, 1))
    return named
