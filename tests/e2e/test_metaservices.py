"""End to end: metaservices through both security servers, and zeep via GET /wsdl."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import aiohttp
import pytest
import pytest_asyncio
import zeep
from aiohttp import web
from lxml import etree

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    HOST,
    REGISTRY_SUBSYSTEM,
    REST_SERVICE,
    SOAP_SERVICE,
    Ecosystem,
)
from demo.provider import NS
from protocol import metaservices as meta
from protocol.identifiers import ServiceId
from protocol.mime import parse_content_type, parse_multipart
from protocol.soap import SOAP_ENV_NS
from security_server.serverconf import ServerConf

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

XRD = "http://x-road.eu/xsd/xroad.xsd"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}
HIDDEN_SOAP = ServiceId(REGISTRY_SUBSYSTEM, "hiddenOp", "v1")
PERSONS = ServiceId(REGISTRY_SUBSYSTEM, "persons")
YAML_API = ServiceId(REGISTRY_SUBSYSTEM, "yamlApi")
GONE_API = ServiceId(REGISTRY_SUBSYSTEM, "goneApi")
LEGACY_QUERY = (
    "xRoadInstance=DEMO&memberClass=GOV&memberCode=1001&subsystemCode=REGISTRY"
    "&serviceCode=checkDigitalId&version=v1"
)


async def openapi_yaml(request: web.Request) -> web.Response:
    text = "openapi: 3.0.0\nservers:\n  - url: https://api.internal/v1\n"
    return web.Response(text=text, content_type="application/x-yaml")


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def extra_services(ecosystem: Ecosystem):
    """More services on the provider: unlisted SOAP, REST with endpoints, YAML."""
    app = web.Application()
    app.router.add_get("/openapi.yaml", openapi_yaml)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    base = f"http://{HOST}:{runner.addresses[0][1]}"

    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        serverconf.add_service(HIDDEN_SOAP, kind="SOAP", url=f"{base}/none")
        serverconf.add_service(
            PERSONS, kind="REST", url=f"{base}/api", description_url=f"{base}/x.json"
        )
        for method, path in (("GET", "/v1/people"), ("GET", "/v1/people/*")):
            serverconf.add_endpoint(PERSONS, method, path)
        serverconf.add_endpoint(PERSONS, "POST", "/v1/people")
        serverconf.add_endpoint(PERSONS)  # the implicit base endpoint
        serverconf.grant(PERSONS, BENEFITS_SUBSYSTEM, "GET", "/v1/people/*")
        serverconf.add_service(
            YAML_API,
            kind="REST",
            url=f"{base}/api",
            description_url=f"{base}/openapi.yaml",
        )
        serverconf.add_service(
            GONE_API, kind="REST", url=f"{base}/api", description_url=f"{base}/gone"
        )
    finally:
        serverconf.close()
    yield
    await runner.cleanup()


async def post_soap(ecosystem: Ecosystem, body: bytes) -> tuple[str, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/", data=body, headers=SOAP_HEADERS
        ) as response:
            assert response.status == 200
            return response.headers["Content-Type"], await response.read()


async def get(
    ecosystem: Ecosystem, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            ecosystem.client_proxy_url + path, headers=headers or {}
        ) as response:
            return response.status, dict(response.headers), await response.read()


async def get_rest(
    ecosystem: Ecosystem, code: str
) -> tuple[int, dict[str, str], bytes]:
    headers = {"X-Road-Client": BENEFITS_SUBSYSTEM.slash()}
    return await get(ecosystem, f"/r1/{REGISTRY_SUBSYSTEM.slash()}/{code}", headers)


def fault_code(body: bytes) -> str:
    fault = etree.fromstring(body).find(f".//{{{SOAP_ENV_NS}}}Fault")
    assert fault is not None, body[:400]
    return fault.findtext("faultcode") or ""


def get_wsdl_request(service: ServiceId) -> tuple[str, bytes]:
    query_id = f"meta-{uuid.uuid4()}"
    return query_id, meta.build_get_wsdl_request(BENEFITS_SUBSYSTEM, service, query_id)


# -- listClients ------------------------------------------------------------------


async def test_list_clients_xml_by_default(ecosystem: Ecosystem) -> None:
    status, headers, body = await get(ecosystem, "/listClients")

    assert status == 200
    assert headers["Content-Type"].startswith("text/xml")
    listed = [e.client_id for e in meta.parse_client_list_xml(body)]
    assert BENEFITS_SUBSYSTEM in listed
    assert REGISTRY_SUBSYSTEM in listed
    assert REGISTRY_SUBSYSTEM.member in listed


async def test_list_clients_json_on_request(ecosystem: Ecosystem) -> None:
    status, headers, body = await get(
        ecosystem, "/listClients", {"Accept": "text/html, application/json;q=0.5"}
    )

    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    entries = meta.parse_client_list_json(body)
    assert any(e.client_id == REGISTRY_SUBSYSTEM for e in entries)
    assert b"xroad_instance" in body


async def test_list_clients_of_an_unknown_instance_is_empty(
    ecosystem: Ecosystem,
) -> None:
    _, _, body = await get(ecosystem, "/listClients?xRoadInstance=NOPE")
    assert meta.parse_client_list_xml(body) == []


# -- SOAP listMethods / allowedMethods ----------------------------------------------


async def test_soap_list_methods_lists_soap_services_only(ecosystem: Ecosystem) -> None:
    request = meta.build_method_list_request(
        BENEFITS_SUBSYSTEM, REGISTRY_SUBSYSTEM, meta.LIST_METHODS, "meta-list"
    )

    content_type, body = await post_soap(ecosystem, request)

    assert content_type.startswith("text/xml"), body[:400]
    services = meta.parse_method_list_response(body)
    assert set(services) == {SOAP_SERVICE, HIDDEN_SOAP}
    assert etree.fromstring(body).find(f".//{{{XRD}}}requestHash") is not None


async def test_soap_allowed_methods_is_filtered_by_the_acl(
    ecosystem: Ecosystem,
) -> None:
    request = meta.build_method_list_request(
        BENEFITS_SUBSYSTEM, REGISTRY_SUBSYSTEM, meta.ALLOWED_METHODS, "meta-allowed"
    )

    _, body = await post_soap(ecosystem, request)

    assert meta.parse_method_list_response(body) == [SOAP_SERVICE]


# -- getWsdl ---------------------------------------------------------------------------


async def test_get_wsdl_answers_multipart_with_the_rewritten_wsdl(
    ecosystem: Ecosystem,
) -> None:
    query_id, request = get_wsdl_request(SOAP_SERVICE)

    content_type, body = await post_soap(ecosystem, request)

    mime_type, params = parse_content_type(content_type)
    assert mime_type == "multipart/related", body[:400]
    soap_part, wsdl = parse_multipart(body, params["boundary"])
    wrapper = etree.fromstring(soap_part.body).find(f".//{{{XRD}}}getWsdlResponse")
    assert wrapper is not None
    assert wrapper.findtext(f"{{{XRD}}}serviceCode") == "checkDigitalId"
    assert (wsdl.header("Content-ID") or "").startswith("<wsdl=")
    assert meta.HIDDEN_ENDPOINT.encode() in wsdl.body
    assert b"localhost/population-register" not in wsdl.body

    # A normal exchange: both sides logged request and response.
    for server in (ecosystem.agency_server, ecosystem.register_server):
        assert server.runtime is not None
        records = await server.runtime.message_log.find(query_id=query_id)
        assert sorted(r.response for r in records) == [False, True]


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (ServiceId(REGISTRY_SUBSYSTEM, "noSuchService"), "UnknownService"),
        (HIDDEN_SOAP, "UnknownService"),  # no description URL
        (REST_SERVICE, "ServiceType"),
    ],
    ids=["unknown", "no-wsdl", "rest"],
)
async def test_get_wsdl_errors(
    ecosystem: Ecosystem, service: ServiceId, expected: str
) -> None:
    _, request = get_wsdl_request(service)

    _, body = await post_soap(ecosystem, request)

    assert fault_code(body) == f"Server.ServerProxy.{expected}"


async def test_get_wsdl_without_service_code(ecosystem: Ecosystem) -> None:
    _, request = get_wsdl_request(SOAP_SERVICE)
    request = request.replace(b">checkDigitalId<", b"><")

    _, body = await post_soap(ecosystem, request)

    assert fault_code(body) == "Server.ServerProxy.InvalidRequest"


# -- REST listMethods / allowedMethods / getOpenAPI ----------------------------------


async def test_rest_list_methods(ecosystem: Ecosystem) -> None:
    status, headers, body = await get_rest(ecosystem, "listMethods")

    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    by_code = {e.service_id.service_code: e for e in meta.parse_rest_method_list(body)}
    assert set(by_code) == {"digital-id", "persons", "yamlApi", "goneApi"}
    assert by_code["persons"].service_type == meta.SERVICE_TYPE_OPENAPI
    assert by_code["persons"].endpoints == (
        ("GET", "/v1/people"),
        ("GET", "/v1/people/*"),
        ("POST", "/v1/people"),
    )


async def test_rest_allowed_methods_filters_services_and_endpoints(
    ecosystem: Ecosystem,
) -> None:
    status, _, body = await get_rest(ecosystem, "allowedMethods")

    assert status == 200, body
    by_code = {e.service_id.service_code: e for e in meta.parse_rest_method_list(body)}
    assert set(by_code) == {"digital-id", "persons"}
    assert by_code["persons"].endpoints == (("GET", "/v1/people/*"),)


async def test_rest_metaservice_only_for_get(ecosystem: Ecosystem) -> None:
    headers = {"X-Road-Client": BENEFITS_SUBSYSTEM.slash()}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{ecosystem.client_proxy_url}/r1/{REGISTRY_SUBSYSTEM.slash()}/listMethods",
            headers=headers,
        ) as response:
            assert response.headers["X-Road-Error"] == (
                "Server.ServerProxy.UnknownService"
            )


async def test_get_openapi_hides_server_hosts(ecosystem: Ecosystem) -> None:
    status, headers, body = await get_rest(
        ecosystem, "getOpenAPI?serviceCode=digital-id"
    )

    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    document = json.loads(body)
    assert document["servers"] == [{"url": "/api"}]
    assert "/v1/persons/{personCode}/digital-id" in document["paths"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("getOpenAPI", "Server.ServerProxy.InvalidRequest"),
        ("getOpenAPI?serviceCode=nothing", "Server.ServerProxy.InternalError"),
        ("getOpenAPI?serviceCode=goneApi", "Server.ServerProxy.InternalError"),
    ],
    ids=["no-code", "unknown", "upstream-404"],
)
async def test_get_openapi_errors(ecosystem: Ecosystem, code: str, expected: str):
    status, headers, _ = await get_rest(ecosystem, code)

    assert status == 500
    assert headers["X-Road-Error"] == expected


async def test_get_openapi_yaml(ecosystem: Ecosystem) -> None:
    import yaml

    status, headers, body = await get_rest(ecosystem, "getOpenAPI?serviceCode=yamlApi")

    assert status == 200
    assert yaml.safe_load(body)["servers"] == [{"url": "/v1"}]


# -- legacy GET /wsdl -----------------------------------------------------------------


async def test_legacy_get_wsdl_returns_the_raw_wsdl(ecosystem: Ecosystem) -> None:
    status, headers, body = await get(ecosystem, f"/wsdl?{LEGACY_QUERY}")

    assert status == 200
    assert headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(body)
    assert etree.QName(root).localname == "definitions"
    assert meta.HIDDEN_ENDPOINT.encode() in body


async def test_legacy_get_wsdl_blank_service_code(ecosystem: Ecosystem) -> None:
    query = LEGACY_QUERY.replace("serviceCode=checkDigitalId", "serviceCode=")

    status, _, body = await get(ecosystem, f"/wsdl?{query}")

    assert status == 200
    assert fault_code(body) == "Client.InvalidRequest"


async def test_legacy_get_wsdl_switched_off_answers_like_xroad_7(
    ecosystem: Ecosystem,
) -> None:
    runtime = ecosystem.agency_server.runtime
    assert runtime is not None
    saved = runtime.settings
    runtime.settings = dataclasses.replace(saved, legacy_wsdl=False)
    try:
        status, _, body = await get(ecosystem, f"/wsdl?{LEGACY_QUERY}")
        _, _, schema = await get(ecosystem, "/xroad.xsd")
    finally:
        runtime.settings = saved

    assert status == 200
    assert fault_code(body) == "Client.InvalidHttpMethod"
    assert fault_code(schema) == "Client.InvalidHttpMethod"


async def test_legacy_get_wsdl_never_acts_for_a_member(ecosystem: Ecosystem) -> None:
    runtime = ecosystem.agency_server.runtime
    assert runtime is not None
    saved = runtime.settings
    member = BENEFITS_SUBSYSTEM.member.slash()
    runtime.settings = dataclasses.replace(saved, legacy_wsdl_client=member)
    try:
        _, _, body = await get(ecosystem, f"/wsdl?{LEGACY_QUERY}")
    finally:
        runtime.settings = saved

    assert fault_code(body) == "Server.ClientProxy.LegacyWsdlNotConfigured"


def call_with_zeep(client_proxy_url: str) -> object:
    """What a zeep-based information system does: build from GET /wsdl, call."""
    client = zeep.Client(f"{client_proxy_url}/wsdl?{LEGACY_QUERY}")
    service = client.create_service(
        f"{{{NS}}}populationRegisterBinding", client_proxy_url + "/"
    )
    provider = {
        "xRoadInstance": "DEMO",
        "memberClass": "GOV",
        "memberCode": "1001",
        "subsystemCode": "REGISTRY",
    }
    headers = {
        "client": {
            "objectType": "SUBSYSTEM",
            "xRoadInstance": "DEMO",
            "memberClass": "GOV",
            "memberCode": "2002",
            "subsystemCode": "BENEFITS",
        },
        "service": {
            "objectType": "SERVICE",
            **provider,
            "serviceCode": "checkDigitalId",
            "serviceVersion": "v1",
        },
        "id": f"zeep-{uuid.uuid4()}",
        "userId": "caseworker-7",
        "protocolVersion": "4.0",
    }
    return service.checkDigitalId(personCode="38001010000", _soapheaders=headers)


async def test_zeep_builds_itself_from_get_wsdl_and_calls_the_service(
    ecosystem: Ecosystem,
) -> None:
    # zeep is synchronous; the ecosystem runs on this loop.
    answer = await asyncio.to_thread(call_with_zeep, ecosystem.client_proxy_url)

    assert answer["body"]["name"] == "Mari Maasikas"
    assert answer["body"]["digitalIdValid"] is True
    assert answer["header"]["service"]["serviceCode"] == "checkDigitalId"
