"""Net: SOAP packages (soap-message.md §7-§9) with attachments spooled to disk.

A ``multipart/related`` package is parsed as it streams in: the SOAP part is
kept in memory, every attachment goes to a spool of its own while it is
hashed. Going out, the package is framed again with its original boundary
and part headers, the attachment bodies streamed from their spools.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from protocol import mime, soap
from protocol.errors import InvalidContentType, MissingSoap, RequestTooLarge
from protocol.mime import MimePart, PartData, PartEnd, PartStart

from .spool import (
    BodySource,
    Spool,
    SpooledPart,
    close_parts,
    framed_length,
    framed_source,
)

_BLANKS = b"\xef\xbb\xbf \t\r\n"  # what an empty package may be made of


@dataclass
class SoapPackage:
    """A received SOAP message: the envelope in memory, attachments spooled.

    ``soap_part`` is None for a plain SOAP body; ``raw`` is then that body.
    """

    parsed: soap.SoapMessage | soap.SoapFault
    raw: bytes
    content_type: str  # of the whole package
    soap_part: MimePart | None = None
    attachments: list[SpooledPart] = field(default_factory=list)

    def close(self) -> None:
        close_parts(self.attachments)


async def receive_soap_package(
    chunks: AsyncIterator[bytes],
    content_type: str,
    *,
    directory: Path | None,
    max_bytes: int,
) -> SoapPackage:
    """Read a SOAP body or a multipart/related package as it streams in.

    The checks and their codes are those of ``soap.parse_soap_package``.

    :raises RequestTooLarge: more than ``max_bytes`` arrived.
    """
    mime_type, params = mime.parse_content_type(content_type)
    if mime_type in soap.SOAP_CONTENT_TYPES:
        raw = await _read_all(chunks, max_bytes)
        return SoapPackage(soap.parse_soap(raw, content_type), raw, content_type)
    if mime_type != soap.MULTIPART_RELATED:
        raise InvalidContentType(f"invalid content type {mime_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise InvalidContentType("multipart content type has no boundary")

    reader = _PackageReader(content_type, boundary, directory, max_bytes)
    try:
        async for chunk in chunks:
            await reader.feed(chunk)
        return await reader.finish()
    except BaseException:
        close_parts(reader.attachments)
        raise


async def _read_all(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > max_bytes:
            raise RequestTooLarge(f"message body is larger than {max_bytes} bytes")
    return bytes(data)


class _PackageReader:
    def __init__(
        self, content_type: str, boundary: str, directory: Path | None, limit: int
    ) -> None:
        self.content_type = content_type
        self.parser = mime.MultipartParser(boundary, lenient_end=True)
        self.directory = directory
        self.limit = limit
        self.total = 0
        self.blank = True  # nothing but blanks so far
        self.soap_part: MimePart | None = None
        self.soap_headers: tuple[tuple[str, str], ...] = ()
        self.soap_body = bytearray()
        self.parts = 0
        self.attachments: list[SpooledPart] = []

    async def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limit:
            raise RequestTooLarge(f"message body is larger than {self.limit} bytes")
        if self.blank and chunk.strip(_BLANKS):
            self.blank = False
        for event in self.parser.feed(chunk):
            await self._on(event)

    async def finish(self) -> SoapPackage:
        if self.blank:
            raise MissingSoap("multipart message is empty")
        for event in self.parser.close():
            await self._on(event)
        part = self.soap_part
        assert part is not None  # the parser refuses a package without parts
        parsed = soap.parse_soap(part.body, part.content_type or "")
        return SoapPackage(parsed, part.body, self.content_type, part, self.attachments)

    async def _on(self, event: mime.MultipartEvent) -> None:
        if isinstance(event, PartStart):
            if MimePart(event.headers, b"").content_type is None:
                raise InvalidContentType("MIME part has no Content-Type")
            self.parts += 1
            if self.parts == 1:  # the reference ignores the ``start`` parameter
                self.soap_headers = event.headers
            else:
                spooled = Spool(self.directory, self.limit)
                self.attachments.append(SpooledPart(event.headers, spooled))
        elif isinstance(event, PartData):
            if self.parts == 1:
                self.soap_body += event.data
            else:
                await self.attachments[-1].body.write(event.data)
        elif isinstance(event, PartEnd) and self.parts == 1:
            self.soap_part = MimePart(self.soap_headers, bytes(self.soap_body))
            self.soap_body = bytearray()


def package_source(
    soap_part: MimePart, attachments: list[SpooledPart], boundary: str
) -> tuple[int, BodySource]:
    """Frame a multipart/related package as ``mime.build_multipart`` would.

    Returns the length of the framed package and a function streaming it.

    :raises InternalError: the boundary occurs in a part (while streaming,
        for an attachment).
    """
    markers = [_marker(index) for index, _ in enumerate(attachments)]
    stand_ins = [
        MimePart(part.headers, marker)
        for part, marker in zip(attachments, markers, strict=True)
    ]
    framed = mime.build_multipart([soap_part, *stand_ins], boundary)
    bodies = [(m, part.body) for m, part in zip(markers, attachments, strict=True)]
    delimiter = b"--" + boundary.encode("ascii")
    return framed_length(framed, bodies), framed_source(framed, bodies, [delimiter])


def _marker(index: int) -> bytes:
    return f"{os.urandom(24).hex()}{index:08x}".encode()


__all__ = ["SoapPackage", "package_source", "receive_soap_package"]
