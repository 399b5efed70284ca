"""Test tool: a REST service that records exactly what reached it.

It stands behind the provider's security server in the REST conformance tests
(rest-message.md). Each request is kept as it arrived on the wire -- method,
raw path and raw query, headers in order with their original case, body, and
whether the body came chunked -- and answered with the reply a test queued.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the service saw it."""

    method: str
    raw_path: str  # path only, still percent-encoded
    raw_query: str | None  # without "?", None when the target had no "?"
    headers: Headers  # in arrival order, names as sent
    body: bytes
    chunked: bool

    def header(self, name: str) -> str | None:
        """The last value of a header, names compared case-insensitively."""
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def names(self) -> list[str]:
        return [key.lower() for key, _ in self.headers]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the service answers; ``chunked`` streams the body in pieces."""

    status: int = 200
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False


class EchoService:
    """An aiohttp app that records requests and answers with queued replies.

    With no reply queued it answers ``default``. Use :meth:`start` and
    :meth:`stop` around a test module.
    """

    def __init__(self, default: Reply | None = None) -> None:
        self.received: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = default or Reply(200, [("Content-Type", "text/plain")], b"echo")
        self._runner: web.AppRunner | None = None

    def queue(self, reply: Reply) -> None:
        self.replies.append(reply)

    def reset(self) -> None:
        self.received.clear()
        self.replies.clear()

    @property
    def last(self) -> Received:
        assert self.received, "the service received no request"
        return self.received[-1]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self, host: str, port: int) -> None:
        # The echo keeps bodies as they came, compressed or not.
        self._runner = web.AppRunner(self.app(), access_log=None, auto_decompress=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, question, query = request.raw_path.partition("?")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers
        ]
        transfer = request.headers.get("Transfer-Encoding", "")
        self.received.append(
            Received(
                method=request.method,
                raw_path=path,
                raw_query=query if question else None,
                headers=headers,
                body=await request.read(),
                chunked="chunked" in transfer.lower(),
            )
        )
        reply = self.replies.popleft() if self.replies else self.default
        return await _answer(request, reply)


async def _answer(request: web.Request, reply: Reply) -> web.StreamResponse:
    if not reply.chunked:
        response = web.Response(status=reply.status, body=reply.body or None)
        for name, value in reply.headers:
            response.headers.add(name, value)
        return response

    stream = web.StreamResponse(status=reply.status)
    for name, value in reply.headers:
        stream.headers.add(name, value)
    stream.enable_chunked_encoding()
    await stream.prepare(request)
    for start in range(0, len(reply.body), 7):
        await stream.write(reply.body[start : start + 7])
    await stream.write_eof()
    return stream
