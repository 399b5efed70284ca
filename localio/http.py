"""Reading HTTP bodies whole, without trusting the peer for their size."""

from __future__ import annotations

from aiohttp import StreamReader

CHUNK = 64 * 1024


async def read_at_most(stream: StreamReader, limit: int) -> bytes:
    """The whole body, or its first ``limit + 1`` bytes when it is longer.

    ``StreamReader.read(n)`` returns what has arrived so far, which on a real
    network is often less than the body; this keeps reading until the end.
    Callers treat a result longer than ``limit`` as "too large".
    """
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(min(CHUNK, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)
