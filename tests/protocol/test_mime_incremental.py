"""Tests for protocol.mime.MultipartParser: the incremental multipart parser.

Every case is checked against the whole-bytes parse_multipart under many
chunkings of the same input.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import MimeParsingFailed
from protocol.mime import (
    MimePart,
    MultipartDone,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    build_multipart,
    parse_multipart,
    parse_multipart_incremental,
)

B = "xtopBOUNDARY"


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _outcome(parse, *args):  # type: ignore[no-untyped-def]
    try:
        return parse(*args)
    except MimeParsingFailed:
        return "MimeParsingFailed"


CASES = [
    ("crlf", b"--B\r\na: 1\r\n\r\nbody\r\n--B--\r\n"),
    ("bare-lf", b"--B\na: 1\n\nbody\n--B--\n"),
    ("preamble-epilogue", b"junk\r\n--B\r\n\r\nx\r\n--B--\r\nmore junk"),
    ("two-parts", b"--B\r\na: 1\r\n\r\none\r\n--B\r\nb: 2\r\n\r\ntwo\r\n--B--"),
    ("headers-only", b"--B\r\na: 1\r\n\r\n--B--\r\n"),
    ("empty-part", b"--B\r\n--B\r\n\r\nx\r\n--B--"),
    ("padding", b"--B \t\r\n\r\nx\r\n--B\t\r\n\r\ny\n--B--"),
    ("cr-kept-in-body", b"--B\r\n\r\nx\r\r\n--B--"),
    ("fake-delimiters", b"--B\r\n\r\n--Bx\r\n a--B\r\n--B-\r\n--B--"),
    ("boundary-prefix", b"--B\r\n\r\n--BB\r\n\r\n--B--"),
    ("no-delimiter", b"nothing here"),
    ("no-close", b"--B\r\n\r\nbody\r\n--B\r\n\r\nmore"),
    ("no-parts", b"--B--\r\n"),
    ("no-blank-line", b"--B\r\nheader-without-colon\r\n--B--"),
    ("delimiter-at-end", b"--B\r\n\r\nx\r\n--B"),
]


@pytest.mark.parametrize(("name", "data"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("lenient", [False, True])
def test_same_parts_as_whole_bytes_parser(name: str, data: bytes, lenient: bool):
    expected = _outcome(lambda: parse_multipart(data, "B", lenient_end=lenient))
    for size in (1, 2, 3, 5, 7, len(data) or 1):
        got = _outcome(
            lambda s=size: parse_multipart_incremental(
                _chunked(data, s), "B", lenient_end=lenient
            )
        )
        assert got == expected, (name, size)


def test_events_in_order():
    data = build_multipart([MimePart((("content-type", "text/plain"),), b"hello")], B)
    parser = MultipartParser(B)
    events = parser.feed(data) + parser.close()
    assert events == [
        PartStart((("content-type", "text/plain"),)),
        PartData(b"hello"),
        PartEnd(),
        MultipartDone(),
    ]
    assert parser.done


def test_large_body_is_not_buffered():
    body = bytes(range(256)) * 4096  # 1 MiB
    data = build_multipart([MimePart((("content-type", "a/b"),), body)], B)
    parser = MultipartParser(B)
    received = bytearray()
    for chunk in _chunked(data, 65536):
        for event in parser.feed(chunk):
            if isinstance(event, PartData):
                received += event.data
        assert len(parser._buf) <= 65536 + len(B) + 4
    for event in parser.close():
        if isinstance(event, PartData):
            received += event.data
    assert bytes(received) == body


def test_header_block_limit():
    data = b"--B\r\n" + b"x: " + b"y" * 5000 + b"\r\n\r\nbody\r\n--B--"
    parser = MultipartParser("B", max_header_bytes=1024)
    with pytest.raises(MimeParsingFailed):
        for chunk in _chunked(data, 100):
            parser.feed(chunk)


def test_part_count_limit():
    parts = [MimePart((("content-type", "a/b"),), b"x")] * 5
    data = build_multipart(parts, B)
    parser = MultipartParser(B, max_parts=4)
    with pytest.raises(MimeParsingFailed):
        parser.feed(data)


def test_close_without_delimiter_fails():
    parser = MultipartParser(B)
    parser.feed(b"--" + B.encode() + b"\r\n\r\npartial body")
    with pytest.raises(MimeParsingFailed):
        parser.close()


# Pieces likely to form tricky framings: delimiters, line ends, padding.
_PIECES = st.sampled_from(
    [
        b"--B",
        b"--B--",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b"-",
        b"B",
        b"x",
        b":",
        b"a: 1",
        b"\r\n\r\n",
        b"--",
        b"--BB",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(_PIECES, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    lenient=st.booleans(),
)
def test_any_chunking_gives_identical_parts(pieces, cuts, lenient):
    data = b"".join(pieces)
    expected = _outcome(lambda: parse_multipart(data, "B", lenient_end=lenient))
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [
        data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)
    ]
    got = _outcome(
        lambda: parse_multipart_incremental(chunks, "B", lenient_end=lenient)
    )
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    size=st.integers(min_value=1, max_value=64),
)
def test_built_messages_round_trip(bodies, size):
    parts = [MimePart((("content-type", "a/b"),), b) for b in bodies]
    try:
        data = build_multipart(parts, B)
    except Exception:  # noqa: BLE001 - the boundary happened to occur in a body
        return
    assert parse_multipart_incremental(_chunked(data, size), B) == parts
