"""CLI: ``server service-add-wsdl`` and ``server service-add-openapi``."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import main
from demo.provider import OPENAPI, WSDL
from protocol.identifiers import ClientId, ServiceId
from security_server.serverconf import Endpoint, ServerConf, ServiceKind
from security_server.settings import ServerSettings

INSTANCE = "TEST"
PROVIDER = ClientId(INSTANCE, "GOV", "1001", "REGISTRY")
RPC_WSDL = WSDL.replace('style="document"', 'style="rpc"')


def xgate(*args: str) -> Result:
    return CliRunner(env={"XGATE_PIN": None}).invoke(main, list(args))


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ss1"
    directory.mkdir()
    ServerSettings(INSTANCE, "GOV", "1001", "ss1").save(directory)
    result = xgate("server", "client-add", "--dir", str(directory), "GOV/1001/REGISTRY")
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "register.wsdl").write_text(WSDL)
    (folder / "rpc.wsdl").write_text(RPC_WSDL)
    (folder / "openapi.json").write_text(json.dumps(OPENAPI))
    (folder / "swagger.json").write_text(json.dumps({"swagger": "2.0", "paths": {}}))
    return folder


@pytest.fixture
def http_base(documents: Path) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(documents))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def services(directory: Path) -> list[tuple[str, str | None, str, str]]:
    store = ServerConf(directory)
    try:
        return [
            (s.service_id.service_code, s.service_id.service_version, s.kind, s.url)
            for s in store.services_of(PROVIDER)
        ]
    finally:
        store.close()


def add_wsdl(directory: Path, source: str, *extra: str) -> Result:
    return xgate(
        *("server", "service-add-wsdl", "--dir", str(directory)),
        *("--provider", "GOV/1001/REGISTRY", "--wsdl", source, *extra),
    )


def add_openapi(directory: Path, code: str, source: str) -> Result:
    return xgate(
        *("server", "service-add-openapi", "--dir", str(directory)),
        *("--provider", "GOV/1001/REGISTRY", "--code", code),
        *("--openapi", source, "--url", "http://127.0.0.1:9000/api"),
    )


def test_wsdl_file_registers_soap_services(server_dir: Path, documents: Path) -> None:
    result = add_wsdl(server_dir, str(documents / "register.wsdl"))

    assert result.exit_code == 0, result.output
    assert "checkDigitalId" in result.output
    assert services(server_dir) == [
        (
            "checkDigitalId",
            "v1",
            ServiceKind.SOAP,
            "http://localhost/population-register",
        )
    ]


def test_wsdl_url_with_explicit_service_url(server_dir: Path, http_base: str) -> None:
    result = add_wsdl(
        server_dir, http_base + "/register.wsdl", "--url", "http://10.1.1.1/pr"
    )

    assert result.exit_code == 0, result.output
    assert services(server_dir) == [
        ("checkDigitalId", "v1", ServiceKind.SOAP, "http://10.1.1.1/pr")
    ]


def test_openapi_registers_rest_service_and_endpoints(
    server_dir: Path, http_base: str
) -> None:
    result = add_openapi(server_dir, "digitalId", http_base + "/openapi.json")

    assert result.exit_code == 0, result.output
    assert "GET /v1/persons/*/digital-id" in result.output
    assert services(server_dir) == [
        ("digitalId", None, ServiceKind.REST, "http://127.0.0.1:9000/api")
    ]
    store = ServerConf(server_dir)
    try:
        endpoints = store.endpoints(ServiceId(PROVIDER, "digitalId"))
    finally:
        store.close()
    assert endpoints == [Endpoint("GET", "/v1/persons/*/digital-id")]


@pytest.mark.parametrize(
    ("command", "name", "code"),
    [
        ("wsdl", "rpc.wsdl", "UnsupportedWsdl"),
        ("wsdl", "missing.wsdl", "IOError"),
        ("openapi", "swagger.json", "UnsupportedOpenApiVersion"),
        ("openapi-bad-code", "openapi.json", "InvalidServiceIdentifier"),
    ],
    ids=["rpc-wsdl", "missing-file", "swagger", "bad-code"],
)
def test_refusals_are_one_coded_line(
    server_dir: Path, documents: Path, command: str, name: str, code: str
) -> None:
    source = str(documents / name)
    if command == "wsdl":
        result = add_wsdl(server_dir, source)
    elif command == "openapi":
        result = add_openapi(server_dir, "persons", source)
    else:
        result = add_openapi(server_dir, "per/sons", source)

    assert result.exit_code == 1, result.output
    assert f"[{code}]" in result.output
    assert "Traceback" not in result.output
    assert services(server_dir) == []


def test_bad_provider_form_is_a_usage_error(server_dir: Path, documents: Path) -> None:
    result = xgate(
        *("server", "service-add-wsdl", "--dir", str(server_dir)),
        *("--provider", "GOV/10:01/X", "--wsdl", str(documents / "register.wsdl")),
    )

    assert result.exit_code == 2


def test_needs_an_initialised_server(tmp_path: Path, documents: Path) -> None:
    result = add_wsdl(tmp_path, str(documents / "register.wsdl"))

    assert result.exit_code == 1
    assert "xgate server init" in result.output
