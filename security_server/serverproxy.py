"""Net: the server proxy -- where a consumer's security server reaches a provider.

It checks the consumer's TLS certificate with the OCSP responses the request
carries, the request signature and the client's access right, logs the
request, calls the provider's service, and signs and logs the answer before
sending it back (transport.md §9).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import yarl
from aiohttp import web
from cryptography import x509

from protocol import mime, rest, soap, transport
from protocol.digests import sha512
from protocol.errors import (
    SERVER_PROXY,
    AccessDenied,
    HttpError,
    InvalidClientIdentifier,
    InvalidContentType,
    InvalidHttpMethod,
    InvalidMessage,
    MimeParsingFailed,
    MissingSignature,
    MissingSoap,
    NetworkError,
    RequestTooLarge,
    ServiceFailed,
    ServiceType,
    SslAuthenticationFailed,
    UnknownMember,
    UnknownService,
    XRoadError,
    XRoadIOError,
)
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId, ServiceId
from protocol.signature import SignedMessage
from protocol.transport import ProxyMessage
from protocol.trust import SignedParts, check_auth_certificate, verify_message_signature

from . import attachments, metaservices, spool, tls
from .access import header_text, log_access, note_exchange
from .faults import as_xroad_error, soap_fault_response
from .messagelog import LogRecord
from .runtime import Runtime
from .serverconf import ServiceConfig

log = logging.getLogger(__name__)

# Methods whose request entity the provider's service receives (rest-message.md §2).
ENTITY_METHODS = {"POST", "PUT", "PATCH"}
PLAIN_SOAP = "text/xml; charset=UTF-8"


class ServiceDisabled(XRoadError):
    code = "ServiceDisabled"


class ServerProxy:
    def __init__(
        self, runtime: Runtime, service_session: aiohttp.ClientSession
    ) -> None:
        self.rt = runtime
        self.services = service_session

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.rt.settings.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        try:
            response = await self._handle(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a fault
            response = soap_fault_response(as_xroad_error(exc), SERVER_PROXY)
        log_access("server-proxy", request, response, started)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise InvalidHttpMethod(
                f"server proxy accepts POST only, not {request.method}"
            )
        now = self.rt.clock()
        conf = self.rt.global_conf(now)
        peer = tls.peer_certificate(request)
        if peer is None or conf.server_for_auth_cert(peer) is None:
            raise SslAuthenticationFailed(
                "client certificate is not a registered auth cert"
            )
        content_type = request.headers.get("Content-Type", "")
        try:
            received = await spool.receive_proxy_message(
                request.content.iter_chunked(spool.CHUNK),
                content_type,
                directory=self.rt.spool_dir,
                max_bytes=self.rt.settings.max_body_bytes,
            )
        except RequestTooLarge:
            raise
        except XRoadError as err:
            raise ServiceFailed.wrap(err) from err
        try:
            message = received.message
            if message.rest_request is not None:
                return await self._rest(request, received, conf, peer, now)
            return await self._soap(request, received, conf, peer, now)
        finally:
            received.close()

    # -- SOAP ----------------------------------------------------------------

    async def _soap(
        self,
        request: web.Request,
        received: spool.ReceivedMessage,
        conf: GlobalConf,
        peer: x509.Certificate,
        now: datetime,
    ) -> web.StreamResponse:
        message = received.message
        if message.soap is None:
            raise MissingSoap("request has no SOAP part")
        soap_action = request.headers.get("x-original-soapaction")
        soap.check_soap_action(soap_action)
        raw = message.soap.body
        try:
            parsed = soap.parse_soap(raw, message.soap.content_type)
            if isinstance(parsed, soap.SoapFault):
                raise MissingSoap("a SOAP fault is not a request")
            header = parsed.header
            note_exchange(request, header.query_id, header.client, header.service)
            if (
                header.security_server
                and header.security_server != self.rt.settings.server_id
            ):
                raise _invalid_target(header.security_server)
            await self._check_provider(conf, header.service.provider)
            self._check_consumer(peer, message.ocsp_responses, conf, header.client, now)
        except XRoadError as err:
            raise ServiceFailed.wrap(err) from err

        # Metaservices skip the access check (transport.md §9 step 4).
        is_meta = metaservices.is_soap_metaservice(header.service)
        if not is_meta:
            service = await self._authorize(
                header.client, header.service, "SOAP", None, None, conf
            )
        # Verified before any attachment byte goes to the service (§9 step 3).
        signed_request = self._verify_request(
            message, header.client, conf, now, received.part_digests()
        )
        await self._log(
            header.client,
            header.service,
            header.query_id,
            request,
            raw,
            signed_request,
            response=False,
        )

        original_type = request.headers.get("x-original-content-type") or (
            message.soap.content_type or "text/xml; charset=UTF-8"
        )
        if is_meta:
            answer_type, answer_body = await metaservices.answer_soap(
                self.rt, self.services, parsed, conf
            )
            package = await self._soap_package(_once(answer_body), answer_type)
        else:
            package = await self._call_soap(
                service, received, original_type, soap_action
            )
        try:
            return await self._soap_reply(request, package, header, raw, now)
        finally:
            package.close()

    async def _soap_reply(
        self,
        request: web.Request,
        package: attachments.SoapPackage,
        header: soap.SoapHeader,
        raw: bytes,
        now: datetime,
    ) -> web.StreamResponse:
        """Sign, log and stream back the service's SOAP answer (transport.md §6)."""
        if isinstance(package.parsed, soap.SoapFault):
            fault = ProxyMessage(ocsp_responses=[], fault=package.raw)
            return _multipart(fault, {})
        answer_part = package.soap_part
        source, source_type = (
            (answer_part.body, answer_part.content_type)
            if answer_part is not None
            else (package.raw, package.content_type)
        )
        answer = soap.insert_request_hash(source, soap.request_hash(raw), source_type)
        digests = [("/message.xml", sha512(answer))] + [
            (f"/attachment{index}", part.body.digest)
            for index, part in enumerate(package.attachments, start=1)
        ]
        signed = await self.rt.sign(header.service.provider, digests, now)
        await self._log(
            header.client,
            header.service,
            header.query_id,
            request,
            answer,
            signed,
            response=True,
        )
        if answer_part is None:
            answer_part = mime.MimePart((("content-type", PLAIN_SOAP),), answer)
            answer_type = PLAIN_SOAP
        else:
            answer_part = _as_utf8_part(answer_part, answer)
            answer_type = package.content_type
        reply = ProxyMessage(
            ocsp_responses=[],
            soap=answer_part,
            signature=signed.signature,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
        )
        http_headers, body = spool.proxy_message_source(
            reply, None, {"x-original-content-type": answer_type}, package.attachments
        )
        response = web.StreamResponse(headers=http_headers)
        await response.prepare(request)
        async for chunk in body():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _soap_package(
        self, chunks: AsyncIterator[bytes], content_type: str
    ) -> attachments.SoapPackage:
        """Read the service's answer, its attachments into spools."""
        try:
            return await attachments.receive_soap_package(
                chunks,
                content_type,
                directory=self.rt.spool_dir,
                max_bytes=self.rt.settings.max_body_bytes,
            )
        except (MimeParsingFailed, MissingSoap) as err:
            # A multipart answer without a usable SOAP part is not a message.
            raise ServiceFailed.wrap(InvalidMessage(err.message)) from err
        except XRoadError as err:
            raise ServiceFailed.wrap(err) from err

    async def _call_soap(
        self,
        service: ServiceConfig,
        received: spool.ReceivedMessage,
        original_type: str,
        soap_action: str | None,
    ) -> attachments.SoapPackage:
        body, content_type, length = _service_request(received, original_type)
        headers = {"Content-Type": content_type, "Accept-Encoding": ""}
        if length is not None:
            headers["Content-Length"] = str(length)
        if soap_action is not None:
            headers["SOAPAction"] = soap_action
        try:
            async with self.services.post(
                service.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=service.timeout),
            ) as response:
                if response.status not in (200, 500):
                    raise HttpError(f"service answered HTTP {response.status}")
                answer_type = response.headers.get("Content-Type")
                if not answer_type:
                    raise InvalidContentType("service answer has no Content-Type")
                return await self._soap_package(
                    response.content.iter_chunked(spool.CHUNK), answer_type
                )
        except ServiceFailed:
            raise
        except XRoadError as err:
            raise ServiceFailed.wrap(err) from err
        except TimeoutError as exc:
            raise ServiceFailed.wrap(XRoadIOError("service timed out")) from exc
        except aiohttp.ClientError as exc:
            raise ServiceFailed.wrap(_unreachable(exc)) from exc

    # -- REST ----------------------------------------------------------------

    async def _rest(
        self,
        request: web.Request,
        received: spool.ReceivedMessage,
        conf: GlobalConf,
        peer: x509.Certificate,
        now: datetime,
    ) -> web.StreamResponse:
        message = received.message
        assert message.rest_request is not None
        try:
            part = rest.parse_request_part(message.rest_request)
            service_id, service_path = rest.parse_rest_path(part.path)
            client = _rest_client(part)
            await self._check_provider(conf, service_id.provider)
            self._check_consumer(peer, message.ocsp_responses, conf, client, now)
        except XRoadError as err:
            raise ServiceFailed.wrap(err) from err
        query_id = rest.last_header(list(part.headers), rest.HEADER_ID) or ""
        request_id = rest.last_header(list(part.headers), rest.HEADER_REQUEST_ID) or ""
        note_exchange(request, query_id, client, service_id)

        is_meta = metaservices.is_rest_metaservice(part.method, service_id)
        if not is_meta:
            service = await self._authorize(
                client, service_id, "REST", part.method, service_path, conf
            )
        signed_request = self._verify_request(
            message, client, conf, now, received.part_digests()
        )
        body = received.body
        has_body = body is not None and body.size > 0
        await self._log(
            client,
            service_id,
            query_id,
            None,
            message.rest_request,
            signed_request,
            response=False,
            attachments=[await self._loggable(body)] if has_body else [],
            request_id=request_id,
        )

        answer: spool.Spool | None = None
        try:
            if is_meta:
                status, reason, headers, small = await metaservices.answer_rest(
                    self.rt, self.services, client, service_id, part.query, conf
                )
                if small is not None:
                    answer = spool.Spool(self.rt.spool_dir, len(small) + 1)
                    await answer.write(small)
            else:
                status, reason, headers, answer = await self._call_rest(
                    service, part, service_path, body
                )
            return await self._rest_reply(
                request,
                received,
                (status, reason, headers, answer),
                client=client,
                service_id=service_id,
                query_id=query_id,
                request_id=request_id,
                now=now,
            )
        finally:
            if answer is not None:
                answer.close()

    async def _rest_reply(
        self,
        request: web.Request,
        received: spool.ReceivedMessage,
        answer: tuple[int, str, list[tuple[str, str]], spool.Spool | None],
        *,
        client: ClientId,
        service_id: ServiceId,
        query_id: str,
        request_id: str,
        now: datetime,
    ) -> web.StreamResponse:
        """Sign, log and stream back the service's answer (transport.md §8)."""
        status, reason, headers, body = answer
        rest_request = received.message.rest_request
        assert rest_request is not None
        request_body = received.body
        response_headers = rest.response_headers_for_client(
            headers,
            client=client,
            service=service_id,
            query_id=query_id,
            request_id=request_id,
            request_hash=rest.rest_request_hash_from_digest(
                rest_request,
                request_body.digest if request_body and request_body.size else None,
            ),
        )
        response_part = rest.build_response_part(status, reason, response_headers)
        digests = [("/message.xml", sha512(response_part))]
        if body is not None:
            digests.append(("/attachment1", body.digest))
        signed = await self.rt.sign(service_id.provider, digests, now)
        await self._log(
            client,
            service_id,
            query_id,
            None,
            response_part,
            signed,
            response=True,
            attachments=[await self._loggable(body)] if body is not None else [],
            request_id=request_id,
        )
        reply = ProxyMessage(
            ocsp_responses=[],
            rest_response=response_part,
            signature=signed.signature,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
        )
        http_headers, source = spool.proxy_message_source(
            reply, body, {"x-road-message-type": "REST"}
        )
        response = web.StreamResponse(headers=http_headers)
        await response.prepare(request)
        async for chunk in source():
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

    async def _call_rest(
        self,
        service: ServiceConfig,
        part: rest.RestRequestPart,
        service_path: str,
        body: spool.Spool | None,
    ) -> tuple[int, str, list[tuple[str, str]], spool.Spool | None]:
        # The path and query go exactly as the client wrote them: no
        # re-encoding, no dot-segment resolution (rest-message.md §1, §7).
        url = yarl.URL(_join_url(service.url, service_path, part.query), encoded=True)
        data = None
        if part.method in ENTITY_METHODS and body is not None:
            data = body.chunks() if body.size else b""
        sent = {name.lower() for name, _ in part.headers}
        # Nothing is added that the client did not send (rest-message.md §2).
        skip = {h for h in ("Content-Type", "Accept") if h.lower() not in sent}
        try:
            async with self.services.request(
                part.method,
                url,
                data=data,
                headers=list(part.headers),
                skip_auto_headers=skip,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=service.timeout),
            ) as response:
                answer = await spool.spool_stream(
                    response.content.iter_chunked(spool.CHUNK),
                    self.rt.spool_dir,
                    self.rt.settings.max_body_bytes,
                )
                headers = [
                    (header_text(k), header_text(v)) for k, v in response.raw_headers
                ]
                has_entity = part.method != "HEAD" and (
                    answer.size > 0
                    or "Content-Length" in response.headers
                    or "Content-Type" in response.headers
                )
                if not has_entity:
                    answer.close()
                return (
                    response.status,
                    response.reason or "",
                    headers,
                    (answer if has_entity else None),
                )
        except TimeoutError as exc:
            raise XRoadIOError("service timed out") from exc
        except aiohttp.ClientError as exc:
            raise _unreachable(exc) from exc

    # -- shared steps --------------------------------------------------------

    async def _check_provider(self, conf: GlobalConf, provider: ClientId) -> None:
        if not await self.rt.hosts(conf, provider):
            raise UnknownMember(f"{provider} is not a client of this security server")

    def _check_consumer(
        self,
        peer: x509.Certificate,
        ocsp_responses: list[bytes],
        conf: GlobalConf,
        client: ClientId,
        now: datetime,
    ) -> None:
        if not ocsp_responses:
            raise SslAuthenticationFailed(
                "request carries no OCSP response for the TLS cert"
            )
        server = check_auth_certificate(
            peer,
            ocsp_responses=ocsp_responses,
            global_conf=conf,
            instance=client.instance,
            at=now,
        )
        if not conf.is_client_of(server.id, client):
            raise SslAuthenticationFailed(f"{client} is not a client of {server.id}")

    async def _authorize(
        self,
        client: ClientId,
        service_id: ServiceId,
        kind: str,
        method: str | None,
        path: str | None,
        conf: GlobalConf,
    ) -> ServiceConfig:
        service = await self.rt.find_service(service_id)
        if service is None:
            raise UnknownService(f"Unknown service: {service_id}")
        if service.kind != kind:
            raise ServiceType(f"{service_id} is a {service.kind} service, not {kind}")
        if not await self.rt.is_allowed(client, service_id, method, path, conf):
            raise AccessDenied(f"Request is not allowed: {service_id}")
        if service.disabled_notice:
            raise ServiceDisabled(
                f"Service {service_id} is disabled: {service.disabled_notice}"
            )
        return service

    def _verify_request(
        self,
        message: ProxyMessage,
        client: ClientId,
        conf: GlobalConf,
        now: datetime,
        digests: list[tuple[str, bytes]] | None = None,
    ) -> SignedMessage:
        if message.signature is None:
            raise MissingSignature("request is not signed")
        if digests is None:
            digests = transport.part_digests(message)
        parts = SignedParts(
            signature=message.signature,
            part_digests=dict(digests),
            hash_chain_result=message.hash_chain_result,
            hash_chain=message.hash_chain,
        )
        verify_message_signature(parts, signer=client, global_conf=conf, at=now)
        return SignedMessage(
            message.signature, message.hash_chain_result, message.hash_chain
        )

    async def _log(
        self,
        client: ClientId,
        service_id: ServiceId,
        query_id: str,
        request: web.Request | None,
        message: bytes,
        signed: SignedMessage,
        *,
        response: bool,
        attachments: list[bytes] | None = None,
        request_id: str | None = None,
    ) -> None:
        if request_id is None and request is not None:
            request_id = request.headers.get("x-road-request-id", "")
        record = LogRecord(
            query_id=query_id,
            x_request_id=request_id or "",
            response=response,
            filed_under=service_id.provider,
            client=client,
            service=service_id,
            message=message,
            signature=signed.signature,
            hash_chain_result=signed.hash_chain_result,
            hash_chain=signed.hash_chain,
            attachments=list(attachments or []),
            rest=request is None,
        )
        await self.rt.log_message(record)


def _rest_client(part: rest.RestRequestPart) -> ClientId:
    value = rest.last_header(list(part.headers), rest.HEADER_CLIENT)
    if value is None:
        raise InvalidClientIdentifier("REST request part has no X-Road-Client header")
    return ClientId.parse_slash(value)


def _invalid_target(target: object) -> XRoadError:
    from protocol.errors import InvalidSecurityServer

    return InvalidSecurityServer(f"message is addressed to {target}")


def _as_utf8_part(part: mime.MimePart, body: bytes) -> mime.MimePart:
    """The SOAP part with its new body, which is UTF-8 whatever it was before."""
    mime_type, params = mime.parse_content_type(part.content_type or PLAIN_SOAP)
    parameters = "".join(
        f'; {name}="{value}"' for name, value in params.items() if name != "charset"
    )
    content_type = f"{mime_type}; charset=UTF-8{parameters}"
    headers = [("content-type", content_type)]
    headers += [(n, v) for n, v in part.headers if n.lower() != "content-type"]
    return mime.MimePart(tuple(headers), body)


def _service_request(
    received: spool.ReceivedMessage, original_type: str
) -> tuple[bytes | AsyncIterator[bytes], str, int | None]:
    """The body, type and length the service receives (soap-message.md §7, §8).

    A request that came as ``multipart/related`` is re-framed with its
    original boundary, its attachments streamed from their spools; a plain
    one goes as the SOAP bytes received.
    """
    soap_part = received.message.soap
    assert soap_part is not None
    mime_type, params = mime.parse_content_type(original_type)
    if mime_type == "multipart/related" and params.get("boundary"):
        length, source = attachments.package_source(
            soap_part, received.attachments, params["boundary"]
        )
        return source(), original_type, length
    return soap_part.body, soap_part.content_type or PLAIN_SOAP, None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _unreachable(exc: BaseException) -> NetworkError:
    """The fault names no internal address; the log keeps the detail."""
    log.warning("service unreachable error=%r", exc)
    return NetworkError("cannot reach the service")


def _join_url(base: str, path: str, query: str | None) -> str:
    if base.endswith("/") and path.startswith("/"):
        base = base[:-1]
    url = base + path
    return url if query is None else f"{url}?{query}"


def _multipart(message: ProxyMessage, headers: dict[str, str]) -> web.Response:
    boundary = transport.random_boundary(uuid.uuid4().bytes + uuid.uuid4().bytes)
    body = transport.encode_proxy_message(message, boundary, "xatt" + uuid.uuid4().hex)
    return web.Response(
        body=body,
        headers={
            "Content-Type": f"multipart/mixed; charset=UTF-8; boundary={boundary}",
            "x-hash-algorithm": "SHA-512",
            **headers,
        },
    )
