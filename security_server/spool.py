"""Net: message bodies that stream through a proxy, spooled to disk until verified.

A body is hashed while it arrives and kept in a temporary file in the data
directory (transport.md §9 step 3): nothing of it is passed on before the
signature that covers its digest has been verified. It is then streamed out
from the file in chunks, so memory stays bounded whatever the body size.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from protocol import mime, transport
from protocol.errors import (
    InternalError,
    InvalidContentType,
    LoggingFailed,
    RequestTooLarge,
)
from protocol.mime import PartData, PartEnd, PartStart
from protocol.transport import ProxyMessage

CHUNK = 64 * 1024
MEMORY_BYTES = 256 * 1024  # a body larger than this goes to disk

BodySource = Callable[[], AsyncIterator[bytes]]


class Spool:
    """A body on its way through: hashed with SHA-512 and kept until sent on."""

    def __init__(self, directory: Path | None, limit: int) -> None:
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
            max_size=MEMORY_BYTES, dir=directory, prefix="body-"
        )
        self._hash = hashlib.sha512()
        self._limit = limit
        self.size = 0

    async def write(self, data: bytes) -> None:
        """Append bytes, refusing a body over the limit.

        :raises RequestTooLarge: the body grew past the limit.
        """
        self.size += len(data)
        if self.size > self._limit:
            raise RequestTooLarge(f"message body is larger than {self._limit} bytes")
        self._hash.update(data)
        if self.size > MEMORY_BYTES:
            await asyncio.to_thread(self._file.write, data)
        else:
            self._file.write(data)

    @property
    def digest(self) -> bytes:
        return self._hash.digest()

    async def chunks(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        """The whole body again, from the start, in chunks."""
        await asyncio.to_thread(self._file.seek, 0)
        while True:
            data = await asyncio.to_thread(self._file.read, size)
            if not data:
                return
            yield data

    async def head(self, count: int) -> bytes:
        """The first ``count`` bytes of the body."""
        await asyncio.to_thread(self._file.seek, 0)
        return await asyncio.to_thread(self._file.read, count)

    def close(self) -> None:
        self._file.close()


async def loggable_body(
    body: Spool, *, max_bytes: int, truncated_allowed: bool
) -> bytes:
    """What the message log keeps of a REST body (message-log.md §2).

    :raises LoggingFailed: the body is over ``max_bytes`` and truncation is off.
    """
    if body.size > max_bytes and not truncated_allowed:
        raise LoggingFailed(
            f"message body of {body.size} bytes is over the loggable"
            f" maximum of {max_bytes} bytes"
        )
    return await body.head(max_bytes)


async def spool_stream(
    chunks: AsyncIterator[bytes], directory: Path | None, limit: int
) -> Spool:
    """Read a whole stream into a new spool."""
    spool = Spool(directory, limit)
    try:
        async for chunk in chunks:
            await spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    return spool


# -- messages between security servers ----------------------------------------


@dataclass
class SpooledPart:
    """A MIME part whose headers are in memory and whose body is in a spool."""

    headers: tuple[tuple[str, str], ...]
    body: Spool


def close_parts(parts: list[SpooledPart]) -> None:
    for part in parts:
        part.body.close()


@dataclass
class ReceivedMessage:
    """A decoded message whose REST body or SOAP attachments sit in spools.

    ``message.attachments`` stays empty: the attachments are ``attachments``.
    """

    message: ProxyMessage
    body: Spool | None = None
    attachments: list[SpooledPart] = field(default_factory=list)

    def part_digests(self) -> list[tuple[str, bytes]]:
        """The named digests the signature must cover (transport.md §7.1)."""
        if self.body is None and not self.attachments:
            return transport.part_digests(self.message)
        named = transport.part_digests(replace(self.message, rest_body=None))
        bodies = [part.body for part in self.attachments]
        if self.body is not None:
            bodies.append(self.body)
        start = len(named)
        named += [(f"/attachment{i}", b.digest) for i, b in enumerate(bodies, start)]
        return named

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
        close_parts(self.attachments)


async def receive_proxy_message(
    chunks: AsyncIterator[bytes],
    content_type: str,
    *,
    directory: Path | None,
    max_bytes: int,
) -> ReceivedMessage:
    """Decode a message between security servers as it streams in.

    The REST body goes to a spool; every other part is small and kept in
    memory. SOAP attachments (the nested multipart part, transport.md §6) each
    go to a spool of their own. Ordering and type checks are those of
    decode_proxy_message.

    :raises RequestTooLarge: more than ``max_bytes`` arrived.
    """
    mime_type, params = mime.parse_content_type(content_type)
    boundary = params.get("boundary")
    if mime_type != transport.MULTIPART_MIXED or not boundary:
        whole = await spool_stream(chunks, None, max_bytes)
        try:
            data = await whole.head(whole.size)
        finally:
            whole.close()
        return ReceivedMessage(transport.decode_proxy_message(data, content_type))

    received = _Receiver(boundary, directory, max_bytes)
    try:
        async for chunk in chunks:
            await received.feed(chunk)
        return await received.finish()
    except BaseException:
        received.close()
        raise


class _Receiver:
    def __init__(self, boundary: str, directory: Path | None, limit: int) -> None:
        self.parser = mime.MultipartParser(boundary)
        self.decoder = transport.new_decoder()
        self.directory = directory
        self.limit = limit
        self.total = 0
        self.headers: tuple[tuple[str, str], ...] = ()
        self.small = bytearray()
        self.spool: Spool | None = None
        self.body: Spool | None = None
        self.nested: mime.MultipartParser | None = None
        self.attachments: list[SpooledPart] = []
        self.attachment_headers: tuple[tuple[str, str], ...] = ()

    async def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limit:
            raise RequestTooLarge(f"message is larger than {self.limit} bytes")
        for event in self.parser.feed(chunk):
            await self._on(event)

    async def finish(self) -> ReceivedMessage:
        for event in self.parser.close():
            await self._on(event)
        return ReceivedMessage(self.decoder.result(), self.body, self.attachments)

    async def _on(self, event: mime.MultipartEvent) -> None:
        if isinstance(event, PartStart):
            self.headers, self.small = event.headers, bytearray()
            part = mime.MimePart(event.headers, b"")
            mime_type = part.mime_type
            if mime_type == transport.REST_BODY:
                self.decoder.add(part)  # checks order before any byte is kept
                self.spool = self.body = Spool(self.directory, self.limit)
            elif mime_type is not None and mime_type.startswith("multipart/"):
                boundary = self.decoder.add_attachment_frame(part)
                self.nested = mime.MultipartParser(boundary)
        elif isinstance(event, PartData):
            if self.nested is not None:
                await self._on_nested(self.nested.feed(event.data))
            elif self.spool is not None:
                await self.spool.write(event.data)
            else:
                self.small += event.data
        elif isinstance(event, PartEnd):
            if self.nested is not None:
                await self._on_nested(self.nested.close())
            elif self.spool is None:
                self.decoder.add(mime.MimePart(self.headers, bytes(self.small)))
            self.spool, self.small, self.nested = None, bytearray(), None

    async def _on_nested(self, events: list[mime.MultipartEvent]) -> None:
        """Spool each attachment of the nested multipart as it comes."""
        for event in events:
            if isinstance(event, PartStart):
                if mime.MimePart(event.headers, b"").content_type is None:
                    raise InvalidContentType("attachment has no Content-Type")
                spooled = SpooledPart(event.headers, Spool(self.directory, self.limit))
                self.attachments.append(spooled)
            elif isinstance(event, PartData):
                await self.attachments[-1].body.write(event.data)

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
        close_parts(self.attachments)


def proxy_message_source(
    message: ProxyMessage,
    body: Spool | None,
    headers: dict[str, str],
    attachments: list[SpooledPart] | None = None,
) -> tuple[dict[str, str], BodySource]:
    """Frame a message as encode_proxy_message does, with spooled bodies streamed.

    ``body`` is a REST body; ``attachments`` are SOAP attachments, framed in
    the nested multipart in place of ``message.attachments``. Returns the
    HTTP headers with a fresh boundary, and a function that gives the framed
    bytes again on each call (a retry to another server).
    """
    boundary = transport.random_boundary(os.urandom(30))
    attachment_boundary = "xatt" + os.urandom(16).hex()
    spools = [part.body for part in attachments or []]
    markers = [os.urandom(32).hex().encode() for _ in spools]
    stand_in = replace(
        message,
        attachments=[
            mime.MimePart(part.headers, marker)
            for part, marker in zip(attachments or [], markers, strict=True)
        ],
    )
    if body is not None:
        spools.append(body)
        markers.append(os.urandom(32).hex().encode())
        stand_in = replace(stand_in, rest_body=markers[-1])
    framed = transport.encode_proxy_message(stand_in, boundary, attachment_boundary)
    delimiters = [b"--" + boundary.encode("ascii")]
    if attachments:
        delimiters.append(b"--" + attachment_boundary.encode("ascii"))

    http_headers = {
        **headers,
        "Content-Type": transport.proxy_content_type(boundary),
        "x-hash-algorithm": transport.HASH_ALGORITHM,
    }
    return http_headers, framed_source(
        framed, list(zip(markers, spools, strict=True)), delimiters
    )


def framed_source(
    framed: bytes, bodies: list[tuple[bytes, Spool]], delimiters: list[bytes]
) -> BodySource:
    """Stream ``framed`` with each marker replaced by its spooled body.

    The markers occur in ``framed`` in the order given; a body in which one
    of ``delimiters`` occurs is refused while it streams.
    """
    pieces: list[bytes] = []
    rest = framed
    for marker, _ in bodies:
        before, found, rest = rest.partition(marker)
        if not found:
            raise InternalError("spooled body marker is missing from the framing")
        pieces.append(before)

    async def source() -> AsyncIterator[bytes]:
        for piece, (_, spooled) in zip(pieces, bodies, strict=True):
            yield piece
            chunks = spooled.chunks()
            for delimiter in delimiters:
                chunks = _checked(chunks, delimiter)
            async for chunk in chunks:
                yield chunk
        yield rest

    return source


def framed_length(framed: bytes, bodies: list[tuple[bytes, Spool]]) -> int:
    """The byte count framed_source yields for the same arguments."""
    return len(framed) + sum(spooled.size - len(marker) for marker, spooled in bodies)


async def _checked(
    chunks: AsyncIterator[bytes], delimiter: bytes
) -> AsyncIterator[bytes]:
    """Pass chunks on, refusing a body in which the boundary occurs."""
    tail = b""
    async for chunk in chunks:
        if delimiter in tail + chunk[: len(delimiter)] or delimiter in chunk:
            raise InternalError("multipart boundary occurs inside a part body")
        tail = chunk[-(len(delimiter) - 1) :]
        yield chunk


__all__ = [
    "BodySource",
    "ReceivedMessage",
    "Spool",
    "SpooledPart",
    "close_parts",
    "framed_length",
    "framed_source",
    "loggable_body",
    "proxy_message_source",
    "receive_proxy_message",
    "spool_stream",
]
