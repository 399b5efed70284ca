"""Core: the X-Road REST message protocol r1 (rest-message.md, identifiers.md §5).

Request routing data from the URL and ``X-Road-*`` headers, the canonical
request/response header parts carried between security servers
(rest-message.md §4, transport.md §8), the request hash, the response
headers and checks of §3, and the error documents of §6.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .digests import b64, sha512, unb64
from .errors import (
    BadRequest,
    InconsistentResponse,
    InvalidClientIdentifier,
    InvalidHttpMethod,
    InvalidRequest,
    InvalidSecurityServer,
    XRoadError,
    normalize_code,
)
from .identifiers import (
    ClientId,
    SecurityServerId,
    ServiceId,
    decode_component,
    split_encoded,
)

PROTOCOL_PREFIX = "/r1/"
METHODS = frozenset(
    {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"}
)

# rest-message.md §2: never carried across, in either direction.
FILTERED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "user-agent",
        "server",
        "content-length",
        "expect",
    }
)

HEADER_CLIENT = "x-road-client"
HEADER_ID = "x-road-id"
HEADER_USER_ID = "x-road-userid"
HEADER_ISSUE = "x-road-issue"
HEADER_SECURITY_SERVER = "x-road-security-server"
HEADER_REPRESENTED_PARTY = "x-road-represented-party"
HEADER_REQUEST_ID = "x-road-request-id"
HEADER_REQUEST_HASH = "x-road-request-hash"
HEADER_SERVICE = "x-road-service"
HEADER_ERROR = "x-road-error"

# Set by the security servers; a client's or a service's own values are dropped.
_REQUEST_OWNED = frozenset({HEADER_REQUEST_ID, HEADER_REQUEST_HASH})
_RESPONSE_OWNED = frozenset(
    {HEADER_ID, HEADER_CLIENT, HEADER_REQUEST_ID, HEADER_REQUEST_HASH, HEADER_SERVICE}
)

Headers = list[tuple[str, str]]

_XML_ERROR_TYPES = {
    "text/xml": "text/xml",
    "application/xml": "application/xml",
    "text/*": "text/xml",
}


# -- the request from the information system ---------------------------------


def parse_rest_path(raw_path: str) -> tuple[ServiceId, str]:
    """Split ``/r1/INST/CLASS/CODE/SUB/SERVICE[/path]`` (rest-message.md §1).

    Returns the service id, each segment percent-decoded on its own, and
    the raw service path (still encoded, leading ``/`` kept, "" if none).

    :raises BadRequest: not an r1 path, or a bad service id.
    """
    path = raw_path.split("?", 1)[0]
    if "#" in path:
        raise BadRequest(f"request URI has a fragment: {raw_path!r}")
    if not path.startswith(PROTOCOL_PREFIX):
        raise BadRequest(f"request path does not start with /r1/: {raw_path!r}")

    segments = path[len(PROTOCOL_PREFIX) :].split("/", 5)
    if len(segments) < 5 or not all(segments[:5]):
        raise BadRequest(f"Cannot parse REST request URI: {raw_path!r}")
    try:
        decoded = [decode_component(segment) for segment in segments[:5]]
        service = ServiceId(ClientId(*decoded[:4]), decoded[4])
    except XRoadError as exc:
        raise BadRequest(f"invalid service id in {raw_path!r}: {exc}") from exc

    service_path = "/" + segments[5] if len(segments) == 6 else ""
    return service, service_path


@dataclass(frozen=True, slots=True)
class RestRequestInfo:
    """What the consumer security server reads from a REST request (§1-2)."""

    method: str
    service: ServiceId
    service_path: str  # raw, still percent-encoded; "" if none
    query: str | None  # raw query string without "?", None if absent
    client: ClientId
    query_id: str | None  # None: the consumer generates one
    user_id: str | None
    issue: str | None
    represented_party: tuple[str | None, str] | None
    target_security_server: SecurityServerId | None
    headers: tuple[tuple[str, str], ...]  # as received, in order


def parse_rest_request(
    method: str, raw_path: str, query: str | None, headers: Headers
) -> RestRequestInfo:
    """Read routing data from a REST request in the reference order.

    :raises InvalidHttpMethod: a method outside rest-message.md §1.
    :raises BadRequest: an unparsable path or represented party.
    :raises InvalidClientIdentifier: ``X-Road-Client`` missing or malformed.
    :raises InvalidSecurityServer: a malformed ``X-Road-Security-Server``.
    """
    if method not in METHODS:
        raise InvalidHttpMethod(f"HTTP method {method!r} is not supported")
    service, service_path = parse_rest_path(raw_path)
    check_single(headers)

    client_value = last_header(headers, HEADER_CLIENT)
    if client_value is None:
        raise InvalidClientIdentifier("X-Road-Client header is missing")
    try:
        client = ClientId.parse_slash(client_value)
    except XRoadError as exc:
        raise InvalidClientIdentifier(
            f"invalid X-Road-Client {client_value!r}"
        ) from exc

    return RestRequestInfo(
        method=method,
        service=service,
        service_path=service_path,
        query=query,
        client=client,
        query_id=last_header(headers, HEADER_ID),
        user_id=last_header(headers, HEADER_USER_ID),
        issue=last_header(headers, HEADER_ISSUE),
        represented_party=_represented_party(headers),
        target_security_server=_target_server(headers),
        headers=tuple(headers),
    )


def _target_server(headers: Headers) -> SecurityServerId | None:
    value = last_header(headers, HEADER_SECURITY_SERVER)
    if value is None:
        return None
    try:
        return SecurityServerId.parse_slash(value)
    except XRoadError as exc:
        raise InvalidSecurityServer(
            f"invalid X-Road-Security-Server {value!r}"
        ) from exc


def _represented_party(headers: Headers) -> tuple[str | None, str] | None:
    value = last_header(headers, HEADER_REPRESENTED_PARTY)
    if value is None:
        return None
    try:
        parts = split_encoded(value)
    except InvalidRequest as exc:
        raise BadRequest(f"invalid X-Road-Represented-Party {value!r}") from exc
    if len(parts) not in (1, 2) or not all(p.strip() for p in parts):
        raise BadRequest(f"invalid X-Road-Represented-Party {value!r}")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


# X-Road headers that name one thing. rest-message.md §2 lets the last of a
# repeated X-Road-Client win; we refuse the ambiguity instead of guessing.
SINGLE_VALUED = (
    HEADER_CLIENT,
    HEADER_ID,
    HEADER_USER_ID,
    HEADER_ISSUE,
    HEADER_SECURITY_SERVER,
    HEADER_REPRESENTED_PARTY,
)


# The X-Road headers a response part names once (transport.md §8).
SINGLE_VALUED_RESPONSE = (
    HEADER_ID,
    HEADER_CLIENT,
    HEADER_SERVICE,
    HEADER_REQUEST_ID,
    HEADER_REQUEST_HASH,
)


def check_single(
    headers: Headers | tuple[tuple[str, str], ...],
    names: tuple[str, ...] = SINGLE_VALUED,
) -> None:
    """Refuse a repeated single-valued header: readers might take different copies.

    :raises BadRequest: one of ``names`` appears more than once.
    """
    seen = [name.lower() for name, _ in headers]
    for name in names:
        if seen.count(name) > 1:
            raise BadRequest(f"header {name} appears more than once")


def last_header(headers: Headers, name: str) -> str | None:
    """The last value of a header, names compared case-insensitively."""
    wanted = name.lower()
    found = None
    for key, value in headers:
        if key.lower() == wanted:
            found = value
    return found


def forwardable_headers(headers: Headers) -> Headers:
    """Drop filtered headers and a client's X-Road-Request-Id/-Hash (§2)."""
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in FILTERED_HEADERS and name.lower() not in _REQUEST_OWNED
    ]


# -- header parts between security servers -----------------------------------


@dataclass(frozen=True, slots=True)
class RestRequestPart:
    method: str
    path: str  # raw, starting with /r1/
    query: str | None  # raw, None when the URI had no "?"
    headers: tuple[tuple[str, str], ...]

    def to_bytes(self) -> bytes:
        """The canonical serialisation the request hash covers (§4)."""
        uri = self.path if self.query is None else f"{self.path}?{self.query}"
        return _lines([self.method, uri], self.headers)


@dataclass(frozen=True, slots=True)
class RestResponsePart:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def to_bytes(self) -> bytes:
        return _lines([str(self.status), self.reason], self.headers)


def build_request_part(
    method: str,
    raw_path_and_query: str,
    headers: Headers,
    request_id: str,
    generated_query_id: str | None = None,
) -> bytes:
    """Build the canonical REST request header part (rest-message.md §4).

    Filtered headers and a client's X-Road-Request-Id/-Hash are dropped
    here, so the part always re-serialises to itself on the provider side.
    """
    if "#" in raw_path_and_query:
        raise BadRequest("request URI must not carry a fragment")
    extra = [(HEADER_REQUEST_ID, request_id)]
    if generated_query_id is not None:
        extra.append((HEADER_ID, generated_query_id))
    return _lines([method, raw_path_and_query], forwardable_headers(headers) + extra)


def build_response_part(status: int, reason: str, headers: Headers) -> bytes:
    """Build the REST response header part (transport.md §8)."""
    if not 100 <= status <= 999:
        raise InvalidRequest(f"invalid HTTP status {status!r}")
    return _lines([str(status), reason], headers)


def _lines(first: list[str], headers: Headers | tuple[tuple[str, str], ...]) -> bytes:
    lines = list(first)
    for name, value in headers:
        if not name or ":" in name:
            raise BadRequest(f"invalid header name {name!r}")
        lines.append(f"{name}:{value}")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise BadRequest(f"line break inside a REST header part line {line!r}")
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def parse_request_part(data: bytes) -> RestRequestPart:
    """Parse an ``application/x-road-rest-request`` part.

    :raises BadRequest: not CRLF-framed, a bad method line or header line,
        or a filtered header (the reference rejects those).
    """
    lines = _split_lines(data)
    if len(lines) < 2 or lines[0] not in METHODS or not lines[1].startswith("/"):
        raise BadRequest("malformed REST request line")
    path, question, query = lines[1].partition("?")
    headers = _header_lines(lines[2:])
    for name, _ in headers:
        if name.lower() in FILTERED_HEADERS:
            raise BadRequest(f"REST request part carries filtered header {name!r}")
    # The server proxy checks one copy and the service might read another.
    check_single(headers)
    return RestRequestPart(lines[0], path, query if question else None, headers)


def parse_response_part(data: bytes) -> RestResponsePart:
    """Parse an ``application/x-road-rest-response`` part."""
    lines = _split_lines(data)
    if len(lines) < 2 or not (len(lines[0]) == 3 and lines[0].isdigit()):
        raise BadRequest("malformed REST response status line")
    headers = _header_lines(lines[2:])
    check_single(headers, SINGLE_VALUED_RESPONSE)
    return RestResponsePart(int(lines[0]), lines[1], headers)


def is_response_part(data: bytes) -> bool:
    """A header part that starts with a digit is a response (transport.md §8)."""
    return data[:1].isdigit()


def _split_lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("REST header part is not UTF-8") from exc
    if not text.endswith("\r\n"):
        raise BadRequest("REST header part must end with CRLF")
    lines = text[:-2].split("\r\n")
    if any("\n" in line or "\r" in line for line in lines):
        raise BadRequest("REST header part has a bare CR or LF")
    return lines


def _header_lines(lines: list[str]) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise BadRequest(f"malformed header line {line!r}")
        headers.append((name, value))
    return tuple(headers)


# -- request hash --------------------------------------------------------------


def rest_request_hash(header_part: bytes, body: bytes | None) -> str:
    """``b64(H(H(part) || H(body)))``, or ``b64(H(part))`` without a body (§4)."""
    return rest_request_hash_from_digest(header_part, sha512(body) if body else None)


def rest_request_hash_from_digest(header_part: bytes, body_digest: bytes | None) -> str:
    """The same hash, given the SHA-512 of a body that was hashed while streamed."""
    if body_digest is None:
        return b64(sha512(header_part))
    return b64(sha512(sha512(header_part) + body_digest))


# -- the response --------------------------------------------------------------


def response_headers_for_client(
    service_headers: Headers,
    *,
    query_id: str,
    client: ClientId,
    service: ServiceId,
    request_id: str,
    request_hash: str,
) -> Headers:
    """The service's headers as the provider passes them back (§3).

    Filtered headers and any X-Road-Id/-Client/-Service/-Request-Id/
    -Request-Hash the service set are dropped; ours are appended in order.
    """
    kept = [
        (name, value)
        for name, value in service_headers
        if name.lower() not in FILTERED_HEADERS and name.lower() not in _RESPONSE_OWNED
    ]
    return kept + [
        (HEADER_ID, query_id),
        (HEADER_CLIENT, client.slash()),
        (HEADER_SERVICE, service.slash()),
        (HEADER_REQUEST_ID, request_id),
        (HEADER_REQUEST_HASH, request_hash),
    ]


def check_rest_response(
    headers: Headers,
    *,
    query_id: str,
    client: ClientId,
    service: ServiceId,
    request_id: str,
    request_hash: str,
) -> None:
    """The consumer's checks of the response headers (§3); last value wins.

    :raises InconsistentResponse: a value is missing or differs.
    """
    # REST service ids have no version (identifiers.md §5.2).
    rest_service = ServiceId(service.provider, service.service_code)
    _expect(headers, HEADER_ID, query_id, str)
    _expect(headers, HEADER_CLIENT, client, ClientId.parse_slash)
    _expect(headers, HEADER_SERVICE, rest_service, ServiceId.parse_slash)
    _expect(headers, HEADER_REQUEST_ID, request_id, str)
    _expect(headers, HEADER_REQUEST_HASH, unb64(request_hash), unb64)


def _expect(
    headers: Headers, name: str, expected: object, convert: Callable[[str], object]
) -> None:
    value = last_header(headers, name)
    if value is None:
        raise InconsistentResponse(f"response has no {name} header")
    try:
        found = convert(value)
    except XRoadError:
        found = None  # unparsable: reported as a mismatch below
    if found != expected:
        raise InconsistentResponse(
            f"response {name} {value!r} does not match the request"
        )


# -- errors --------------------------------------------------------------------


def build_error(
    code: str, message: str, detail: str, accept: str | None
) -> tuple[int, str, bytes]:
    """Build a security server error document (rest-message.md §6).

    Returns (status, content type, body): XML when ``Accept`` names
    ``text/xml``, ``application/xml`` or ``text/*``, JSON otherwise; 500 for
    ``Server.*`` codes and 400 for all others. The caller also sends
    ``X-Road-Error: {code}``.
    """
    status = 500 if normalize_code(code).startswith("server.") else 400
    xml_type = _xml_error_type(accept)
    if xml_type is None:
        document = {"type": code, "message": message, "detail": detail}
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        return status, "application/json", body.encode("utf-8")

    xml = (
        f"<error><type>{escape(code)}</type><message>{escape(message)}</message>"
        f"<detail>{escape(detail)}</detail></error>"
    )
    return status, f"{xml_type}; charset=UTF-8", xml.encode("utf-8")


def _xml_error_type(accept: str | None) -> str | None:
    if not accept:
        return None
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media in _XML_ERROR_TYPES:
            return _XML_ERROR_TYPES[media]
    return None
