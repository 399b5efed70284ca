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
from dataclasses import dataclass, replace
from pathlib import Path

from protocol import mime, transport
from protocol.errors import InternalError, LoggingFailed, RequestTooLarge
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
class ReceivedMessage:
    """A decoded message whose REST body, if any, sits in a spool."""

    message: ProxyMessage
    body: Spool | None = None

    def part_digests(self) -> list[tuple[str, bytes]]:
        """The named digests the signature must cover (transport.md §7.1)."""
        if self.body is None:
            return transport.part_digests(self.message)
        named = transport.part_digests(replace(self.message, rest_body=None))
        return named + [(f"/attachment{len(named)}", self.body.digest)]

    def close(self) -> None:
        if self.body is not None:
            self.body.close()


async def receive_proxy_message(
    chunks: AsyncIterator[bytes],
    content_type: str,
    *,
    directory: Path | None,
    max_bytes: int,
) -> ReceivedMessage:
    """Decode a message between security servers as it streams in.

    The REST body goes to a spool; every other part is small and kept in
    memory. Ordering and type checks are those of decode_proxy_message.

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

    async def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limit:
            raise RequestTooLarge(f"message is larger than {self.limit} bytes")
        for event in self.parser.feed(chunk):
            await self._on(event)

    async def finish(self) -> ReceivedMessage:
        for event in self.parser.close():
            await self._on(event)
        return ReceivedMessage(self.decoder.result(), self.body)

    async def _on(self, event: mime.MultipartEvent) -> None:
        if isinstance(event, PartStart):
            self.headers, self.small = event.headers, bytearray()
            part = mime.MimePart(event.headers, b"")
            if part.mime_type == transport.REST_BODY:
                self.decoder.add(part)  # checks order before any byte is kept
                self.spool = self.body = Spool(self.directory, self.limit)
        elif isinstance(event, PartData):
            if self.spool is not None:
                await self.spool.write(event.data)
            else:
                self.small += event.data
        elif isinstance(event, PartEnd):
            if self.spool is None:
                self.decoder.add(mime.MimePart(self.headers, bytes(self.small)))
            self.spool, self.small = None, bytearray()

    def close(self) -> None:
        if self.body is not None:
            self.body.close()


def proxy_message_source(
    message: ProxyMessage, body: Spool | None, headers: dict[str, str]
) -> tuple[dict[str, str], BodySource]:
    """Frame a message as encode_proxy_message does, with the REST body streamed.

    Returns the HTTP headers with a fresh boundary, and a function that gives
    the framed bytes again on each call (a retry to another server).
    """
    boundary = transport.random_boundary(os.urandom(30))
    marker = os.urandom(32).hex().encode()
    stand_in = replace(message, rest_body=marker if body is not None else None)
    framed = transport.encode_proxy_message(
        stand_in, boundary, "xatt" + os.urandom(16).hex()
    )
    before, _, after = (
        framed.partition(marker) if body is not None else (framed, b"", b"")
    )
    delimiter = b"--" + boundary.encode("ascii")

    async def source() -> AsyncIterator[bytes]:
        yield before
        if body is not None:
            async for chunk in _checked(body.chunks(), delimiter):
                yield chunk
            yield after

    http_headers = {
        **headers,
        "Content-Type": transport.proxy_content_type(boundary),
        "x-hash-algorithm": transport.HASH_ALGORITHM,
    }
    return http_headers, source


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
    "loggable_body",
    "proxy_message_source",
    "receive_proxy_message",
    "spool_stream",
]
