"""End to end: REST r1 conformance through both security servers (rest-message.md).

A recording echo service stands behind the provider's security server; each
test calls the consumer's client proxy -- with aiohttp, or with raw sockets
where aiohttp would normalise what we send -- and checks what the service
received and what the client got back. Known deviations are strict xfails.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from lxml import etree
from yarl import URL

from demo.ecosystem import (
    AGENCY,
    BENEFITS_SUBSYSTEM,
    HOST,
    REGISTER,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    free_ports,
)
from protocol.identifiers import SecurityServerId, ServiceId
from security_server.serverconf import ServerConf

from .rest_echo_service import EchoService, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ECHO = ServiceId(REGISTRY_SUBSYSTEM, "echo")  # any method, any path
GUARDED = ServiceId(REGISTRY_SUBSYSTEM, "guarded")  # GET /public/** only
DEAD = ServiceId(REGISTRY_SUBSYSTEM, "dead")  # its URL has nobody listening
SOAP_ONLY = ServiceId(REGISTRY_SUBSYSTEM, "soapOnly")  # a SOAP service, no version
CLIENT = BENEFITS_SUBSYSTEM.slash()
PROVIDER_SERVER = SecurityServerId(REGISTER, "ss-register")
CONSUMER_SERVER = SecurityServerId(AGENCY, "ss-agency")

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]
ENTITY_METHODS = {"POST", "PUT", "PATCH"}
# rest-message.md §2, written out here rather than taken from the product.
FILTERED = {
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
XROAD_RESPONSE = [
    "x-road-id",
    "x-road-client",
    "x-road-service",
    "x-road-request-id",
    "x-road-request-hash",
]
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

Headers = list[tuple[str, str]]


def r1(service: ServiceId, rest: str = "") -> str:
    return f"/r1/{service.slash()}{rest}"


# -- fixtures ------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def echo(ecosystem: Ecosystem) -> AsyncIterator[EchoService]:
    service = EchoService()
    port, dead_port = free_ports(2)
    await service.start(HOST, port)
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        base = f"http://{HOST}:{port}"
        serverconf.add_service(ECHO, kind="REST", url=f"{base}/base")
        serverconf.grant(ECHO, BENEFITS_SUBSYSTEM, method="*", path="**")
        serverconf.add_service(GUARDED, kind="REST", url=f"{base}/guarded")
        serverconf.grant(GUARDED, BENEFITS_SUBSYSTEM, method="GET", path="/public/**")
        serverconf.add_service(DEAD, kind="REST", url=f"http://{HOST}:{dead_port}/")
        serverconf.grant(DEAD, BENEFITS_SUBSYSTEM)
        serverconf.add_service(SOAP_ONLY, kind="SOAP", url=f"{base}/soap")
        serverconf.grant(SOAP_ONLY, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()
    yield service
    await service.stop()


@pytest.fixture(autouse=True)
def fresh(echo: EchoService) -> Iterator[None]:
    echo.reset()
    yield
    echo.reset()


# -- clients -------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]

    def error_type(self) -> str:
        """The ``type`` of a security server error document, JSON or XML."""
        content_type = self.header("Content-Type") or ""
        if "xml" in content_type:
            return etree.fromstring(self.body).findtext("type") or ""
        return json.loads(self.body)["type"]


async def call(
    ecosystem: Ecosystem,
    method: str,
    target: str,
    headers: Headers | None = None,
    body: bytes | None = None,
) -> Answer:
    """Call the client proxy with aiohttp, the target sent as it is written."""
    sent = [("X-Road-Client", CLIENT)] if headers is None else headers
    url = URL(ecosystem.client_proxy_url + target, encoded=True)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(
            method, url, headers=sent, data=body, allow_redirects=False
        ) as response:
            raw = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in response.raw_headers
            ]
            return Answer(response.status, raw, await response.read())


async def raw_call(
    ecosystem: Ecosystem,
    method: str,
    target: str,
    headers: Headers,
    body: bytes = b"",
    *,
    chunks: list[bytes] | None = None,
) -> Answer:
    """Send bytes exactly as written; framing comes from ``body`` or ``chunks``."""
    lines = [f"{method} {target} HTTP/1.1", *_fmt(headers)]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.insert(1, f"Host: {HOST}")
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        if body or method in ENTITY_METHODS:
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    port = ecosystem.ports["agency_client"]
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head + payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return parse_raw_answer(data)


def _fmt(headers: Headers) -> list[str]:
    return [f"{name}: {value}" for name, value in headers]


def parse_raw_answer(data: bytes) -> Answer:
    """Parse one HTTP/1.1 response read to EOF, skipping interim 1xx answers."""
    while True:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = [
            (name, value.strip())
            for name, _, value in (line.partition(":") for line in header_lines)
        ]
        if 100 <= status < 200:
            data = rest
            continue
        break
    answer = Answer(status, headers, rest)
    if "chunked" in (answer.header("Transfer-Encoding") or "").lower():
        answer.body = _dechunk(rest)
    return answer


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


# -- §1 methods ----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_each_method_reaches_the_service_with_a_body_only_when_it_carries_one(
    ecosystem: Ecosystem, echo: EchoService, method: str
) -> None:
    payload = b'{"payload":"sent with ' + method.encode() + b'"}'
    answer = await raw_call(
        ecosystem,
        method,
        r1(ECHO, "/items/1"),
        [("X-Road-Client", CLIENT), ("Content-Type", "application/json")],
        payload,
    )

    assert answer.status == 200, answer.body
    assert answer.header("X-Road-Error") is None
    assert [r.method for r in echo.received] == [method]
    expected = payload if method in ENTITY_METHODS else b""
    assert echo.last.body == expected
    assert answer.body == (b"" if method == "HEAD" else b"echo")


@pytest.mark.parametrize(
    "method",
    [
        "PROPFIND",
        "MKCOL",
        pytest.param(
            "FOO",
            marks=pytest.mark.xfail(
                strict=True,
                reason="aiohttp's HTTP parser answers a method it does not know with "
                "a plain-text 400 before clientproxy.ClientProxy.handle runs, so the "
                "client gets no X-Road error document",
            ),
        ),
    ],
)
async def test_an_unknown_method_is_refused_as_a_client_error(
    ecosystem: Ecosystem, echo: EchoService, method: str
) -> None:
    answer = await raw_call(
        ecosystem, method, r1(ECHO, "/items"), [("X-Road-Client", CLIENT)]
    )

    assert answer.status == 400
    assert answer.header("X-Road-Error") == "Client.InvalidHttpMethod"
    assert answer.error_type() == "Client.InvalidHttpMethod"
    assert echo.received == []


async def test_a_path_outside_r1_goes_to_the_soap_handler(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await raw_call(
        ecosystem, "GET", "/r2/DEMO/GOV/1001/REGISTRY/echo", [("X-Road-Client", CLIENT)]
    )

    assert answer.status == 200
    fault = etree.fromstring(answer.body).find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode") == "Client.InvalidHttpMethod"
    assert echo.received == []


async def test_a_method_unknown_to_http_never_reaches_the_service(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await raw_call(
        ecosystem, "FOO", r1(ECHO, "/items"), [("X-Road-Client", CLIENT)]
    )

    assert answer.status == 400
    assert echo.received == []


# -- §2 request headers ----------------------------------------------------------


async def test_user_headers_reach_the_service_unmodified_and_in_order(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    user = [
        ("X-Trace", "first"),
        ("Content-Type", 'application/json; charset=utf-8; profile="urn:x:a,b"'),
        ("Accept", "application/hal+json;q=0.9, text/plain;q=0.1"),
        ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
        ("Cache-Control", "no-cache"),
        ("x-MiXeD-Case", "Keeps  Inner   Spaces"),
        ("X-Road-Custom-Extension", "end-to-end"),
        ("X-Powered-By", "consumer-is"),
        ("X-Trace", "second"),
    ]
    body = '{"name":"Ada","city":"Tartu \u00e4"}'.encode()
    answer = await raw_call(
        ecosystem, "POST", r1(ECHO, "/people"), [("X-Road-Client", CLIENT), *user], body
    )

    assert answer.status == 200, answer.body
    wanted = {name.lower() for name, _ in user}
    seen = [(k, v) for k, v in echo.last.headers if k.lower() in wanted]
    assert seen == user
    assert echo.last.body == body


async def test_no_content_type_is_added_when_the_client_sent_none(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await raw_call(
        ecosystem, "POST", r1(ECHO, "/untyped"), [("X-Road-Client", CLIENT)], b"raw"
    )

    assert answer.status == 200, answer.body
    assert echo.last.body == b"raw"
    assert echo.last.all("Content-Type") == []


async def test_non_ascii_header_bytes_pass_unchanged_both_ways(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    value = "Tartu \u00e4"  # sent as UTF-8 bytes; both ends read them as latin-1
    on_the_wire = value.encode("utf-8").decode("latin-1")
    echo.queue(Reply(200, [("Content-Type", "text/plain"), ("X-Place", value)], b"x"))
    answer = await raw_call(
        ecosystem,
        "GET",
        r1(ECHO, "/utf8"),
        [("X-Road-Client", CLIENT), ("X-Place", value)],
    )

    assert answer.status == 200, answer.body
    assert echo.last.all("X-Place") == [on_the_wire]
    assert answer.all("X-Place") == [on_the_wire]


async def test_the_service_receives_x_road_headers_and_a_generated_id(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await call(ecosystem, "GET", r1(ECHO, "/ids"))

    assert answer.status == 200
    got = echo.last
    assert got.all("X-Road-Client") == [CLIENT]
    request_ids = got.all("x-road-request-id")
    assert len(request_ids) == 1
    assert re.fullmatch(UUID_RE, request_ids[0])
    (query_id,) = got.all("x-road-id")
    assert re.fullmatch(f"DEMO-{UUID_RE}", query_id)
    # The same values come back to the client.
    assert answer.header("x-road-id") == query_id
    assert answer.header("x-road-request-id") == request_ids[0]


async def test_optional_x_road_headers_are_forwarded_verbatim(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    sent = [
        ("X-Road-Client", CLIENT),
        ("X-Road-Id", "my-own id/1"),
        ("X-Road-UserId", "EE38001010000"),
        ("X-Road-Issue", "case 42/2024"),
        ("X-Road-Represented-Party", "COM/12345"),
    ]
    answer = await call(ecosystem, "GET", r1(ECHO, "/optional"), sent)

    assert answer.status == 200, answer.body
    got = echo.last
    assert [
        (k, v)
        for k, v in got.headers
        if k.lower().startswith("x-road-") and k.lower() != "x-road-request-id"
    ] == sent
    assert answer.header("x-road-id") == "my-own id/1"


async def test_a_client_cannot_set_request_id_or_hash(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    sent = [
        ("X-Road-Client", CLIENT),
        ("X-Road-Request-Id", "11111111-1111-1111-1111-111111111111"),
        ("X-Road-Request-Hash", "Zm9yZ2Vk"),
    ]
    answer = await call(ecosystem, "GET", r1(ECHO, "/forged"), sent)

    assert answer.status == 200, answer.body
    request_ids = echo.last.all("X-Road-Request-Id")
    assert len(request_ids) == 1
    assert request_ids[0] != sent[1][1]
    assert echo.last.all("X-Road-Request-Hash") == []
    assert answer.header("x-road-request-hash") != "Zm9yZ2Vk"


async def test_a_repeated_x_road_client_header_is_refused_not_guessed(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    # rest-message.md §2 lets the last one win; xgate refuses the ambiguity.
    echo.reset()
    sent = [("X-Road-Client", "DEMO/GOV/9999/NOBODY"), ("X-Road-Client", CLIENT)]
    answer = await call(ecosystem, "GET", r1(ECHO, "/twice"), sent)

    assert answer.status == 400, answer.body
    assert answer.header("X-Road-Error") == "Client.BadRequest"
    assert echo.received == []


async def test_hop_by_hop_and_origin_headers_do_not_reach_the_service(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    hop = [
        ("Keep-Alive", "timeout=77, max=7"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("Proxy-Authenticate", "Basic realm=consumer"),
        ("TE", "trailers, deflate;q=0.5"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("User-Agent", "secret-agent/0.0.7"),
        ("Server", "consumer-internal/1.0"),
    ]
    answer = await raw_call(
        ecosystem,
        "POST",
        r1(ECHO, "/hop"),
        [("X-Road-Client", CLIENT), ("Host", "internal.consumer.example"), *hop],
        b"body",
    )

    assert answer.status == 200, answer.body
    got = echo.last
    for name, value in hop:
        assert value not in got.all(name), name
    assert "internal.consumer.example" not in got.all("Host")
    assert got.body == b"body"


async def test_expect_continue_is_answered_locally(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await raw_call(
        ecosystem,
        "PUT",
        r1(ECHO, "/expect"),
        [("X-Road-Client", CLIENT), ("Expect", "100-continue")],
        b"after continue",
    )

    assert answer.status == 200, answer.body
    assert echo.last.all("Expect") == []
    assert echo.last.body == b"after continue"


# -- §1 paths and queries ------------------------------------------------------------

PRESERVED = [
    ("/a%2Fb", None),
    ("/c%20d", None),
    ("/e+f", None),
    ("/g;h=1;i=2/j", None),
    ("/%C3%A4%E2%82%AC/%F0%9F%98%80", None),
    ("/q", "q=1+2&r=%2B%20&u=%C3%A4"),
    ("/q", "a=1&a=2&b=&c"),
    ("/q", "filter=(a;b),c:d@e!$'*"),
    ("", "only=query"),
]
EMPTY_QUERY = "serverproxy._join_url drops a query that is present but empty"


def _deviation(rest: str, query: str | None, name: str, reason: str) -> object:
    mark = pytest.mark.xfail(strict=True, reason=reason)
    return pytest.param(rest, query, id=name, marks=mark)


NORMALISED = [
    pytest.param("/%c3%a4", None, id="lowercase-hex"),
    pytest.param("/%7E%41", None, id="encoded-unreserved"),
    pytest.param("/q", "s=a%2Fb&t=%41", id="query-escapes"),
    pytest.param("/x/../y", None, id="dot-segment"),
    _deviation("/q", "", "empty-query", EMPTY_QUERY),
]


async def _forward(
    ecosystem: Ecosystem, echo: EchoService, rest: str, query: str | None
) -> None:
    target = r1(ECHO, rest) + ("" if query is None else f"?{query}")
    answer = await raw_call(ecosystem, "GET", target, [("X-Road-Client", CLIENT)])
    assert answer.status == 200, answer.body
    assert echo.last.raw_path == "/base" + rest
    assert echo.last.raw_query == query


@pytest.mark.parametrize(("rest", "query"), PRESERVED)
async def test_path_and_query_reach_the_service_exactly(
    ecosystem: Ecosystem, echo: EchoService, rest: str, query: str | None
) -> None:
    await _forward(ecosystem, echo, rest, query)


@pytest.mark.parametrize(("rest", "query"), NORMALISED)
async def test_path_and_query_reach_the_service_without_normalisation(
    ecosystem: Ecosystem, echo: EchoService, rest: str, query: str | None
) -> None:
    await _forward(ecosystem, echo, rest, query)


async def test_encoded_path_through_aiohttp_client(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await call(ecosystem, "GET", r1(ECHO, "/v1/a%2Fb/%C3%A4?x=%20+y"))

    assert answer.status == 200, answer.body
    assert echo.last.raw_path == "/base/v1/a%2Fb/%C3%A4"
    assert echo.last.raw_query == "x=%20+y"


# -- §7 access control on paths ---------------------------------------------------


async def test_guarded_path_inside_its_root_is_allowed(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    answer = await raw_call(
        ecosystem, "GET", r1(GUARDED, "/public/doc"), [("X-Road-Client", CLIENT)]
    )

    assert answer.status == 200, answer.body
    assert echo.last.raw_path == "/guarded/public/doc"


@pytest.mark.parametrize(
    ("method", "rest"),
    [
        ("GET", "/private"),
        ("POST", "/public/doc"),
        ("GET", "/public/../private"),
        ("GET", "/public/%2e%2e/private"),
        ("GET", "/public/%2E%2E%2Fprivate"),
        ("GET", "/public/%252e%252e/private"),
        ("GET", "/public/..%2F..%2Fprivate"),
    ],
)
async def test_guarded_path_outside_its_grant_is_denied(
    ecosystem: Ecosystem, echo: EchoService, method: str, rest: str
) -> None:
    answer = await raw_call(
        ecosystem, method, r1(GUARDED, rest), [("X-Road-Client", CLIENT)], b""
    )

    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ServerProxy.AccessDenied"
    assert echo.received == []


@pytest.mark.parametrize("rest", ["/../outside", "/%2e%2e/outside", "/a/../../x"])
async def test_a_path_climbing_above_its_root_is_refused(
    ecosystem: Ecosystem, echo: EchoService, rest: str
) -> None:
    answer = await raw_call(
        ecosystem, "GET", r1(ECHO, rest), [("X-Road-Client", CLIENT)]
    )

    assert echo.received == []
    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ServerProxy.AccessDenied"


# -- chunked bodies -------------------------------------------------------------------


async def test_a_chunked_request_body_arrives_intact(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    chunks = [b"first,", b"\r\n0\r\n", b"x" * 10_000, b"last"]
    answer = await raw_call(
        ecosystem,
        "POST",
        r1(ECHO, "/upload"),
        [("X-Road-Client", CLIENT), ("Content-Type", "application/octet-stream")],
        chunks=chunks,
    )

    assert answer.status == 200, answer.body
    got = echo.last
    assert got.body == b"".join(chunks)
    if not got.chunked:
        assert got.all("Content-Length") == [str(len(got.body))]


async def test_a_streamed_body_from_aiohttp_arrives_intact(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    pieces = [bytes([n]) * 4096 for n in range(8)]

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with aiohttp.ClientSession() as session:
        async with session.put(
            ecosystem.client_proxy_url + r1(ECHO, "/stream"),
            data=stream(),
            headers={"X-Road-Client": CLIENT},
        ) as response:
            assert response.status == 200
    assert echo.last.body == b"".join(pieces)


async def test_a_chunked_service_answer_arrives_intact(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    body = b"".join(b"line %d\n" % n for n in range(500))
    echo.queue(Reply(200, [("Content-Type", "text/plain")], body, chunked=True))
    answer = await raw_call(
        ecosystem, "GET", r1(ECHO, "/chunked"), [("X-Road-Client", CLIENT)]
    )

    assert answer.status == 200
    assert answer.body == body
    assert len(answer.all("Transfer-Encoding")) <= 1


async def test_a_compressed_answer_stays_consistent(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    original = b'{"compressed":true}' * 50
    echo.queue(
        Reply(
            200,
            [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
            gzip.compress(original),
        )
    )
    answer = await call(ecosystem, "GET", r1(ECHO, "/gzip"))

    assert answer.status == 200
    if answer.header("Content-Encoding") == "gzip":
        assert gzip.decompress(answer.body) == original
    else:
        assert answer.body == original


# -- §3 responses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (201, [("Location", "/v1/people/43")], b'{"id":43}'),
        (204, [], b""),
        (301, [("Location", "http://elsewhere.invalid/moved")], b"moved"),
        (404, [("Content-Type", "application/problem+json")], b'{"known":false}'),
        (500, [("Content-Type", "text/plain")], b"the service broke"),
        (418, [("Content-Type", "text/plain")], b"teapot"),
    ],
)
async def test_service_status_and_body_pass_through(
    ecosystem: Ecosystem,
    echo: EchoService,
    status: int,
    headers: Headers,
    body: bytes,
) -> None:
    echo.queue(Reply(status, headers, body))
    answer = await call(ecosystem, "POST", r1(ECHO, "/status"), body=b"x")

    assert answer.status == status
    assert answer.body == body
    assert answer.header("X-Road-Error") is None
    for name, value in headers:
        assert answer.all(name) == [value]
    assert len(echo.received) == 1  # a 301 is not followed


async def test_user_headers_come_back_unmodified_and_in_order(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    service_headers = [
        ("X-Trace", "first"),
        ("Content-Type", "application/hal+json; charset=iso-8859-1; v=2"),
        ("WWW-Authenticate", 'Bearer realm="api", error="invalid_token"'),
        ("Cache-Control", "no-store"),
        ("Link", '</v1/people?page=2>; rel="next"'),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("X-Powered-By", "provider-is"),
        ("Date", "Tue, 02 Jan 2024 10:00:00 GMT"),
        ("X-Trace", "second"),
    ]
    echo.queue(Reply(200, service_headers, b"{}"))
    answer = await call(ecosystem, "GET", r1(ECHO, "/back"))

    assert answer.status == 200
    wanted = {name.lower() for name, _ in service_headers}
    assert [(k, v) for k, v in answer.headers if k.lower() in wanted] == service_headers


async def test_filtered_and_forged_service_headers_do_not_reach_the_client(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    forged = [(name, "forged") for name in XROAD_RESPONSE]
    hop = [
        ("Keep-Alive", "timeout=99, max=9"),
        ("Proxy-Authenticate", 'Basic realm="provider"'),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("TE", "trailers"),
        ("Server", "provider-internal/9.9"),
    ]
    echo.queue(
        Reply(200, [("Content-Type", "text/plain"), *forged, *hop, ("X-Service", "s")])
    )
    answer = await raw_call(
        ecosystem, "GET", r1(ECHO, "/forged"), [("X-Road-Client", CLIENT)]
    )

    assert answer.status == 200, answer.body
    for name, value in hop:
        assert value not in answer.all(name), name
    for name in XROAD_RESPONSE:
        assert answer.all(name) and "forged" not in answer.all(name), name
    assert answer.header("x-road-service") == ECHO.slash()
    assert answer.all("X-Service") == ["s"]


async def test_response_x_road_headers_follow_the_service_headers(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    body = b'{"name":"Ada"}'
    sent = [
        ("X-Road-Client", CLIENT),
        ("Content-Type", "application/json; charset=utf-8"),
        ("Accept", "application/json"),
        ("X-Road-Request-Id", "dropped-by-the-consumer"),
    ]
    target = r1(ECHO, "/v1/people?fields=name")
    echo.queue(Reply(201, [("X-Service", "last-of-service")], b"{}"))
    answer = await raw_call(ecosystem, "POST", target, sent, body)

    assert answer.status == 201, answer.body
    names = answer.names()
    positions = [names.index(name) for name in XROAD_RESPONSE]
    assert positions == sorted(positions)
    assert names.index("x-service") < positions[0]
    assert answer.header("x-road-client") == CLIENT
    assert answer.header("x-road-service") == ECHO.slash()

    # rest-message.md §4, computed here from what we sent.
    request_id = echo.last.header("x-road-request-id")
    query_id = echo.last.header("x-road-id")
    forwarded = [
        (k, v)
        for k, v in [("Host", HOST), *sent, ("Content-Length", str(len(body)))]
        if k.lower() not in FILTERED | {"x-road-request-id", "x-road-request-hash"}
    ]
    forwarded += [("x-road-request-id", request_id), ("x-road-id", query_id)]
    part = "".join(f"{line}\r\n" for line in ["POST", target]) + "".join(
        f"{k}:{v}\r\n" for k, v in forwarded
    )

    def h(data: bytes) -> bytes:
        return hashlib.sha512(data).digest()

    expected = base64.b64encode(h(h(part.encode()) + h(body))).decode()
    assert answer.header("x-road-request-hash") == expected


# -- §6 error documents -------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),
        ("text/xml", "text/xml"),
        ("application/xml", "application/xml"),
        ("text/*", "text/xml"),
        ("application/json, text/xml;q=0.1", "text/xml"),
        ("Application/XML; charset=utf-8", "application/xml"),
    ],
)
async def test_error_document_format_follows_accept(
    ecosystem: Ecosystem, accept: str | None, content_type: str
) -> None:
    headers = [("X-Road-Client", CLIENT)]
    if accept is not None:
        headers.append(("Accept", accept))
    missing = ServiceId(REGISTRY_SUBSYSTEM, "noSuchService")
    answer = await call(ecosystem, "GET", r1(missing, "/x"), headers)

    code = "Server.ServerProxy.UnknownService"
    assert answer.status == 500
    assert answer.header("X-Road-Error") == code
    mime_type, _, params = (answer.header("Content-Type") or "").partition(";")
    assert mime_type.strip() == content_type
    if content_type == "application/json":
        document = json.loads(answer.body)
    else:
        assert "charset=utf-8" in params.lower()
        root = etree.fromstring(answer.body)
        assert root.tag == "error"
        document = {child.tag: child.text for child in root}
    assert set(document) == {"type", "message", "detail"}
    assert document["type"] == code
    assert document["message"]
    assert uuid.UUID(document["detail"])


@pytest.mark.parametrize(
    ("target", "headers", "code"),
    [
        (
            "/r1/DEMO/GOV/1001/REGISTRY",
            [("X-Road-Client", CLIENT)],
            "Client.BadRequest",
        ),
        ("/r1/DEMO/GOV/1001//echo", [("X-Road-Client", CLIENT)], "Client.BadRequest"),
        (
            "/r1/DEMO/GOV/1001/REGISTRY/echo",
            [("X-Road-Client", CLIENT), ("X-Road-Represented-Party", "a/b/c")],
            "Client.BadRequest",
        ),
    ],
)
async def test_client_errors_are_400(
    ecosystem: Ecosystem, echo: EchoService, target: str, headers: Headers, code: str
) -> None:
    answer = await raw_call(ecosystem, "GET", target, headers)

    assert answer.status == 400
    assert answer.header("X-Road-Error") == code
    assert answer.error_type() == code
    assert echo.received == []


@pytest.mark.parametrize(
    ("target", "headers", "code"),
    [
        (r1(ECHO), [], "Server.ClientProxy.InvalidClientIdentifier"),
        (
            r1(ECHO),
            [("X-Road-Client", "DEMO/GOV")],
            "Server.ClientProxy.InvalidClientIdentifier",
        ),
        (
            r1(ECHO),
            [("X-Road-Client", "DEMO/GOV/1001/REGISTRY")],
            "Server.ClientProxy.UnknownMember",
        ),
        (
            r1(ServiceId(REGISTRY_SUBSYSTEM, "noSuchService")),
            [("X-Road-Client", CLIENT)],
            "Server.ServerProxy.UnknownService",
        ),
        (
            r1(SOAP_ONLY),
            [("X-Road-Client", CLIENT)],
            "Server.ServerProxy.ServiceType",
        ),
        (
            r1(DEAD, "/x"),
            [("X-Road-Client", CLIENT)],
            "Server.ServerProxy.NetworkError",
        ),
    ],
)
async def test_server_errors_are_500(
    ecosystem: Ecosystem, echo: EchoService, target: str, headers: Headers, code: str
) -> None:
    answer = await raw_call(ecosystem, "GET", target, headers)

    assert answer.status == 500, answer.body
    assert answer.header("X-Road-Error") == code
    assert answer.error_type() == code
    assert echo.received == []


# -- X-Road-Security-Server ---------------------------------------------------------


async def test_the_named_provider_server_is_used(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    sent = [
        ("X-Road-Client", CLIENT),
        ("X-Road-Security-Server", PROVIDER_SERVER.slash()),
    ]
    answer = await call(ecosystem, "GET", r1(ECHO, "/targeted"), sent)

    assert answer.status == 200, answer.body
    assert echo.last.all("X-Road-Security-Server") == [PROVIDER_SERVER.slash()]


@pytest.mark.parametrize(
    "server",
    [
        "DEMO/GOV/1001/ss-nowhere",  # not registered at all
        CONSUMER_SERVER.slash(),  # registered, but does not host the provider
        "DEMO/GOV/1001",  # three parts only
    ],
)
async def test_an_unknown_provider_server_is_refused(
    ecosystem: Ecosystem, echo: EchoService, server: str
) -> None:
    sent = [("X-Road-Client", CLIENT), ("X-Road-Security-Server", server)]
    answer = await call(ecosystem, "GET", r1(ECHO, "/targeted"), sent)

    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ClientProxy.InvalidSecurityServer"
    assert echo.received == []


async def test_a_compressed_request_body_passes_unchanged(
    ecosystem: Ecosystem, echo: EchoService
) -> None:
    body = gzip.compress(b'{"name": "Ada"}' * 50)
    headers = [
        ("X-Road-Client", CLIENT),
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
    ]

    answer = await raw_call(ecosystem, "POST", r1(ECHO, "/gz"), headers, body)

    assert answer.status == 200, answer.body
    assert echo.last.body == body
    assert echo.last.all("Content-Encoding") == ["gzip"]
