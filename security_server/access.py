"""Net: the access log -- one line per proxied message (DESIGN.md, Logs).

Handlers note the exchange's identifiers on the request as soon as they know
them; the line is written when the answer is ready. Never bodies or user ids.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from protocol.identifiers import ClientId, ServiceId

access_log = logging.getLogger("security_server.access")

# aiohttp 3.12+ has typed request keys; older releases take a plain string.
_KEY = (
    web.RequestKey("xgate_exchange", tuple)
    if hasattr(web, "RequestKey")
    else "xgate_exchange"
)


def header_text(raw: bytes) -> str:
    """A header name or value as text: UTF-8 when it is, byte for byte otherwise.

    aiohttp writes header text as UTF-8, so UTF-8 input travels unchanged.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def note_exchange(
    request: web.Request, query_id: str, client: ClientId, service: ServiceId
) -> None:
    request[_KEY] = (query_id, str(client), str(service))


def log_access(
    side: str, request: web.Request, response: web.StreamResponse, started: float
) -> None:
    query_id, client, service = request.get(_KEY, ("-", "-", "-"))
    access_log.info(
        "%s query=%s client=%s service=%s status=%s error=%s duration_ms=%d",
        side,
        query_id,
        client,
        service,
        response.status,
        response.headers.get("X-Road-Error", "-"),
        (time.monotonic() - started) * 1000,
    )
