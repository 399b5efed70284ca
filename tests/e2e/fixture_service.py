"""Test helper: a scripted SOAP service that a provider's security server calls.

The conformance suite (``test_conformance_soap.py``) tells it which bytes to
answer with, under which Content-Type and HTTP status, and reads back exactly
what the security server sent to it. Nothing here parses or checks SOAP: the
service must be able to answer with broken messages on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

PATH = "/fixture-service"


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    """What the service answers with: exact body bytes, type and status."""

    body: bytes
    content_type: str
    status: int = 200


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the service saw it: headers in wire order and raw body."""

    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


class FixtureService:
    """An aiohttp service on ``host:port`` that plays back one scripted answer.

    Calls are served one at a time by the tests, so one current answer is
    enough; a call that arrives with no answer scripted gets HTTP 599, which
    the security server must report as an HTTP error.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.received: list[ReceivedRequest] = []
        self._answer: ScriptedAnswer | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def answer_with(self, body: bytes, content_type: str, status: int = 200) -> None:
        """Script the next answers and forget what was received so far."""
        self._answer = ScriptedAnswer(body, content_type, status)
        self.received.clear()

    def reset(self) -> None:
        self._answer = None
        self.received.clear()

    async def start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers
        )
        self.received.append(
            ReceivedRequest(request.method, headers, await request.read())
        )
        answer = self._answer
        if answer is None:
            log.warning("fixture service called with no answer scripted")
            return web.Response(status=599, text="no answer scripted")
        # Set the header by hand: aiohttp would rewrite a content_type argument.
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": answer.content_type},
        )
