"""Adapter: fetch WSDL and OpenAPI documents and register their services."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from demo.provider import OPENAPI, WSDL, provider_app
from protocol.errors import XRoadError
from protocol.identifiers import ClientId, ServiceId
from security_server.descriptions import (
    add_openapi_service,
    add_wsdl_services,
    fetch_description,
)
from security_server.serverconf import Endpoint, ServerConf, ServiceKind

PROVIDER = ClientId("TEST", "GOV", "1001", "REGISTRY")
CONSUMER = ClientId("TEST", "GOV", "2002", "BENEFITS")
OTHER = ClientId("TEST", "GOV", "3003", "OTHER")
HAVE_YAML = importlib.util.find_spec("yaml") is not None

# A WSDL whose second binding is RPC style: the whole document is refused.
MIXED_WSDL = WSDL.replace(
    "</wsdl:definitions>",
    '<wsdl:binding name="rpcBinding" type="tns:populationRegisterPortType">'
    '<soap:binding style="rpc"/><wsdl:operation name="legacyCheck">'
    '<wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation>'
    "</wsdl:binding></wsdl:definitions>",
)
# Two operations; only the first binding has a port with a soap:address.
NO_ADDRESS_WSDL = WSDL.replace(
    "</wsdl:definitions>",
    '<wsdl:binding name="second" type="tns:populationRegisterPortType">'
    '<soap:binding style="document"/><wsdl:operation name="otherCheck">'
    '<wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation>'
    "</wsdl:binding></wsdl:definitions>",
)
OPENAPI_31 = {
    "openapi": "3.1.0",
    "info": {"title": "Persons", "version": "1"},
    "paths": {
        "/v1/people": {"get": {}, "post": {}},
        "/v1/people/{id}": {"get": {}, "delete": {}},
    },
}


@dataclass
class World:
    base: str
    session: aiohttp.ClientSession
    serverconf: ServerConf
    tmp_path: Path


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text=WSDL)


async def streamed_big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(40):
        await response.write(b" " * 1024)
    await response.write_eof()
    return response


def text(body: str, content_type: str = "text/xml"):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type=content_type)

    return handler


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/population-register.wsdl")


@pytest.fixture
def serverconf(tmp_path: Path) -> Iterator[ServerConf]:
    store = ServerConf(tmp_path)
    store.add_client(PROVIDER)
    yield store
    store.close()


@pytest_asyncio.fixture
async def world(serverconf: ServerConf, tmp_path: Path) -> AsyncIterator[World]:
    app = provider_app()
    app.router.add_get("/slow.wsdl", slow)
    app.router.add_get("/big.wsdl", streamed_big)
    app.router.add_get("/mixed.wsdl", text(MIXED_WSDL))
    app.router.add_get("/no-address.wsdl", text(NO_ADDRESS_WSDL))
    app.router.add_get("/moved.wsdl", moved)
    app.router.add_get("/v31", text(json.dumps(OPENAPI_31), "application/json"))
    swagger = json.dumps({"swagger": "2.0", "paths": {"/a": {"get": {}}}})
    app.router.add_get("/swagger.json", text(swagger, "text/plain"))
    app.router.add_get("/api.yaml", text("openapi: 3.0.0\n", "application/x-yaml"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield World(f"http://127.0.0.1:{server.port}", session, serverconf, tmp_path)
    await server.close()


def service(code: str, version: str | None = None) -> ServiceId:
    return ServiceId(PROVIDER, code, version)


# -- WSDL ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wsdl_from_url_registers_its_operations(world: World) -> None:
    source = world.base + "/population-register.wsdl"

    configs = await add_wsdl_services(world.serverconf, PROVIDER, source, world.session)

    stored = world.serverconf.get_service(service("checkDigitalId", "v1"))
    assert stored is not None and [stored] == configs
    assert stored.kind is ServiceKind.SOAP
    assert stored.url == "http://localhost/population-register"
    assert stored.description_url == source


@pytest.mark.asyncio
async def test_explicit_url_overrides_soap_address(world: World) -> None:
    source = world.base + "/no-address.wsdl"

    await add_wsdl_services(
        world.serverconf,
        PROVIDER,
        source,
        world.session,
        service_url="http://10.0.0.5:9000/register",
    )

    services = world.serverconf.services_of(PROVIDER)
    assert {(s.service_id.service_code, s.url) for s in services} == {
        ("checkDigitalId", "http://10.0.0.5:9000/register"),
        ("otherCheck", "http://10.0.0.5:9000/register"),
    }


@pytest.mark.asyncio
async def test_wsdl_from_file_stores_a_file_url(world: World) -> None:
    path = world.tmp_path / "register.wsdl"
    path.write_text(WSDL)

    await add_wsdl_services(world.serverconf, PROVIDER, str(path))

    stored = world.serverconf.get_service(service("checkDigitalId", "v1"))
    assert stored is not None
    assert stored.description_url == path.resolve().as_uri()


@pytest.mark.asyncio
async def test_same_wsdl_may_be_added_again_but_not_another(world: World) -> None:
    source = world.base + "/population-register.wsdl"
    await add_wsdl_services(world.serverconf, PROVIDER, source, world.session)
    await add_wsdl_services(world.serverconf, PROVIDER, source, world.session)
    path = world.tmp_path / "copy.wsdl"
    path.write_text(WSDL)

    with pytest.raises(XRoadError) as info:
        await add_wsdl_services(world.serverconf, PROVIDER, str(path))

    assert info.value.code == "DuplicateService"
    stored = world.serverconf.get_service(service("checkDigitalId", "v1"))
    assert stored is not None and stored.description_url == source


ALL_OR_NOTHING = {
    "rpc-binding": ("/mixed.wsdl", "UnsupportedWsdl"),
    "missing-address": ("/no-address.wsdl", "ServiceMissingUrl"),
    "not-found": ("/nothing.wsdl", "HttpError"),
    "redirect-not-followed": ("/moved.wsdl", "HttpError"),
    "too-large-streamed": ("/big.wsdl", "ServiceDescriptionTooLarge"),
}


@pytest.mark.parametrize(
    ("path", "code"), ALL_OR_NOTHING.values(), ids=list(ALL_OR_NOTHING.keys())
)
@pytest.mark.asyncio
async def test_failed_wsdl_registers_nothing(
    world: World, path: str, code: str
) -> None:
    with pytest.raises(XRoadError) as info:
        await add_wsdl_services(
            world.serverconf,
            PROVIDER,
            world.base + path,
            world.session,
            max_size=16 * 1024,
        )

    assert info.value.code == code
    assert world.serverconf.services_of(PROVIDER) == []


@pytest.mark.asyncio
async def test_store_failure_midway_rolls_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = world.base + "/no-address.wsdl"
    real_add = world.serverconf.add_service
    calls: list[ServiceId] = []

    def failing_add(service_id: ServiceId, **kwargs: object) -> None:
        calls.append(service_id)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        real_add(service_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.serverconf, "add_service", failing_add)

    with pytest.raises(RuntimeError):
        await add_wsdl_services(
            world.serverconf,
            PROVIDER,
            source,
            world.session,
            service_url="http://127.0.0.1:9/x",
        )

    assert len(calls) == 2
    assert world.serverconf.services_of(PROVIDER) == []


@pytest.mark.asyncio
async def test_unknown_provider_is_refused(world: World) -> None:
    source = world.base + "/population-register.wsdl"

    with pytest.raises(XRoadError) as info:
        await add_wsdl_services(world.serverconf, OTHER, source, world.session)

    assert info.value.code == "UnknownMember"


# -- fetching ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fetch_times_out(world: World) -> None:
    with pytest.raises(XRoadError) as info:
        await fetch_description(world.base + "/slow.wsdl", world.session, timeout=0.3)

    assert info.value.code == "NetworkError"


@pytest.mark.asyncio
async def test_fetch_refuses_announced_oversize(world: World) -> None:
    with pytest.raises(XRoadError) as info:
        await fetch_description(
            world.base + "/population-register.wsdl", world.session, max_size=100
        )

    assert info.value.code == "ServiceDescriptionTooLarge"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("ftp://127.0.0.1/x.wsdl", "UnsupportedDescriptionSource"),
        ("/nonexistent/dir/x.wsdl", "IOError"),
    ],
    ids=["ftp", "missing-file"],
)
@pytest.mark.asyncio
async def test_fetch_refuses_other_sources(source: str, code: str) -> None:
    with pytest.raises(XRoadError) as info:
        await fetch_description(source)

    assert info.value.code == code


@pytest.mark.asyncio
async def test_fetch_refuses_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2048)

    with pytest.raises(XRoadError) as info:
        await fetch_description(path.as_uri(), max_size=1024)

    assert info.value.code == "ServiceDescriptionTooLarge"


# -- OpenAPI -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openapi_registers_a_rest_service_with_endpoints(world: World) -> None:
    source = world.base + "/api/openapi.json"

    config, endpoints = await add_openapi_service(
        world.serverconf,
        PROVIDER,
        "digitalId",
        source,
        world.base + "/api",
        world.session,
    )

    stored = world.serverconf.get_service(service("digitalId"))
    assert stored == config
    assert stored.kind is ServiceKind.REST
    assert stored.url == world.base + "/api"
    assert stored.description_url == source
    assert world.serverconf.endpoints(service("digitalId")) == [
        Endpoint("GET", "/v1/persons/*/digital-id")
    ]
    assert [(e.method, e.path) for e in endpoints] == [
        ("GET", "/v1/persons/*/digital-id")
    ]


@pytest.mark.asyncio
async def test_per_endpoint_access_rights_are_honoured(world: World) -> None:
    service_id = service("persons")
    config, endpoints = await add_openapi_service(
        world.serverconf,
        PROVIDER,
        "persons",
        world.base + "/v31",
        "http://127.0.0.1:9/api",
        world.session,
    )
    # Grant the consumer exactly the read endpoints the document declares.
    for endpoint in endpoints:
        if endpoint.method == "GET":
            world.serverconf.grant(service_id, CONSUMER, endpoint.method, endpoint.path)

    def allowed(client: ClientId, method: str, path: str) -> bool:
        return world.serverconf.is_allowed(client, service_id, method=method, path=path)

    assert config.description_url == world.base + "/v31"
    assert allowed(CONSUMER, "GET", "/v1/people")
    assert allowed(CONSUMER, "get", "/v1/people/38001010000")
    assert not allowed(CONSUMER, "POST", "/v1/people")
    assert not allowed(CONSUMER, "DELETE", "/v1/people/38001010000")
    assert not allowed(CONSUMER, "GET", "/v1/people/1/extra")
    assert not allowed(CONSUMER, "GET", "/v1/people/1/..%2F..%2F..%2Fadmin")
    assert not allowed(OTHER, "GET", "/v1/people")
    assert len(world.serverconf.endpoints(service_id)) == 4


@pytest.mark.asyncio
async def test_openapi_from_file(world: World) -> None:
    path = world.tmp_path / "persons.json"
    path.write_text(json.dumps(OPENAPI))

    config, endpoints = await add_openapi_service(
        world.serverconf, PROVIDER, "persons", str(path), "https://api.example/x"
    )

    assert config.description_url == path.resolve().as_uri()
    assert len(endpoints) == 1


OPENAPI_REFUSALS = {
    "swagger-2.0": ("persons", "/swagger.json", "UnsupportedOpenApiVersion"),
    "yaml-without-pyyaml": ("persons", "/api.yaml", "UnsupportedDescriptionFormat"),
    "code-with-slash": ("per/sons", "/v31", "InvalidServiceIdentifier"),
    "code-with-colon": ("per:sons", "/v31", "InvalidServiceIdentifier"),
    "not-found": ("persons", "/missing.json", "HttpError"),
}


@pytest.mark.parametrize(
    ("code", "path", "error"),
    OPENAPI_REFUSALS.values(),
    ids=list(OPENAPI_REFUSALS.keys()),
)
@pytest.mark.asyncio
async def test_failed_openapi_registers_nothing(
    world: World, code: str, path: str, error: str
) -> None:
    if error == "UnsupportedDescriptionFormat" and HAVE_YAML:
        error = "InvalidOpenApi"  # with PyYAML, the document lacks its paths

    with pytest.raises(XRoadError) as info:
        await add_openapi_service(
            world.serverconf,
            PROVIDER,
            code,
            world.base + path,
            "http://127.0.0.1:9/api",
            world.session,
        )

    assert info.value.code == error
    assert world.serverconf.services_of(PROVIDER) == []


@pytest.mark.asyncio
async def test_openapi_code_already_in_use_is_refused(world: World) -> None:
    await add_wsdl_services(
        world.serverconf, PROVIDER, world.base + "/population-register.wsdl"
    )

    with pytest.raises(XRoadError) as info:
        await add_openapi_service(
            world.serverconf,
            PROVIDER,
            "checkDigitalId",
            world.base + "/v31",
            "http://127.0.0.1:9/api",
            world.session,
        )

    assert info.value.code == "DuplicateService"
    assert world.serverconf.endpoints(service("checkDigitalId")) == []


@pytest.mark.asyncio
async def test_service_url_must_be_http(world: World) -> None:
    with pytest.raises(XRoadError) as info:
        await add_openapi_service(
            world.serverconf,
            PROVIDER,
            "persons",
            world.base + "/v31",
            "file:///etc/passwd",
            world.session,
        )

    assert info.value.code == "InvalidRequest"
    assert world.serverconf.services_of(PROVIDER) == []
