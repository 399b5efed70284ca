"""Net: turn coded errors into what an information system or a peer receives.

This is the one place where the origin prefix is added to a code
(soap-message.md §10.2) and where errors are logged, once.
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from protocol import rest, soap
from protocol.errors import (
    CLIENT,
    SERVER_PROXY,
    ClientRequestError,
    InternalError,
    RemoteFault,
    XRoadError,
)

log = logging.getLogger(__name__)


def fault_code(err: XRoadError, server_prefix: str) -> str:
    """Full fault code: the side's prefix, or ``Client.`` for an IS's bad input.

    Only the client proxy talks to information systems; whatever the server
    proxy refuses came from another security server and keeps its prefix.
    """
    if isinstance(err, RemoteFault):
        return err.remote_code
    from_client = isinstance(err, ClientRequestError) and server_prefix != SERVER_PROXY
    prefix = CLIENT if from_client else server_prefix
    return err.fault_code(prefix)


def as_xroad_error(exc: BaseException) -> XRoadError:
    """Map an unexpected exception to ``InternalError``, logging its traceback."""
    if isinstance(exc, XRoadError):
        return exc
    log.error("unexpected error", exc_info=exc)
    return InternalError("internal error")


def soap_fault_response(err: XRoadError, server_prefix: str) -> web.Response:
    """A SOAP fault as X-Road sends it: HTTP 200, text/xml (soap-message.md §10.1)."""
    code = fault_code(err, server_prefix)
    detail_id = str(uuid.uuid4())
    log.warning("fault code=%s detail=%s message=%s", code, detail_id, err.message)
    body = soap.build_fault(code, err.message, detail_id)
    return web.Response(
        body=body,
        headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": ""},
    )


def rest_error_response(
    err: XRoadError, server_prefix: str, accept: str | None
) -> web.Response:
    """A REST error document with the ``X-Road-Error`` header (rest-message.md §6)."""
    if isinstance(err, RemoteFault) and err.detail_id:
        code, detail_id = err.remote_code, err.detail_id
    else:
        code, detail_id = fault_code(err, server_prefix), str(uuid.uuid4())
    log.warning("error code=%s detail=%s message=%s", code, detail_id, err.message)
    status, content_type, body = rest.build_error(code, err.message, detail_id, accept)
    return web.Response(
        status=status,
        body=body,
        headers={"Content-Type": content_type, "X-Road-Error": code},
    )
