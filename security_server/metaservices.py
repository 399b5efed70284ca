"""Net: the metaservices a security server answers itself (metaservices.md).

Provider side: SOAP ``listMethods``/``allowedMethods``/``getWsdl`` and REST
``listMethods``/``allowedMethods``/``getOpenAPI``, answered in place of the
information system inside a normal signed and logged exchange; only the
access check is skipped (transport.md §9 step 4). Consumer side: the local
``GET /listClients`` and, behind a switch, the legacy ``GET /wsdl`` (§4.1).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiohttp
from aiohttp import web

from protocol import metaservices as meta
from protocol import mime, soap
from protocol.errors import (
    InvalidContentType,
    NetworkError,
    ServiceType,
    UnknownService,
    XRoadError,
)
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId, ServiceId
from protocol.xsd import IDENTIFIERS_XSD, xroad_xsd

from . import descriptions
from .runtime import Runtime
from .serverconf import ANY_METHOD, ANY_PATH, ServiceConfig, ServiceKind

log = logging.getLogger(__name__)

LIST_CLIENTS_PATH = "/listClients"
LEGACY_WSDL_PATH = "/wsdl"
# Served with the legacy switch on, so a WSDL's relative schema imports
# resolve against the client proxy (metaservices.md §4.1).
SCHEMA_PATHS = {"/xroad.xsd": xroad_xsd(), "/identifiers.xsd": IDENTIFIERS_XSD}

RestAnswer = tuple[int, str, list[tuple[str, str]], bytes]


class LegacyWsdlNotConfigured(XRoadError):
    """``GET /wsdl`` is switched on without a client subsystem to act for."""

    code = "LegacyWsdlNotConfigured"


# -- provider side ------------------------------------------------------------


def is_soap_metaservice(service_id: ServiceId) -> bool:
    return service_id.service_code in meta.SOAP_METASERVICES


def is_rest_metaservice(method: str, service_id: ServiceId) -> bool:
    """Only ``GET`` is a metaservice; other methods are ordinary calls (§5)."""
    return method == "GET" and service_id.service_code in meta.REST_METASERVICES


async def answer_soap(
    rt: Runtime,
    session: aiohttp.ClientSession,
    message: soap.SoapMessage,
    conf: GlobalConf,
) -> tuple[str, bytes]:
    """Answer a SOAP metaservice as a service would: (content type, body)."""
    header = message.header
    code = header.service.service_code
    provider = header.service.provider
    if code == meta.GET_WSDL:
        return await _get_wsdl(rt, session, message.raw, provider)

    services = [s for s in await _services(rt, provider) if s.kind == ServiceKind.SOAP]
    if code == meta.ALLOWED_METHODS:
        services = [
            s
            for s in services
            if await rt.is_allowed(header.client, s.service_id, None, None, conf)
        ]
    body = meta.build_method_list_response(
        message.raw, [s.service_id for s in services]
    )
    return meta.METHOD_LIST_TYPE, body


async def _get_wsdl(
    rt: Runtime, session: aiohttp.ClientSession, raw: bytes, provider: ClientId
) -> tuple[str, bytes]:
    target = meta.parse_get_wsdl_request(raw, provider)
    service = await rt.find_service(target)
    if service is None or not service.description_url:
        raise UnknownService(f"no WSDL is known for {target}")
    if service.kind != ServiceKind.SOAP:
        raise ServiceType(f"{target} is a {service.kind} service, not SOAP")

    _, wsdl = await fetch_description(session, service)
    soap_part, attachment = meta.build_get_wsdl_response(
        raw, meta.rewrite_wsdl_addresses(wsdl), str(uuid.uuid4())
    )
    boundary = "xmeta" + uuid.uuid4().hex
    body = mime.build_multipart(
        [mime.MimePart((("Content-Type", soap.FAULT_CONTENT_TYPE),), soap_part)]
        + [attachment],
        boundary,
    )
    content_type = (
        f'multipart/related; type="text/xml"; charset=UTF-8; boundary={boundary}'
    )
    return content_type, body


async def answer_rest(
    rt: Runtime,
    session: aiohttp.ClientSession,
    client: ClientId,
    service_id: ServiceId,
    query: str | None,
    conf: GlobalConf,
) -> RestAnswer:
    """Answer a REST metaservice: (status, reason, headers, body)."""
    provider = service_id.provider
    if service_id.service_code == meta.GET_OPENAPI:
        return await _get_openapi(rt, session, provider, query)

    services = [s for s in await _services(rt, provider) if s.kind == ServiceKind.REST]
    allowed_only = service_id.service_code == meta.ALLOWED_METHODS
    entries = []
    for service in services:
        sid = service.service_id
        if allowed_only and not await rt.is_allowed(client, sid, None, None, conf):
            continue
        endpoints = [
            e
            for e in await asyncio.to_thread(rt.serverconf.endpoints, sid)
            if (e.method, e.path) != (ANY_METHOD, ANY_PATH)
        ]
        if allowed_only:
            endpoints = [
                e
                for e in endpoints
                if await rt.is_allowed(client, sid, e.method, e.path, conf)
            ]
        service_type = (
            meta.SERVICE_TYPE_OPENAPI
            if service.description_url
            else meta.SERVICE_TYPE_REST
        )
        entries.append(
            meta.RestServiceEntry(
                sid, service_type, tuple((e.method, e.path) for e in endpoints)
            )
        )
    body = meta.build_rest_method_list(entries)
    return 200, "OK", [("Content-Type", "application/json")], body


async def _get_openapi(
    rt: Runtime,
    session: aiohttp.ClientSession,
    provider: ClientId,
    query: str | None,
) -> RestAnswer:
    code = meta.parse_get_openapi_query(query)
    service = await rt.find_service(ServiceId(provider, code))
    # The reference answers InternalError for both cases (§6).
    if service is None or service.kind != ServiceKind.REST:
        raise meta.DescriptionError(f"{provider} has no REST service {code!r}")
    if not service.description_url:
        raise meta.DescriptionError(f"REST service {code!r} has no OpenAPI description")

    content_type, data = await fetch_description(session, service)
    fmt = meta.description_format(content_type, service.description_url)
    body = meta.anonymize_openapi(data, fmt)
    return 200, "OK", [("Content-Type", content_type or "text/plain")], body


async def _services(rt: Runtime, provider: ClientId) -> list[ServiceConfig]:
    """The provider's services; reserved codes are never listed (§1)."""
    services = await asyncio.to_thread(rt.serverconf.services_of, provider)
    return [
        s
        for s in services
        if s.service_id.service_code not in meta.RESERVED_SERVICE_CODES
    ]


async def fetch_description(
    session: aiohttp.ClientSession, service: ServiceConfig
) -> tuple[str | None, bytes]:
    """GET a service description; anything but HTTP 200 is an ``InternalError``.

    TLS certificates are verified by the session's defaults: ServiceConfig has
    no per-service verification setting yet.
    """
    url = service.description_url or ""
    try:
        fetched = await descriptions.fetch_description(
            url, session, timeout=service.timeout
        )
    except XRoadError as err:
        raise meta.DescriptionError(
            f"cannot fetch the description: {err.message}"
        ) from err
    return fetched.content_type, fetched.data


# -- consumer side ------------------------------------------------------------


def is_local_request(request: web.Request, rt: Runtime) -> bool:
    """True for the GETs the client proxy answers without a SOAP exchange."""
    if request.method != "GET":
        return False
    if request.path == LIST_CLIENTS_PATH:
        return True
    legacy = request.path == LEGACY_WSDL_PATH or request.path in SCHEMA_PATHS
    return legacy and rt.settings.legacy_wsdl


async def answer_local(rt: Runtime, request: web.Request) -> web.Response:
    if request.path == LIST_CLIENTS_PATH:
        return list_clients(rt, request)
    if request.path in SCHEMA_PATHS:
        return web.Response(
            body=SCHEMA_PATHS[request.path],
            headers={"Content-Type": "text/xml; charset=UTF-8"},
        )
    return await legacy_wsdl(rt, request)


def list_clients(rt: Runtime, request: web.Request) -> web.Response:
    """``GET /listClients``: members and subsystems from global conf (§2)."""
    conf = rt.global_conf(rt.clock())
    instance = request.query.get("xRoadInstance") or rt.settings.instance
    entries = meta.entries_from_members(conf.members(instance))
    if meta.wants_json(request.headers.get("Accept")):
        body, content_type = (
            meta.build_client_list_json(entries),
            meta.CLIENT_LIST_JSON_TYPE,
        )
    else:
        body = meta.build_client_list_xml(entries)
        content_type = meta.CLIENT_LIST_XML_TYPE
    return web.Response(body=body, headers={"Content-Type": content_type})


def legacy_client(rt: Runtime) -> ClientId:
    """The client subsystem ``GET /wsdl`` acts for; never a member."""
    text = rt.settings.legacy_wsdl_client
    if not text:
        raise LegacyWsdlNotConfigured("legacy_wsdl is on but no client is set")
    client = ClientId.parse_slash(text)
    if client.subsystem_code is None:
        raise LegacyWsdlNotConfigured(
            f"legacy_wsdl_client must be a subsystem, not the member {client}"
        )
    return client


async def legacy_wsdl(rt: Runtime, request: web.Request) -> web.Response:
    """``GET /wsdl``: a real ``getWsdl`` exchange through our own client proxy."""
    client = legacy_client(rt)
    target = meta.parse_legacy_wsdl_query(request.query_string)
    query_id = f"{rt.settings.instance}-{uuid.uuid4()}"
    raw = meta.build_get_wsdl_request(client, target, query_id)

    url = _own_url(rt, request)
    headers = {"Content-Type": soap.FAULT_CONTENT_TYPE, "SOAPAction": '""'}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=raw, headers=headers) as response:
                answer = await response.read()
                answer_type = response.headers.get("Content-Type", "")
    except aiohttp.ClientError as exc:
        raise NetworkError(f"cannot reach our own client proxy: {exc}") from exc
    log.info("legacy wsdl client=%s service=%s", client, target)

    mime_type, _ = mime.parse_content_type(answer_type or "text/plain")
    if mime_type == "text/xml":
        return web.Response(body=answer, headers={"Content-Type": answer_type})
    if mime_type != "multipart/related":
        raise InvalidContentType(f"getWsdl answered with {mime_type!r}")
    _, _, attachments = soap.parse_soap_package(answer, answer_type)
    wsdl = meta.wsdl_attachment(attachments)
    return web.Response(
        body=wsdl.body, headers={"Content-Type": wsdl.content_type or "text/xml"}
    )


def _own_url(rt: Runtime, request: web.Request) -> str:
    """Where this client proxy listens, as seen on the current connection."""
    sockname = (
        request.transport.get_extra_info("sockname") if request.transport else None
    )
    if sockname:
        host, port = str(sockname[0]), int(sockname[1])
    else:
        host, port = rt.settings.bind_host, rt.settings.ports.client_http
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"
