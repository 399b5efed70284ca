"""SOAP packages and proxy messages with attachments, read and framed via spools."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from protocol import soap, transport
from protocol.errors import InvalidContentType, MissingSoap, RequestTooLarge
from protocol.identifiers import ClientId, ServiceId
from protocol.mime import MimePart, build_multipart
from security_server import spool
from security_server.attachments import package_source, receive_soap_package

pytestmark = pytest.mark.asyncio

CLIENT = ClientId.parse_slash("TEST/GOV/1234/benefits")
SERVICE = ServiceId(ClientId.parse_slash("TEST/GOV/5678/registry"), "uploadScan")
BODIES = [
    b"",
    b"x",
    b"line\r\n",
    b"bare\nfeeds\n\n",
    b"--almost-a-boundary\r\n--\r\n",
    b"ends with CR\r",
    os.urandom(300_001),  # over the in-memory threshold: goes to a file
]
CHUNKINGS = [7, 4093, 65536, 10**9]


def envelope() -> bytes:
    body = etree.Element("{urn:test}uploadScan")
    return build_soap_request(body)


def build_soap_request(body: etree._Element) -> bytes:
    return soap.build_soap_request(CLIENT, SERVICE, "q-1", body)


def soap_parts(soap_type: str) -> list[MimePart]:
    head = MimePart((("Content-Type", soap_type), ("Content-ID", "<env>")), envelope())
    attachments = [
        MimePart(
            (("Content-Type", "application/octet-stream"), ("Content-ID", f"<a{i}>")),
            data,
        )
        for i, data in enumerate(BODIES)
    ]
    return [head, *attachments]


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(source: spool.BodySource) -> bytes:
    return b"".join([chunk async for chunk in source()])


@pytest.mark.parametrize("size", CHUNKINGS)
@pytest.mark.parametrize(
    "soap_type",
    ["text/xml; charset=UTF-8", 'application/xop+xml; type="text/xml"'],
    ids=["swa", "mtom"],
)
async def test_package_reads_like_parse_soap_package_and_frames_back(
    tmp_path: Path, size: int, soap_type: str
) -> None:
    parts = soap_parts(soap_type)
    data = build_multipart(parts, "outer-BND")
    content_type = 'multipart/related; type="text/xml"; boundary="outer-BND"'

    package = await receive_soap_package(
        chunked(data, size), content_type, directory=tmp_path, max_bytes=10**8
    )
    try:
        expected, soap_part, attachments = soap.parse_soap_package(data, content_type)
        assert package.soap_part == soap_part
        assert package.parsed == expected
        assert [
            (p.headers, await p.body.head(p.body.size)) for p in package.attachments
        ] == [(a.headers, a.body) for a in attachments]
        length, source = package_source(
            package.soap_part, package.attachments, "outer-BND"
        )
        framed = await collect(source)
        assert framed == data
        assert length == len(data)
    finally:
        package.close()
    assert not list(tmp_path.iterdir())


async def test_plain_soap_is_read_whole(tmp_path: Path) -> None:
    raw = envelope()
    package = await receive_soap_package(
        chunked(raw, 5), "text/xml", directory=tmp_path, max_bytes=10**6
    )
    assert package.soap_part is None and package.raw == raw
    assert package.attachments == []


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b" \r\n ", MissingSoap),
        (
            b"--B\r\nContent-Type: text/xml\r\n\r\n<a/>\r\n--B\r\n\r\nx\r\n--B--\r\n",
            InvalidContentType,
        ),
        (b"--B\r\n\r\n<a/>\r\n--B--\r\n", InvalidContentType),
    ],
    ids=["empty", "attachment-without-type", "soap-without-type"],
)
async def test_bad_packages_are_refused(
    tmp_path: Path, data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await receive_soap_package(
            chunked(data, 3),
            "multipart/related; boundary=B",
            directory=tmp_path,
            max_bytes=10**6,
        )
    assert not list(tmp_path.iterdir())


async def test_package_over_the_limit_is_refused_and_cleaned_up(
    tmp_path: Path,
) -> None:
    data = build_multipart(soap_parts("text/xml"), "BND")
    with pytest.raises(RequestTooLarge):
        await receive_soap_package(
            chunked(data, 65536),
            "multipart/related; boundary=BND",
            directory=tmp_path,
            max_bytes=len(data) - 1,
        )
    assert not list(tmp_path.iterdir())


def proxy_message() -> transport.ProxyMessage:
    parts = soap_parts("text/xml; charset=UTF-8")
    return transport.ProxyMessage(
        soap=parts[0], attachments=parts[1:], signature=b"<signature/>"
    )


@pytest.mark.parametrize("size", CHUNKINGS)
async def test_proxy_message_attachments_are_spooled_with_their_digests(
    tmp_path: Path, size: int
) -> None:
    message = proxy_message()
    data = transport.encode_proxy_message(message, "xtopBND", "xattBND")
    content_type = transport.proxy_content_type("xtopBND")

    received = await spool.receive_proxy_message(
        chunked(data, size), content_type, directory=tmp_path, max_bytes=10**8
    )
    try:
        whole = transport.decode_proxy_message(data, content_type)
        assert received.message.attachments == []
        assert received.message.soap == whole.soap
        assert received.part_digests() == transport.part_digests(whole)
        bodies = [await p.body.head(p.body.size) for p in received.attachments]
        assert bodies == BODIES

        headers, source = spool.proxy_message_source(
            received.message, None, {}, received.attachments
        )
        again = transport.decode_proxy_message(
            await collect(source), headers["Content-Type"]
        )
        assert again.attachments == message.attachments
        assert again.soap is not None and message.soap is not None
        assert again.soap.body == message.soap.body
        assert again.soap.extra_headers() == message.soap.extra_headers()
    finally:
        received.close()
    assert not list(tmp_path.iterdir())


async def test_tampered_attachment_changes_its_digest(tmp_path: Path) -> None:
    message = proxy_message()
    data = transport.encode_proxy_message(message, "xtopBND", "xattBND")
    tampered = data.replace(b"bare\nfeeds", b"bare\nfeedz")
    content_type = transport.proxy_content_type("xtopBND")

    received = await spool.receive_proxy_message(
        chunked(tampered, 4096), content_type, directory=tmp_path, max_bytes=10**8
    )
    try:
        assert received.part_digests() != transport.part_digests(message)
    finally:
        received.close()


async def test_attachment_without_type_in_proxy_message_is_refused(
    tmp_path: Path,
) -> None:
    nested = b"--xattBND\r\n\r\nbody\r\n--xattBND--\r\n"
    parts = [
        soap_parts("text/xml")[0],
        MimePart((("Content-Type", transport.proxy_content_type("xattBND")),), nested),
    ]
    data = build_multipart(parts, "xtopBND")
    with pytest.raises(InvalidContentType):
        await spool.receive_proxy_message(
            chunked(data, 7),
            transport.proxy_content_type("xtopBND"),
            directory=tmp_path,
            max_bytes=10**6,
        )
    assert not list(tmp_path.iterdir())
