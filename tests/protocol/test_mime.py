"""Tests for protocol.mime: content types and byte-exact multipart framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidContentType, MimeParsingFailed
from protocol.mime import (
    MimePart,
    build_multipart,
    content_type_param,
    parse_content_type,
    parse_multipart,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text/xml", ("text/xml", {})),
        ("Text/XML; Charset=UTF-8", ("text/xml", {"charset": "UTF-8"})),
        ('text/xml;charset="utf-8"', ("text/xml", {"charset": "utf-8"})),
        ("\ttext/xml\t;\tcharset = utf-8 ;", ("text/xml", {"charset": "utf-8"})),
        (
            'multipart/related; type="a;b"; boundary="x\\"y"',
            ("multipart/related", {"type": "a;b", "boundary": 'x"y'}),
        ),
        ("signature/bdoc-1.0/ts", ("signature/bdoc-1.0/ts", {})),
    ],
)
def test_parse_content_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(
    "value", [None, "", "  ", "text", "/xml", "text/", "text/xml; x"]
)
def test_parse_content_type_refuses(value: str | None) -> None:
    with pytest.raises(InvalidContentType):
        parse_content_type(value)


def test_content_type_param() -> None:
    assert content_type_param("multipart/mixed; BOUNDARY=abc", "boundary") == "abc"
    assert content_type_param("text/xml", "charset") is None


def test_part_header_lookup() -> None:
    part = MimePart((("Content-Type", "Text/Plain; x=1"), ("Content-ID", "<a>")), b"")
    assert part.header("content-id") == "<a>"
    assert part.content_type == "Text/Plain; x=1"
    assert part.mime_type == "text/plain"
    assert part.extra_headers() == (("Content-ID", "<a>"),)
    assert MimePart((), b"").content_type is None


# -- parsing -------------------------------------------------------------------


def test_crlf_framing_with_preamble_and_epilogue() -> None:
    data = (
        b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: a/b\r\nX: 1\r\n\r\n\r\nbody\r\n\r\n--b--\r\nepilogue"
    )
    parts = parse_multipart(data, "b")
    assert [p.body for p in parts] == [b"hello", b"\r\nbody\r\n"]
    assert parts[1].headers == (("Content-Type", "a/b"), ("X", "1"))


def test_bare_lf_framing() -> None:
    parts = parse_multipart(b"--b\nContent-Type: a/b\n\nx\ny\n--b--\n", "b")
    assert parts[0].body == b"x\ny"


def test_boundary_lookalike_lines_stay_in_the_body() -> None:
    body = b"--bb not me\r\nxx--b\r\n --b\r\n--bx"
    data = b"--b\r\nContent-Type: a/b\r\n\r\n" + body + b"\r\n--b--"
    assert parse_multipart(data, "b")[0].body == body


def test_transport_padding_after_delimiter() -> None:
    parts = parse_multipart(b"--b \t\r\nContent-Type: a/b\r\n\r\nx\r\n--b--", "b")
    assert parts[0].body == b"x"


def test_folded_header() -> None:
    data = b"--b\r\nContent-Type: multipart/mixed;\r\n\tboundary=c\r\n\r\n\r\n--b--"
    part = parse_multipart(data, "b")[0]
    assert part.content_type == "multipart/mixed; boundary=c"


def test_part_of_headers_only_has_empty_body() -> None:
    parts = parse_multipart(b"--b\nContent-Type: text/xml\n\n--b--\n", "b")
    assert parts[0].body == b"" and parts[0].mime_type == "text/xml"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no delimiter here",
        b"--b\r\nContent-Type: a/b\r\n\r\nx",  # no close delimiter
        b"--b\r\nContent-Type: a/b\r\n\r\nx\r\n--b",  # last line is not a close
        b"--b\r\nno header colon\r\n\r\nx\r\n--b--",
        b"--b\r\nContent-Type: a/b\r\n--b--",  # headers without blank line
        b"--b--\r\n",  # no parts
    ],
    ids=[
        "empty",
        "none",
        "unclosed",
        "unclosed-at-end",
        "bad-header",
        "no-blank",
        "no-parts",
    ],
)
def test_parse_failures(data: bytes) -> None:
    with pytest.raises(MimeParsingFailed):
        parse_multipart(data, "b")


def test_lenient_end_accepts_final_delimiter_at_eof() -> None:
    data = b"--b\nContent-Type: a/b\n\nx\n--b"
    assert parse_multipart(data, "b", lenient_end=True)[0].body == b"x"
    with pytest.raises(MimeParsingFailed):
        parse_multipart(b"--b\nContent-Type: a/b\n\nx", "b", lenient_end=True)


@pytest.mark.parametrize("boundary", ["", "x" * 71, "a\r\nb", "trailing "])
def test_bad_boundary(boundary: str) -> None:
    with pytest.raises(MimeParsingFailed):
        parse_multipart(b"--x\r\n\r\n\r\n--x--", boundary)


# -- building ----------------------------------------------------------------------


def test_build_framing_matches_transport_spec() -> None:
    parts = [
        MimePart((("content-type", "application/ocsp-response"),), b"DER"),
        MimePart((("content-type", "text/xml"), ("Content-ID", "<a>")), b"<x/>"),
    ]
    assert build_multipart(parts, "xtopB") == (
        b"--xtopB\r\ncontent-type: application/ocsp-response\r\n\r\nDER"
        b"\r\n--xtopB\r\ncontent-type: text/xml\r\nContent-ID: <a>\r\n\r\n<x/>"
        b"\r\n--xtopB--\r\n"
    )


def test_build_refuses_boundary_in_body_and_header_injection() -> None:
    with pytest.raises(Exception) as caught:
        build_multipart([MimePart((("content-type", "a/b"),), b"x\r\n--b\r\n")], "b")
    assert caught.value.code == "InternalError"  # type: ignore[attr-defined]
    with pytest.raises(Exception) as caught:
        build_multipart([MimePart((("X", "a\r\nY: b"),), b"")], "b")
    assert caught.value.code == "InternalError"  # type: ignore[attr-defined]


_bodies = st.binary(max_size=300).map(
    lambda b: b.replace(b"--bnd", b"-x-bnd")
) | st.sampled_from([b"", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"x\n\n", b"\n--bn"])


@settings(max_examples=150, deadline=None)
@given(st.lists(_bodies, min_size=1, max_size=4))
def test_build_parse_round_trip(bodies: list[bytes]) -> None:
    parts = [
        MimePart((("content-type", "application/octet-stream"),), b) for b in bodies
    ]
    assert parse_multipart(build_multipart(parts, "bnd"), "bnd") == parts


@settings(max_examples=100, deadline=None)
@given(st.lists(_bodies, min_size=1, max_size=4), st.sampled_from([b"\n", b"\r\n"]))
def test_parse_with_either_line_end(bodies: list[bytes], eol: bytes) -> None:
    # With LF framing a body ending in CR is ambiguous; the CRLF reading wins.
    bodies = [b.rstrip(b"\r") for b in bodies]
    data = (
        b"".join(
            b"--bnd" + eol + b"Content-Type: a/b" + eol + eol + body + eol
            for body in bodies
        )
        + b"--bnd--"
        + eol
    )
    assert [p.body for p in parse_multipart(data, "bnd")] == bodies
