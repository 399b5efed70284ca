"""Tests for protocol.rest: r1 paths, header parts, request hash, responses, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from protocol import rest
from protocol.digests import b64, sha512
from protocol.errors import (
    BadRequest,
    InconsistentResponse,
    InvalidClientIdentifier,
    InvalidHttpMethod,
    InvalidSecurityServer,
)
from protocol.identifiers import ClientId, SecurityServerId, ServiceId

CLIENT = ClientId("INST", "GOV", "1234", "SUBSYS")
SERVICE = ServiceId(ClientId("INST", "COM", "5678", "REGISTRY"), "persons")


# -- paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "service", "path"),
    [
        ("/r1/INST/COM/5678/REGISTRY/persons", SERVICE, ""),
        ("/r1/INST/COM/5678/REGISTRY/persons/", SERVICE, "/"),
        ("/r1/INST/COM/5678/REGISTRY/persons/v1/people/42", SERVICE, "/v1/people/42"),
        ("/r1/INST/COM/5678/REGISTRY/persons/a%2Fb?x=1", SERVICE, "/a%2Fb"),
        (
            "/r1/INST/COM/A%20B%2FC/R+1/s%C3%A4",
            ServiceId(ClientId("INST", "COM", "A B/C", "R+1"), "s\u00e4"),
            "",
        ),
    ],
)
def test_parse_rest_path(raw: str, service: ServiceId, path: str) -> None:
    assert rest.parse_rest_path(raw) == (service, path)


@pytest.mark.parametrize(
    "raw",
    [
        "/r2/INST/COM/5678/REGISTRY/persons",
        "/r1/INST/COM/5678/persons",
        "/r1/INST/COM//REGISTRY/persons",
        "/r1/INST/COM/5%G8/REGISTRY/persons",
        "/r1/INST/COM/5 8/REGISTRY/persons",
        "/r1/INST/COM/5678/REGISTRY/persons#frag",
    ],
)
def test_parse_rest_path_refuses(raw: str) -> None:
    with pytest.raises(BadRequest):
        rest.parse_rest_path(raw)


# -- request info ----------------------------------------------------------------


def test_parse_rest_request_reads_all_headers() -> None:
    headers = [
        ("x-road-client", "INST/GOV/1234/SUBSYS"),
        ("X-Road-Id", "q-1"),
        ("X-Road-UserId", "XX380"),
        ("X-Road-Issue", "CASE"),
        ("X-Road-Represented-Party", "COM/P%2F1"),
        ("X-Road-Security-Server", "INST/COM/5678/ss1"),
    ]
    info = rest.parse_rest_request(
        "GET", "/r1/INST/COM/5678/REGISTRY/persons/v1", "a=1", headers
    )
    assert info.client == CLIENT and info.service == SERVICE
    assert (info.service_path, info.query) == ("/v1", "a=1")
    assert (info.query_id, info.user_id, info.issue) == ("q-1", "XX380", "CASE")
    assert info.represented_party == ("COM", "P/1")
    assert info.target_security_server == SecurityServerId(
        ClientId("INST", "COM", "5678"), "ss1"
    )


def test_parse_rest_request_errors_in_order() -> None:
    path = "/r1/INST/COM/5678/REGISTRY/persons"
    with pytest.raises(InvalidHttpMethod):
        rest.parse_rest_request("CONNECT", "/bad", None, [])
    with pytest.raises(BadRequest):
        rest.parse_rest_request("GET", "/bad", None, [])
    with pytest.raises(InvalidClientIdentifier):
        rest.parse_rest_request("GET", path, None, [])
    with pytest.raises(InvalidClientIdentifier):
        rest.parse_rest_request("GET", path, None, [("X-Road-Client", "INST/GOV")])
    with pytest.raises(InvalidSecurityServer):
        rest.parse_rest_request(
            "GET",
            path,
            None,
            [("X-Road-Client", "INST/GOV/1"), ("X-Road-Security-Server", "INST/X")],
        )
    with pytest.raises(BadRequest):
        rest.parse_rest_request(
            "GET",
            path,
            None,
            [("X-Road-Client", "INST/GOV/1"), ("X-Road-Represented-Party", "a/b/c")],
        )


def test_forwardable_headers() -> None:
    headers = [
        ("Host", "h"),
        ("Accept", "application/json"),
        ("Connection", "close"),
        ("Content-Length", "3"),
        ("X-Road-Request-Id", "spoofed"),
        ("x-road-request-hash", "spoofed"),
        ("Authorization", "Bearer t"),
        ("User-Agent", "ua"),
    ]
    assert rest.forwardable_headers(headers) == [
        ("Accept", "application/json"),
        ("Authorization", "Bearer t"),
    ]


# -- header parts ------------------------------------------------------------------


SPEC_EXAMPLE = (
    b"GET\r\n"
    b"/r1/INST/COM/5678/REGISTRY/persons/v1/people/42?fields=name\r\n"
    b"Accept:application/json\r\n"
    b"X-Road-Client:INST/GOV/1234/SUBSYS\r\n"
    b"x-road-request-id:6f0c2a9e-8d43-4b57-a1e0-92d4f7c3b5aa\r\n"
    b"x-road-id:INST-2b1d7e60-5c1a-4f0e-9c33-0e8a4f6d1b27\r\n"
)


def test_build_request_part_matches_spec_example() -> None:
    part = rest.build_request_part(
        "GET",
        "/r1/INST/COM/5678/REGISTRY/persons/v1/people/42?fields=name",
        [
            ("Host", "ss:8080"),
            ("Accept", "application/json"),
            ("X-Road-Client", "INST/GOV/1234/SUBSYS"),
        ],
        "6f0c2a9e-8d43-4b57-a1e0-92d4f7c3b5aa",
        generated_query_id="INST-2b1d7e60-5c1a-4f0e-9c33-0e8a4f6d1b27",
    )
    assert part == SPEC_EXAMPLE


def test_parse_request_part_and_canonical_form() -> None:
    parsed = rest.parse_request_part(SPEC_EXAMPLE)
    assert parsed.method == "GET"
    assert parsed.path == "/r1/INST/COM/5678/REGISTRY/persons/v1/people/42"
    assert parsed.query == "fields=name"
    assert parsed.headers[0] == ("Accept", "application/json")
    assert parsed.to_bytes() == SPEC_EXAMPLE
    assert not rest.is_response_part(SPEC_EXAMPLE)


def test_header_values_keep_spaces_after_colon() -> None:
    part = rest.build_request_part("POST", "/r1/a/b/c/d/e", [("X", " v ")], "rid")
    assert rest.parse_request_part(part).headers[0] == ("X", " v ")


@pytest.mark.parametrize(
    "data",
    [
        b"GET\n/r1/x\n",
        b"GET\r\n/r1/x",
        b"FETCH\r\n/r1/x\r\n",
        b"GET\r\nnot-a-path\r\n",
        b"GET\r\n/r1/x\r\nno colon\r\n",
        b"GET\r\n/r1/x\r\nHost:a\r\n",
        b"GET\r\n/r1/x\r\n\r\n",
        b"GET\r\n/r1/\xff\r\n",
    ],
    ids=["lf", "no-final-crlf", "method", "path", "colon", "filtered", "blank", "utf8"],
)
def test_parse_request_part_refuses(data: bytes) -> None:
    with pytest.raises(BadRequest):
        rest.parse_request_part(data)


def test_build_request_part_refuses_injection() -> None:
    with pytest.raises(BadRequest):
        rest.build_request_part("GET", "/r1/a#frag", [], "rid")
    with pytest.raises(BadRequest):
        rest.build_request_part("GET", "/r1/a", [("X", "a\r\nY:b")], "rid")


def test_response_part_round_trip() -> None:
    headers = [("Content-Type", "application/json"), ("x-road-id", "q")]
    data = rest.build_response_part(201, "Created", headers)
    assert data == b"201\r\nCreated\r\nContent-Type:application/json\r\nx-road-id:q\r\n"
    parsed = rest.parse_response_part(data)
    assert (parsed.status, parsed.reason, list(parsed.headers)) == (
        201,
        "Created",
        headers,
    )
    assert parsed.to_bytes() == data and rest.is_response_part(data)
    assert rest.parse_response_part(b"204\r\n\r\n").reason == ""
    with pytest.raises(BadRequest):
        rest.parse_response_part(b"OK\r\nfine\r\n")


_token = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=12,
)
_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(rest.METHODS)),
    st.text(alphabet="abc/%20?=&", max_size=20),
    st.lists(st.tuples(_token, _value), max_size=5),
)
def test_request_part_round_trip(
    method: str, tail: str, headers: list[tuple[str, str]]
) -> None:
    data = rest.build_request_part(method, "/r1/" + tail, headers, "rid")
    parsed = rest.parse_request_part(data)
    assert parsed.to_bytes() == data
    assert parsed.method == method
    assert parsed.headers[-1] == ("x-road-request-id", "rid")


# -- request hash -----------------------------------------------------------------------


def test_rest_request_hash() -> None:
    assert rest.rest_request_hash(SPEC_EXAMPLE, None) == b64(sha512(SPEC_EXAMPLE))
    assert rest.rest_request_hash(SPEC_EXAMPLE, b"") == b64(sha512(SPEC_EXAMPLE))
    body = b'{"name":"Ada"}'
    expected = b64(sha512(sha512(SPEC_EXAMPLE) + sha512(body)))
    assert rest.rest_request_hash(SPEC_EXAMPLE, body) == expected
    assert rest.rest_request_hash_from_digest(SPEC_EXAMPLE, sha512(body)) == expected


# -- response -----------------------------------------------------------------------------


def _response_headers() -> list[tuple[str, str]]:
    return rest.response_headers_for_client(
        [
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
            ("X-Road-Id", "forged"),
            ("X-Road-Service", "forged"),
            ("Date", "Tue, 02 Jan 2024 10:00:00 GMT"),
        ],
        query_id="q-1",
        client=CLIENT,
        service=SERVICE,
        request_id="rid",
        request_hash="SGFzaA==",
    )


def test_response_headers_for_client() -> None:
    assert _response_headers() == [
        ("Content-Type", "application/json"),
        ("Date", "Tue, 02 Jan 2024 10:00:00 GMT"),
        ("x-road-id", "q-1"),
        ("x-road-client", "INST/GOV/1234/SUBSYS"),
        ("x-road-service", "INST/COM/5678/REGISTRY/persons"),
        ("x-road-request-id", "rid"),
        ("x-road-request-hash", "SGFzaA=="),
    ]


def _check(headers: list[tuple[str, str]]) -> None:
    rest.check_rest_response(
        headers,
        query_id="q-1",
        client=CLIENT,
        service=SERVICE,
        request_id="rid",
        request_hash="SGFzaA==",
    )


def test_check_rest_response_accepts_own_headers() -> None:
    assert _check(_response_headers()) is None


@pytest.mark.parametrize(
    "bad",
    [
        ("x-road-id", "q-2"),
        ("x-road-client", "INST/GOV/1234"),
        ("x-road-service", "INST/COM/5678/REGISTRY/other"),
        ("x-road-request-id", "rid2"),
        ("x-road-request-hash", "T3RoZXI="),
        ("x-road-client", "bad value"),
    ],
)
def test_check_rest_response_mismatch(bad: tuple[str, str]) -> None:
    with pytest.raises(InconsistentResponse):
        _check(_response_headers() + [bad])  # the last occurrence wins


def test_check_rest_response_missing() -> None:
    headers = [h for h in _response_headers() if h[0] != "x-road-request-hash"]
    with pytest.raises(InconsistentResponse):
        _check(headers)


# -- errors --------------------------------------------------------------------------------


def test_build_error_json_default() -> None:
    status, content_type, body = rest.build_error(
        "Server.ServerProxy.AccessDenied", "Request is not allowed", "d-1", None
    )
    assert (status, content_type) == (500, "application/json")
    assert json.loads(body) == {
        "type": "Server.ServerProxy.AccessDenied",
        "message": "Request is not allowed",
        "detail": "d-1",
    }


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/xml", "text/xml; charset=UTF-8"),
        ("application/json, application/xml;q=0.9", "application/xml; charset=UTF-8"),
        ("text/*", "text/xml; charset=UTF-8"),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
    ],
)
def test_build_error_negotiates(accept: str, expected: str) -> None:
    status, content_type, body = rest.build_error(
        "client.bad_request", "a<b", "d", accept
    )
    assert status == 400 and content_type == expected
    if "xml" in expected:
        root = etree.fromstring(body)
        assert [c.text for c in root] == ["client.bad_request", "a<b", "d"]


def test_build_error_status_by_prefix() -> None:
    assert rest.build_error("server.clientproxy.x", "m", "d", None)[0] == 500
    assert rest.build_error("Client.BadRequest", "m", "d", None)[0] == 400


@pytest.mark.parametrize(
    "name",
    [
        "X-Road-Client",
        "x-road-id",
        "X-Road-UserId",
        "X-Road-Issue",
        "X-Road-Security-Server",
        "X-Road-Represented-Party",
    ],
)
def test_a_repeated_single_valued_header_is_refused(name: str) -> None:
    headers = [("X-Road-Client", "INST/GOV/1234/SUBSYS"), (name, "INST/COM/5678/ss1")]
    if name != "X-Road-Client":
        headers.append((name, "INST/COM/5678/ss1"))
    with pytest.raises(BadRequest):
        rest.parse_rest_request(
            "GET", "/r1/INST/COM/5678/REGISTRY/persons", None, headers
        )


def test_a_request_part_with_two_clients_is_refused() -> None:
    part = (
        b"GET\r\n/r1/INST/COM/5678/REGISTRY/persons\r\n"
        b"X-Road-Client:INST/GOV/9999/VICTIM\r\n"
        b"X-Road-Client:INST/GOV/1234/SUBSYS\r\n"
        b"x-road-request-id:1\r\n"
    )
    with pytest.raises(BadRequest):
        rest.parse_request_part(part)


def test_a_response_part_with_two_clients_is_refused() -> None:
    part = (
        b"200\r\nOK\r\nx-road-client:INST/GOV/9999/VICTIM\r\n"
        b"x-road-client:INST/GOV/1234/SUBSYS\r\n"
    )
    with pytest.raises(BadRequest):
        rest.parse_response_part(part)
