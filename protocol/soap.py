"""Core: the X-Road SOAP message protocol 4.0 (soap-message.md, identifiers.md §3).

Parses and checks SOAP envelopes in the reference validation order
(soap-message.md §11 step 3), inserts and checks ``requestHash`` (§4-5) and
builds the security server's own faults (§10.1). Bytes in, objects out.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from xml.sax.saxutils import escape

from lxml import etree

from .digests import SHA512_URI, b64, sha512, unb64
from .errors import (
    DuplicateHeaderField,
    InconsistentHeaders,
    InconsistentResponse,
    InvalidBody,
    InvalidContentType,
    InvalidProtocolVersion,
    InvalidRequest,
    InvalidSoap,
    InvalidSoapAction,
    MissingBody,
    MissingHeader,
    MissingHeaderField,
    MissingSoap,
)
from .identifiers import (
    ID_NS,
    XROAD_NS,
    ClientId,
    SecurityServerId,
    ServiceId,
    client_from_xml,
    server_from_xml,
    service_from_xml,
    to_xml,
)
from .mime import MimePart, content_type_param, parse_content_type, parse_multipart
from .xml import parse_xml

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
REPR_NS = "http://x-road.eu/xsd/representation.xsd"
SECTOKEN_NS = "http://x-road.eu/xsd/security-token.xsd"

SOAP_CONTENT_TYPES = ("text/xml", "application/xop+xml")
MULTIPART_RELATED = "multipart/related"
FAULT_CONTENT_TYPE = "text/xml; charset=UTF-8"

_ENVELOPE = f"{{{SOAP_ENV_NS}}}Envelope"
_HEADER = f"{{{SOAP_ENV_NS}}}Header"
_BODY = f"{{{SOAP_ENV_NS}}}Body"
_FAULT = f"{{{SOAP_ENV_NS}}}Fault"
_ENCODING_STYLE = f"{{{SOAP_ENV_NS}}}encodingStyle"
_REQUEST_HASH = f"{{{XROAD_NS}}}requestHash"
_REPRESENTED_PARTY = f"{{{REPR_NS}}}representedParty"

# soap-message.md §3: each may appear at most once.
_XROAD_FIELDS = (
    "client",
    "service",
    "securityServer",
    "id",
    "userId",
    "issue",
    "protocolVersion",
    "requestHash",
)
_T = TypeVar("_T")
_BOM = codecs.BOM_UTF8
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
_ENCODING_DECL = re.compile(rb"^(<\?xml[^>]*?)\s+encoding\s*=\s*(['\"])[^'\"]*\2")
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class InconsistentResponseHeaders(InconsistentResponse):
    """The response header values differ from the request's (soap-message.md §5).

    Same code as a wrong ``requestHash``; the adapter reports this one with
    the ``ServiceFailed.`` infix.
    """


@dataclass(frozen=True, slots=True)
class SoapHeader:
    """The X-Road header fields of one message (soap-message.md §3)."""

    client: ClientId
    service: ServiceId
    security_server: SecurityServerId | None
    query_id: str
    user_id: str | None
    issue: str | None
    protocol_version: str
    represented_party: tuple[str | None, str] | None
    request_hash: tuple[str, str] | None  # (algorithmId, base64 value)


@dataclass(frozen=True, slots=True)
class SoapMessage:
    """A checked SOAP message; ``raw`` are the exact bytes received."""

    raw: bytes
    header: SoapHeader
    body_tag: str  # Clark notation: {namespace}localname
    is_rpc: bool
    charset: str


@dataclass(frozen=True, slots=True)
class SoapFault:
    code: str
    string: str
    actor: str | None
    detail: str | None
    raw: bytes


# -- parsing -----------------------------------------------------------------


def parse_soap(raw: bytes, content_type: str) -> SoapMessage | SoapFault:
    """Parse and check one SOAP envelope; a Fault body gives a :class:`SoapFault`.

    :param content_type: the type of these bytes: ``text/xml`` or
        ``application/xop+xml`` (the SOAP part of a multipart package).
    :raises ClientRequestError: the subclass names the first failed check.
    """
    mime_type, params = parse_content_type(content_type)
    if mime_type not in SOAP_CONTENT_TYPES:
        raise InvalidContentType(f"invalid SOAP content type {mime_type!r}")
    charset = params.get("charset") or "UTF-8"

    envelope = _parse_envelope(raw, charset)
    header, body = _envelope_children(envelope)
    if body is not None and _fault_element(body) is not None:
        return _fault_from(body, raw)

    soap_header = _parse_header(header)
    body_tag = _check_body(body, soap_header.service)
    is_rpc = envelope.get(_ENCODING_STYLE) is not None or (
        body is not None and body.get(_ENCODING_STYLE) is not None
    )
    return SoapMessage(raw, soap_header, body_tag, is_rpc, charset)


def parse_soap_package(
    data: bytes, content_type: str
) -> tuple[SoapMessage | SoapFault, MimePart | None, list[MimePart]]:
    """Parse a request or response body that is SOAP or a multipart/related package.

    Returns the parsed SOAP, the SOAP MIME part (None for a plain body) and
    the attachment parts in order (soap-message.md §8-9).

    :raises InvalidContentType: unsupported type, or a part without a type.
    :raises MimeParsingFailed: broken multipart framing.
    :raises MissingSoap: a multipart package with no SOAP part.
    """
    mime_type, params = parse_content_type(content_type)
    if mime_type in SOAP_CONTENT_TYPES:
        return parse_soap(data, content_type), None, []
    if mime_type != MULTIPART_RELATED:
        raise InvalidContentType(f"invalid content type {mime_type!r}")

    boundary = params.get("boundary")
    if not boundary:
        raise InvalidContentType("multipart content type has no boundary")
    if not data.strip(_BOM + b" \t\r\n"):
        raise MissingSoap("multipart message is empty")
    parts = parse_multipart(data, boundary, lenient_end=True)
    for part in parts:
        if part.content_type is None:
            raise InvalidContentType("MIME part has no Content-Type")
    soap_part = parts[0]  # the reference ignores the ``start`` parameter
    return (
        parse_soap(soap_part.body, soap_part.content_type or ""),
        soap_part,
        parts[1:],
    )


def _parse_envelope(raw: bytes, charset: str) -> etree._Element:
    text = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    if not text.strip():
        raise InvalidSoap("message is empty")

    root = parse_xml(_as_utf8(text, charset))
    if root.tag != _ENVELOPE:
        raise InvalidSoap(f"root element is {root.tag!r}, not a SOAP 1.1 Envelope")
    return root


def _as_utf8(text: bytes, charset: str) -> bytes:
    """Re-encode a document in another charset as UTF-8 for the parser only."""
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        raise InvalidContentType(f"unsupported charset {charset!r}") from None
    if codec in ("utf-8", "ascii"):
        return text
    try:
        decoded = text.decode(codec)
    except UnicodeDecodeError as exc:
        raise InvalidSoap(f"message is not valid {charset}") from exc
    except (LookupError, UnicodeError, TypeError, ValueError) as exc:
        # Codecs such as rot13, base64 or punycode are not text encodings.
        raise InvalidContentType(f"unsupported charset {charset!r}") from exc
    if not isinstance(decoded, str):
        raise InvalidContentType(f"unsupported charset {charset!r}")
    return _ENCODING_DECL.sub(rb"\1", decoded.encode("utf-8"), count=1)


def _envelope_children(
    envelope: etree._Element,
) -> tuple[etree._Element | None, etree._Element | None]:
    header = body = None
    for child in _elements(envelope):
        if child.tag == _HEADER and header is None and body is None:
            header = child
        elif child.tag == _BODY and body is None:
            body = child
        elif child.tag == _BODY:
            raise InvalidBody("envelope has more than one Body")
        else:
            raise InvalidSoap(f"unexpected element {child.tag!r} in the Envelope")
    return header, body


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _parse_header(header: etree._Element | None) -> SoapHeader:
    if header is None:
        raise MissingHeader("SOAP message has no Header")

    fields = _header_fields(header)
    client = _identifier(fields, "client", client_from_xml)
    service = _identifier(fields, "service", service_from_xml)
    server_el = fields.get("securityServer")
    security_server = server_from_xml(server_el) if server_el is not None else None

    query_id = _required_text(fields, "id")
    version = _required_text(fields, "protocolVersion")
    if not version.startswith("4."):
        raise InvalidProtocolVersion(f"unsupported protocolVersion {version!r}")

    return SoapHeader(
        client=client,
        service=service,
        security_server=security_server,
        query_id=query_id,
        user_id=_optional_text(fields, "userId"),
        issue=_optional_text(fields, "issue"),
        protocol_version=version,
        represented_party=_represented_party(fields.get("representedParty")),
        request_hash=_request_hash(fields.get("requestHash")),
    )


def _header_fields(header: etree._Element) -> dict[str, etree._Element]:
    fields: dict[str, etree._Element] = {}
    for child in _elements(header):
        qname = etree.QName(child)
        if qname.namespace == XROAD_NS and qname.localname in _XROAD_FIELDS:
            name = qname.localname
        elif child.tag == _REPRESENTED_PARTY:
            name = "representedParty"
        else:
            continue  # other header elements pass through untouched
        if name in fields:
            raise DuplicateHeaderField(f"header field {name!r} appears more than once")
        fields[name] = child
    return fields


def _identifier(
    fields: dict[str, etree._Element],
    name: str,
    convert: Callable[[etree._Element], _T],
) -> _T:
    element = fields.get(name)
    if element is None:
        raise MissingHeaderField(f"Required field {name!r} is missing")
    return convert(element)


def _required_text(fields: dict[str, etree._Element], name: str) -> str:
    element = fields.get(name)
    if element is None or not (element.text or "").strip():
        raise MissingHeaderField(f"Required field {name!r} is missing")
    return element.text or ""


def _optional_text(fields: dict[str, etree._Element], name: str) -> str | None:
    element = fields.get(name)
    return None if element is None else element.text or ""


def _represented_party(element: etree._Element | None) -> tuple[str | None, str] | None:
    if element is None:
        return None
    found: dict[str, str] = {}
    for child in _elements(element):
        qname = etree.QName(child)
        if qname.namespace != REPR_NS or qname.localname not in (
            "partyClass",
            "partyCode",
        ):
            continue
        if qname.localname in found:
            raise DuplicateHeaderField(f"representedParty has two {qname.localname}")
        found[qname.localname] = child.text or ""
    if not found.get("partyCode", "").strip():
        raise MissingHeaderField(
            "Required field 'representedParty/partyCode' is missing"
        )
    return found.get("partyClass"), found["partyCode"]


def _request_hash(element: etree._Element | None) -> tuple[str, str] | None:
    if element is None:
        return None
    return element.get("algorithmId") or "", (element.text or "").strip()


def _check_body(body: etree._Element | None, service: ServiceId) -> str:
    if body is None:
        raise MissingBody("SOAP message has no Body")
    children = _elements(body)
    if len(children) != 1:
        raise InvalidBody(
            f"Body must have exactly one child element, has {len(children)}"
        )

    # The reference tests a prefix, so getPersonResponse matches getPerson.
    local_name = etree.QName(children[0]).localname
    if not local_name.startswith(service.service_code):
        raise InconsistentHeaders(
            f"body element {local_name!r} does not match service code "
            f"{service.service_code!r}"
        )
    return str(children[0].tag)


# -- faults ------------------------------------------------------------------


def _fault_element(body: etree._Element) -> etree._Element | None:
    children = _elements(body)
    return children[0] if children and children[0].tag == _FAULT else None


def _fault_from(body: etree._Element, raw: bytes) -> SoapFault:
    fault = _fault_element(body)
    assert fault is not None
    values: dict[str, etree._Element] = {}
    for child in _elements(fault):
        values.setdefault(etree.QName(child).localname, child)

    code_el = values.get("faultcode")
    code = (code_el.text or "").strip() if code_el is not None else ""
    string_el = values.get("faultstring")
    actor_el = values.get("faultactor")
    return SoapFault(
        code=code,
        string=(string_el.text or "") if string_el is not None else "",
        actor=(actor_el.text or "") if actor_el is not None else None,
        detail=_fault_detail(values.get("detail")),
        raw=raw,
    )


def _fault_detail(detail: etree._Element | None) -> str | None:
    if detail is None:
        return None
    for element in detail.iter():
        if (
            isinstance(element.tag, str)
            and etree.QName(element).localname == "faultDetail"
        ):
            return element.text or ""
    text = "".join(detail.itertext()).strip()
    return text or None


def parse_fault(raw: bytes, content_type: str = FAULT_CONTENT_TYPE) -> SoapFault:
    """Parse a SOAP fault; any other SOAP message is an :class:`InvalidSoap`."""
    _, params = parse_content_type(content_type)
    envelope = _parse_envelope(raw, params.get("charset") or "UTF-8")
    _, body = _envelope_children(envelope)
    if body is None or _fault_element(body) is None:
        raise InvalidSoap("message is not a SOAP fault")
    return _fault_from(body, raw)


def build_fault(code: str, message: str, detail_id: str) -> bytes:
    """Build a security server fault in the exact shape of soap-message.md §10.1."""
    return (
        _XML_DECLARATION
        + b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="' + SOAP_ENV_NS.encode() + b'">'
        + b"<SOAP-ENV:Body><SOAP-ENV:Fault>"
        + b"<faultcode>" + _xml_text(code) + b"</faultcode>"
        + b"<faultstring>" + _xml_text(message) + b"</faultstring>"
        + b"<faultactor></faultactor>"
        + b'<detail><faultDetail xmlns="">' + _xml_text(detail_id)
        + b"</faultDetail></detail>"
        + b"</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )  # fmt: skip


def _xml_text(value: str) -> bytes:
    # Characters XML 1.0 cannot carry at all are replaced, not dropped.
    return escape(_NOT_XML_CHAR.sub("?", value)).encode("utf-8")


# -- SOAPAction --------------------------------------------------------------


def check_soap_action(value: str | None) -> None:
    """Allow an absent, empty or ``""`` SOAPAction, or a quoted URI (§7).

    :raises InvalidSoapAction: any other value.
    """
    if value is None:
        return
    text = value.strip()
    if text in ("", '""'):
        return
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        raise InvalidSoapAction(f"SOAPAction must be a quoted string: {value!r}")
    if not _is_uri_reference(text[1:-1]):
        raise InvalidSoapAction(f"SOAPAction is not a URI: {value!r}")


_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def _is_uri_reference(text: str) -> bool:
    """An RFC 3986 URI reference, checked for characters and escapes only."""
    if not _URI_CHARS.match(text) or re.search(r"%(?![0-9A-Fa-f]{2})", text):
        return False
    if ":" in text.split("/", 1)[0] and not _SCHEME.match(text):
        return False  # a colon in the first segment must end a valid scheme
    return text.count("#") <= 1


# -- requestHash -------------------------------------------------------------


def request_hash(request_soap_bytes: bytes) -> str:
    """Base64 SHA-512 of the request SOAP bytes exactly as given (BOM included)."""
    return b64(sha512(request_soap_bytes))


# A second parser, used only after parse_xml accepted the same bytes: it has
# the same hardening but keeps CDATA sections, so re-serialising loses nothing.
_KEEP_CDATA_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    remove_comments=False,
    remove_pis=False,
    collect_ids=False,
    strip_cdata=False,
)


def insert_request_hash(
    response_raw: bytes, request_hash_b64: str, content_type: str | None = None
) -> bytes:
    """Replace any ``requestHash`` with ours, right after ``id`` (soap-message.md §4).

    The result is re-serialised as UTF-8 with an XML declaration; comments,
    CDATA sections and all other nodes are kept. ``content_type`` gives the
    charset the response was sent in (UTF-8 when absent).

    :raises InvalidSoap: not a SOAP envelope.
    :raises MissingHeader: / :raises MissingHeaderField: no header or no ``id``.
    """
    text = response_raw[len(_BOM) :] if response_raw.startswith(_BOM) else response_raw
    if not text.strip():
        raise InvalidSoap("message is empty")
    if content_type is not None:
        charset = content_type_param(content_type, "charset")
        if charset:
            text = _as_utf8(text, charset)
    parse_xml(text)  # the hardening gate; the tree below is only for rewriting
    root = etree.fromstring(text, _KEEP_CDATA_PARSER)
    if root.tag != _ENVELOPE:
        raise InvalidSoap("root element is not a SOAP 1.1 Envelope")

    header, _ = _envelope_children(root)
    if header is None:
        raise MissingHeader("SOAP message has no Header")
    for old in header.findall(_REQUEST_HASH):
        header.remove(old)  # its tail (indentation) goes with it
    query_id = header.find(f"{{{XROAD_NS}}}id")
    if query_id is None:
        raise MissingHeaderField("Required field 'id' is missing")

    new = query_id.makeelement(_REQUEST_HASH, {"algorithmId": SHA512_URI})
    new.text = request_hash_b64
    _insert_after(query_id, new)
    if query_id.prefix is not None:
        _keep_prefix(new, query_id.prefix)

    tree = root.getroottree()
    body: bytes = etree.tostring(tree, encoding="UTF-8", xml_declaration=False)
    return _XML_DECLARATION + b"\n" + body


def _insert_after(anchor: etree._Element, new: etree._Element) -> None:
    previous = anchor.getprevious()
    indent = previous.tail if previous is not None else anchor.getparent().text
    new.tail = anchor.tail
    if indent is not None and not indent.strip():
        anchor.tail = indent
    anchor.addnext(new)


def _keep_prefix(element: etree._Element, prefix: str) -> None:
    """Make sure the new element is written with the same prefix as ``id``."""
    if element.prefix == prefix:
        return
    # Another prefix for the same namespace won while inserting. An element
    # created in place keeps its own declaration, so build it at the end of
    # the header and move the siblings that should follow it behind it.
    header = element.getparent()
    followers = list(element.itersiblings())
    replacement = etree.SubElement(
        header, element.tag, dict(element.attrib), nsmap={prefix: XROAD_NS}
    )
    replacement.text, replacement.tail = element.text, element.tail
    header.remove(element)
    for sibling in followers:
        header.append(sibling)


def check_consistency(request: SoapHeader, response: SoapHeader) -> None:
    """Compare the header fields the response must copy (soap-message.md §5).

    :raises InconsistentHeaders: the first field that differs.
    """
    pairs = (
        ("client", request.client, response.client),
        ("service", request.service, response.service),
        ("id", request.query_id, response.query_id),
        ("userId", request.user_id, response.user_id),
        ("issue", request.issue, response.issue),
        ("representedParty", request.represented_party, response.represented_party),
    )
    for name, expected, found in pairs:
        if expected != found:
            raise InconsistentHeaders(
                f"response {name} {found!s} differs from request {expected!s}"
            )


def check_response(
    request: SoapHeader, response: SoapMessage, request_hash_b64: str
) -> None:
    """The consumer's checks of a SOAP response (soap-message.md §4-5).

    :raises InconsistentResponseHeaders: a copied header field differs.
    :raises InconsistentResponse: ``requestHash`` absent, of another
        algorithm, or different from ``request_hash_b64``.
    """
    try:
        check_consistency(request, response.header)
    except InconsistentHeaders as exc:
        raise InconsistentResponseHeaders(exc.message) from exc

    found = response.header.request_hash
    if found is None:
        raise InconsistentResponse("response has no requestHash")
    algorithm, value = found
    if algorithm != SHA512_URI:
        raise InconsistentResponse(f"unexpected requestHash algorithm {algorithm!r}")
    try:
        matches = unb64(value) == unb64(request_hash_b64)
    except (InvalidRequest, binascii.Error):
        matches = False
    if not matches:
        raise InconsistentResponse("requestHash does not match the request")


# -- building ----------------------------------------------------------------


def build_soap_request(
    client: ClientId,
    service: ServiceId,
    query_id: str,
    body_xml: bytes | etree._Element,
    user_id: str | None = None,
    protocol_version: str = "4.0",
    *,
    issue: str | None = None,
    security_server: SecurityServerId | None = None,
    represented_party: tuple[str | None, str] | None = None,
) -> bytes:
    """Build a request envelope with the header in the emitting order of §3."""
    nsmap: dict[str | None, str] = {
        "SOAP-ENV": SOAP_ENV_NS,
        "xrd": XROAD_NS,
        "id": ID_NS,
    }
    envelope = etree.Element(_ENVELOPE, nsmap=nsmap)
    header = etree.SubElement(envelope, _HEADER)

    header.append(to_xml(client, f"{{{XROAD_NS}}}client", nsmap))
    header.append(to_xml(service, f"{{{XROAD_NS}}}service", nsmap))
    if security_server is not None:
        header.append(to_xml(security_server, f"{{{XROAD_NS}}}securityServer", nsmap))
    _text_child(header, "id", query_id)
    if user_id is not None:
        _text_child(header, "userId", user_id)
    if issue is not None:
        _text_child(header, "issue", issue)
    _text_child(header, "protocolVersion", protocol_version)
    if represented_party is not None:
        _represented_party_child(header, represented_party)

    body = etree.SubElement(envelope, _BODY)
    body.append(parse_xml(body_xml) if isinstance(body_xml, bytes) else body_xml)
    etree.cleanup_namespaces(envelope)
    tree: bytes = etree.tostring(envelope, encoding="UTF-8", xml_declaration=False)
    return _XML_DECLARATION + b"\n" + tree


def _text_child(parent: etree._Element, name: str, value: str) -> None:
    etree.SubElement(parent, f"{{{XROAD_NS}}}{name}").text = value


def _represented_party_child(
    parent: etree._Element, party: tuple[str | None, str]
) -> None:
    element = etree.SubElement(parent, _REPRESENTED_PARTY, nsmap={"repr": REPR_NS})
    party_class, party_code = party
    if party_class is not None:
        etree.SubElement(element, f"{{{REPR_NS}}}partyClass").text = party_class
    etree.SubElement(element, f"{{{REPR_NS}}}partyCode").text = party_code
