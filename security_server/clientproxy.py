"""Net: the client proxy -- where a consumer's information system enters X-Road.

It parses the X-Road SOAP or REST request (soap-message.md, rest-message.md),
signs it with the client member's key, sends it over mutual TLS to a provider's
security server (transport.md), checks and logs the signed answer, and only
then gives it back to the information system.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from protocol import mime, rest, soap, transport
from protocol.digests import sha512
from protocol.errors import (
    CLIENT_PROXY,
    InconsistentResponse,
    InvalidContentType,
    InvalidHttpMethod,
    InvalidRequest,
    InvalidSoap,
    MissingSoap,
    RemoteFault,
    ServiceFailed,
    SignatureVerificationError,
    XRoadError,
)
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId, ServiceId
from protocol.transport import ProxyMessage
from protocol.trust import SignedParts, verify_message_signature

from . import attachments, metaservices, spool
from .access import header_text, log_access, note_exchange
from .faults import as_xroad_error, rest_error_response, soap_fault_response
from .messagelog import LogRecord
from .peers import Reply
from .runtime import Runtime

log = logging.getLogger(__name__)

SOAP_TYPES = {"text/xml", "application/xop+xml"}
MULTIPART_RELATED = "multipart/related"

# The X-Road release whose transport protocol we speak; providers compare it
# with a configured minimum, so it must be a valid semantic version.
PROXY_VERSION = "7.7.0"


class FaultAsRequest(InvalidSoap):
    """A SOAP fault sent as a request: refused under the fault's own code.

    X-Road answers ``Client.<the fault's code>``; the MANIFEST row for
    ``fault.query`` expects ``client.code`` for a fault whose code is CODE.
    """

    def __init__(self, fault_code: str) -> None:
        super().__init__("a SOAP fault is not a request")
        local = fault_code.strip().rpartition(":")[2]
        self.fault_local_code = re.sub(r"[^A-Za-z0-9._-]", "", local) or "InvalidSoap"

    @property
    def full_code(self) -> str:
        return self.fault_local_code


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """A signed request ready to send, with what is needed to judge its answer."""

    client: ClientId
    service: ServiceId
    query_id: str
    request_id: str
    headers: dict[str, str]
    body: bytes
    target: str | None  # SecurityServerId slash form, when the client chose one


class ClientProxy:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.rt.settings.max_body_bytes,
            middlewares=[self._unrouted],
        )
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @web.middleware
    async def _unrouted(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Answer what no route matches (``OPTIONS *``, ``CONNECT``) with a fault too."""
        if request.match_info.http_exception is not None:
            return await self.handle(request)
        return await handler(request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        is_rest = request.path.startswith("/r1/")
        try:
            if is_rest:
                response = await self._rest(request)
            elif metaservices.is_local_request(request, self.rt):
                response = await metaservices.answer_local(self.rt, request)
            else:
                response = await self._soap(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a fault
            err = as_xroad_error(exc)
            if is_rest:
                response = rest_error_response(
                    err, CLIENT_PROXY, request.headers.get("Accept")
                )
            else:
                response = soap_fault_response(err, CLIENT_PROXY)
        log_access("client-proxy", request, response, started)
        return response

    # -- SOAP ----------------------------------------------------------------

    async def _soap(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise InvalidHttpMethod(
                f"SOAP requests must use POST, not {request.method}"
            )
        now = self.rt.clock()
        conf = self.rt.global_conf(now)
        content_type = request.headers.get("Content-Type")
        if not content_type:
            raise InvalidRequest("request has no Content-Type")
        mime_type, _ = mime.parse_content_type(content_type)
        if mime_type not in SOAP_TYPES and mime_type != MULTIPART_RELATED:
            raise InvalidContentType(f"unsupported content type {mime_type!r}")
        soap_action = request.headers.get("SOAPAction")
        soap.check_soap_action(soap_action)
        package = await attachments.receive_soap_package(
            request.content.iter_chunked(spool.CHUNK),
            content_type,
            directory=self.rt.spool_dir,
            max_bytes=self.rt.settings.max_body_bytes,
        )
        try:
            return await self._soap_exchange(
                request, package, content_type, soap_action, conf, now
            )
        finally:
            package.close()

    async def _soap_exchange(
        self,
        request: web.Request,
        package: attachments.SoapPackage,
        content_type: str,
        soap_action: str | None,
        conf: GlobalConf,
        now: datetime,
    ) -> web.StreamResponse:
        message = package.parsed
        if isinstance(message, soap.SoapFault):
            raise FaultAsRequest(message.code)
        soap_part = package.soap_part or mime.MimePart(
            (("content-type", content_type),), package.raw
        )
        raw = soap_part.body
        header = message.header
        note_exchange(request, header.query_id, header.client, header.service)
        await self.rt.check_local_client(conf, header.client)
        target = header.security_server

        request_id = str(uuid.uuid4())
        digests = [("/message.xml", sha512(raw))] + [
            (f"/attachment{index}", part.body.digest)
            for index, part in enumerate(package.attachments, start=1)
        ]
        signed = await self.rt.sign(header.client, digests, now)
        proxy_message = ProxyMessage(
            ocsp_responses=self.rt.auth_ocsp_responses(),
            soap=soap_part,
            signature=signed.signature,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
        )
        extra = {
            "x-proxy-version": PROXY_VERSION,
            "x-road-request-id": request_id,
            "x-original-content-type": content_type,
        }
        if soap_action is not None:
            extra["x-original-soapaction"] = soap_action
        headers, source = spool.proxy_message_source(
            proxy_message, None, extra, package.attachments
        )
        outbound = OutboundRequest(
            header.client,
            header.service,
            header.query_id,
            request_id,
            headers,
            b"",
            target.slash() if target else None,
        )
        # SOAP attachments are covered by a hash chain and not kept in the
        # log (message-log.md §2).
        await self._log(outbound, raw, signed, response=False, attachments=[])

        reply = await self.rt.peers.send(
            conf,
            header.service.provider,
            outbound.target,
            outbound.headers,
            source,
            now=now,
            spool=(self.rt.spool_dir, self.rt.settings.max_body_bytes),
        )
        try:
            if reply.fault is not None:
                return _verbatim_fault(reply.fault)
            return await self._soap_answer(request, outbound, reply, header, raw, now)
        finally:
            reply.close()

    async def _soap_answer(
        self,
        request: web.Request,
        outbound: OutboundRequest,
        reply: Reply,
        header: soap.SoapHeader,
        raw: bytes,
        now: datetime,
    ) -> web.StreamResponse:
        """Verify, check and log the answer, then stream it to the client."""
        received = spool.ReceivedMessage(reply.message, reply.body, reply.attachments)
        answer = self._verify_reply(
            reply, header.service.provider, now, received.part_digests()
        )
        answer_part = answer.soap
        if answer_part is None:
            raise ServiceFailed.wrap(MissingSoap("provider answer has no SOAP part"))
        try:
            parsed = soap.parse_soap(answer_part.body, answer_part.content_type or "")
            if isinstance(parsed, soap.SoapFault):
                return _verbatim_fault(answer_part.body)
            soap.check_response(header, parsed, soap.request_hash(raw))
        except soap.InconsistentResponseHeaders as err:
            raise ServiceFailed.wrap(err) from err
        except InconsistentResponse:
            raise
        except XRoadError as err:
            raise ServiceFailed.wrap(err) from err
        await self._log(
            outbound, answer_part.body, answer_signed(answer), response=True
        )
        return await _soap_response(
            request, answer_part, reply.attachments, reply.original_content_type
        )

    # -- REST ----------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        now = self.rt.clock()
        conf = self.rt.global_conf(now)
        decoded = [(header_text(k), header_text(v)) for k, v in request.raw_headers]
        path, question, query = request.raw_path.partition("?")
        info = rest.parse_rest_request(
            request.method, path, query if question else None, decoded
        )
        note_exchange(request, info.query_id or "-", info.client, info.service)
        await self.rt.check_local_client(conf, info.client)
        body = await spool.spool_stream(
            request.content.iter_chunked(spool.CHUNK),
            self.rt.spool_dir,
            self.rt.settings.max_body_bytes,
        )
        try:
            return await self._rest_exchange(request, info, decoded, body, conf, now)
        finally:
            body.close()

    async def _rest_exchange(
        self,
        request: web.Request,
        info: rest.RestRequestInfo,
        decoded: list[tuple[str, str]],
        body: spool.Spool,
        conf: GlobalConf,
        now: datetime,
    ) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        generated_id = None
        query_id = info.query_id
        if not query_id:
            generated_id = f"{self.rt.settings.instance}-{uuid.uuid4()}"
            query_id = generated_id
        header_part = rest.build_request_part(
            request.method,
            request.raw_path,
            decoded,
            request_id,
            generated_query_id=generated_id,
        )
        sent_body = body if body.size else None
        digests = [("/message.xml", sha512(header_part))]
        if sent_body is not None:
            digests.append(("/attachment1", sent_body.digest))
        signed = await self.rt.sign(info.client, digests, now)
        proxy_message = ProxyMessage(
            ocsp_responses=self.rt.auth_ocsp_responses(),
            rest_request=header_part,
            signature=signed.signature,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
        )
        target = info.target_security_server
        target_id = target.slash() if target else None
        headers, source = spool.proxy_message_source(
            proxy_message,
            sent_body,
            {
                "x-proxy-version": PROXY_VERSION,
                "x-road-request-id": request_id,
                "x-road-message-type": "REST",
            },
        )
        outbound = OutboundRequest(
            info.client, info.service, query_id, request_id, headers, b"", target_id
        )
        await self._log(
            outbound,
            header_part,
            signed,
            response=False,
            attachments=[await self._loggable(sent_body)] if sent_body else [],
        )

        reply = await self.rt.peers.send(
            conf,
            info.service.provider,
            target_id,
            outbound.headers,
            source,
            now=now,
            spool=(self.rt.spool_dir, self.rt.settings.max_body_bytes),
        )
        try:
            if reply.fault is not None:
                fault = soap.parse_fault(reply.fault)
                raise RemoteFault(fault.code, fault.string, fault.detail or "")
            return await self._rest_answer(
                request, outbound, reply, header_part, sent_body, now
            )
        finally:
            reply.close()

    async def _rest_answer(
        self,
        request: web.Request,
        outbound: OutboundRequest,
        reply: Reply,
        header_part: bytes,
        sent_body: spool.Spool | None,
        now: datetime,
    ) -> web.StreamResponse:
        """Verify, check and log the answer, then stream it to the client."""
        received = spool.ReceivedMessage(reply.message, reply.body)
        answer = self._verify_reply(
            reply, outbound.service.provider, now, received.part_digests()
        )
        if answer.rest_response is None:
            raise InvalidSoap("provider answer has no REST response part")
        part = rest.parse_response_part(answer.rest_response)
        rest.check_rest_response(
            list(part.headers),
            client=outbound.client,
            service=outbound.service,
            query_id=outbound.query_id,
            request_id=outbound.request_id,
            request_hash=rest.rest_request_hash_from_digest(
                header_part, sent_body.digest if sent_body else None
            ),
        )
        answer_body = reply.body
        await self._log(
            outbound,
            answer.rest_response,
            answer_signed(answer),
            response=True,
            attachments=[await self._loggable(answer_body)] if answer_body else [],
        )
        if answer_body is None:
            return _rest_response(part, b"")
        response = web.StreamResponse(status=part.status)
        for name, value in part.headers:
            if name.lower() not in rest.FILTERED_HEADERS:
                response.headers.add(name, value)
        response.content_length = answer_body.size
        await response.prepare(request)
        async for chunk in answer_body.chunks():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _loggable(self, body: spool.Spool | None) -> bytes:
        if body is None:
            return b""
        settings = self.rt.settings
        return await spool.loggable_body(
            body,
            max_bytes=settings.max_loggable_body_bytes,
            truncated_allowed=settings.truncated_body_allowed,
        )

    # -- shared steps --------------------------------------------------------

    def _verify_reply(  # type: ignore[no-untyped-def]
        self,
        reply,
        provider: ClientId,
        now,
        digests: list[tuple[str, bytes]] | None = None,
    ) -> ProxyMessage:
        answer = reply.message
        if answer.signature is None:
            raise SignatureVerificationError(
                "provider answer is not signed", detail="MissingSignature"
            )
        if digests is None:
            digests = transport.part_digests(answer)
        parts = SignedParts(
            signature=answer.signature,
            part_digests=dict(digests),
            hash_chain_result=answer.hash_chain_result,
            hash_chain=answer.hash_chain,
        )
        verify_message_signature(
            parts, signer=provider, global_conf=self.rt.global_conf(now), at=now
        )
        return answer

    async def _log(
        self,
        outbound: OutboundRequest,
        message: bytes,
        signed,  # type: ignore[no-untyped-def]
        *,
        response: bool,
        attachments: list[bytes] | None = None,
    ) -> None:
        record = LogRecord(
            query_id=outbound.query_id,
            x_request_id=outbound.request_id,
            response=response,
            filed_under=outbound.client,
            client=outbound.client,
            service=outbound.service,
            message=message,
            signature=signed.signature,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
            attachments=list(attachments or []),
            rest="x-road-message-type" in outbound.headers,
        )
        await self.rt.log_message(record)


@dataclass(frozen=True, slots=True)
class _AnswerSignature:
    signature: bytes
    hash_chain_result: bytes | None
    hash_chain: bytes | None


def answer_signed(answer: ProxyMessage) -> _AnswerSignature:
    assert answer.signature is not None
    return _AnswerSignature(
        answer.signature, answer.hash_chain_result, answer.hash_chain
    )


async def _soap_response(
    request: web.Request,
    part: mime.MimePart,
    parts: list[spool.SpooledPart],
    original_type: str | None,
) -> web.StreamResponse:
    """The answer as the service gave it: plain SOAP, or re-framed multipart.

    A multipart answer is framed again with the service's own boundary, its
    attachments streamed from their spools.
    """
    if original_type:
        mime_type, params = mime.parse_content_type(original_type)
        if mime_type == MULTIPART_RELATED and params.get("boundary"):
            length, source = attachments.package_source(part, parts, params["boundary"])
            response = web.StreamResponse(headers={"Content-Type": original_type})
            response.content_length = length
            await response.prepare(request)
            async for chunk in source():
                await response.write(chunk)
            await response.write_eof()
            return response
    return web.Response(
        body=part.body, headers={"Content-Type": "text/xml; charset=UTF-8"}
    )


def _verbatim_fault(raw: bytes) -> web.Response:
    return web.Response(body=raw, headers={"Content-Type": "text/xml; charset=UTF-8"})


def _rest_response(part: rest.RestResponsePart, body: bytes) -> web.Response:
    response = web.Response(status=part.status, body=body)
    for name, value in part.headers:
        if name.lower() not in rest.FILTERED_HEADERS:
            response.headers.add(name, value)
    return response


__all__ = ["ClientProxy", "InconsistentResponse", "XRoadError"]
