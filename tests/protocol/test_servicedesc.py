"""Core: WSDL and OpenAPI documents into services and endpoints."""

from __future__ import annotations

import json

import pytest

from demo.provider import OPENAPI, WSDL
from protocol.errors import InvalidXml, XRoadError
from protocol.servicedesc import (
    OpenApiEndpoint,
    WsdlOperation,
    parse_openapi,
    parse_wsdl,
    path_glob,
)

WSDL_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
    xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"
    xmlns:tns="urn:test" targetNamespace="urn:test">
"""


def wsdl(bindings: str, service: str = "") -> bytes:
    return (WSDL_HEAD + bindings + service + "</wsdl:definitions>").encode()


def operation(name: str, version: str | None = "v1", use: str = "literal") -> str:
    version_element = f"<xrd:version>{version}</xrd:version>" if version else ""
    return (
        f'<wsdl:operation name="{name}">{version_element}'
        f'<wsdl:input><soap:body use="{use}"/></wsdl:input>'
        '<wsdl:output><soap:body use="literal"/></wsdl:output>'
        "</wsdl:operation>"
    )


def binding(ops: str, style: str = "document", name: str = "b") -> str:
    return (
        f'<wsdl:binding name="{name}" type="tns:pt">'
        f'<soap:binding style="{style}" '
        'transport="http://schemas.xmlsoap.org/soap/http"/>'
        f"{ops}</wsdl:binding>"
    )


# -- WSDL ----------------------------------------------------------------------


def test_demo_wsdl_gives_its_operation() -> None:
    operations = parse_wsdl(WSDL.encode())

    assert operations == [
        WsdlOperation(
            "checkDigitalId",
            "v1",
            "Is a person's digital ID valid?",
            "http://localhost/population-register",
        )
    ]


def test_several_operations_versions_and_titles() -> None:
    port_type = (
        '<wsdl:portType name="pt"><wsdl:operation name="a"><wsdl:documentation>'
        '<xrd:title xml:lang="et">Pealkiri</xrd:title>'
        '<xrd:title xml:lang="en">  Title\n of a </xrd:title>'
        "</wsdl:documentation></wsdl:operation></wsdl:portType>"
    )
    document = wsdl(
        port_type
        + binding(operation("a") + operation("b", version=None) + operation("a", "v2"))
    )

    operations = parse_wsdl(document)

    assert [(o.service_code, o.version, o.title) for o in operations] == [
        ("a", "v1", "Title of a"),
        ("b", None, None),
        ("a", "v2", "Title of a"),
    ]
    assert all(o.address is None for o in operations)


def test_soap12_bindings_are_skipped() -> None:
    soap12 = (
        '<wsdl:binding name="b12" type="tns:pt">'
        '<soap12:binding style="document"/>'
        f"{operation('only12')}</wsdl:binding>"
    )

    operations = parse_wsdl(wsdl(soap12 + binding(operation("x"))))

    assert [o.service_code for o in operations] == ["x"]


def test_soap_operation_style_overrides_binding_style() -> None:
    op = (
        '<wsdl:operation name="x"><soap:operation style="rpc"/>'
        '<wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation>'
    )
    with pytest.raises(XRoadError) as info:
        parse_wsdl(wsdl(binding(op)))
    assert info.value.code == "UnsupportedWsdl"


BAD_WSDL = {
    "rpc-binding": (wsdl(binding(operation("x"), style="rpc")), "UnsupportedWsdl"),
    "encoded-body": (wsdl(binding(operation("x", use="encoded"))), "UnsupportedWsdl"),
    "soap12-only": (
        wsdl(
            '<wsdl:binding name="b" type="tns:pt"><soap12:binding/>'
            f"{operation('x')}</wsdl:binding>"
        ),
        "InvalidWsdl",
    ),
    "no-bindings": (wsdl(""), "InvalidWsdl"),
    "not-wsdl": (b"<definitions/>", "InvalidWsdl"),
    "wsdl-2.0": (
        b'<description xmlns="http://www.w3.org/ns/wsdl"/>',
        "UnsupportedWsdl",
    ),
    "unnamed-operation": (wsdl(binding(operation(""))), "InvalidWsdl"),
    "duplicate-operation": (
        wsdl(binding(operation("x")) + binding(operation("x"), name="c")),
        "DuplicateService",
    ),
    "code-with-slash": (
        wsdl(binding(operation("get/person"))),
        "InvalidServiceIdentifier",
    ),
    "code-with-space": (
        wsdl(binding(operation("get person"))),
        "InvalidServiceIdentifier",
    ),
    "version-with-colon": (
        wsdl(binding(operation("x", version="v:1"))),
        "InvalidServiceIdentifier",
    ),
    "malformed": (b"<wsdl:definitions", "InvalidXml"),
    "doctype": (
        b'<!DOCTYPE d SYSTEM "http://127.0.0.1:9/x.dtd">'
        + wsdl(binding(operation("x")))[
            len(b'<?xml version="1.0" encoding="UTF-8"?>') :
        ],
        "InvalidXml",
    ),
    "entity-bomb": (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/">&c;'
        b"</wsdl:definitions>",
        "InvalidXml",
    ),
}


@pytest.mark.parametrize(
    ("document", "code"), BAD_WSDL.values(), ids=list(BAD_WSDL.keys())
)
def test_hostile_or_unsupported_wsdl_is_refused(document: bytes, code: str) -> None:
    with pytest.raises(XRoadError) as info:
        parse_wsdl(document)

    assert info.value.code == code


def test_doctype_refusal_is_the_hardened_parser_error() -> None:
    with pytest.raises(InvalidXml):
        parse_wsdl(BAD_WSDL["entity-bomb"][0])


# -- OpenAPI -------------------------------------------------------------------


def test_demo_openapi_gives_its_endpoint() -> None:
    description = parse_openapi(json.dumps(OPENAPI).encode(), "application/json")

    assert description.version == "3.0.3"
    assert description.title == "Population register: digital ID"
    assert description.endpoints == (
        OpenApiEndpoint("GET", "/v1/persons/*/digital-id"),
    )


OPENAPI_31 = {
    "openapi": "3.1.0",
    "info": {"title": "Files", "version": "2"},
    "paths": {
        "/files": {"get": {}, "post": {}, "parameters": [], "summary": "all"},
        "/files/{name}.{ext}": {"get": {}, "DELETE": {}, "delete": {}},
        "/stars/*": {"put": {}},
        "/shared": {"$ref": "#/components/pathItems/Shared"},
        "x-internal": {"anything": True},
    },
    "webhooks": {"newFile": {"post": {}}},
    "components": {"pathItems": {"Shared": {"patch": {}, "head": {}}}},
}


def test_openapi_31_methods_templates_and_references() -> None:
    description = parse_openapi(json.dumps(OPENAPI_31).encode(), "files.json")

    assert description.version == "3.1.0"
    assert [(e.method, e.path) for e in description.endpoints] == [
        ("GET", "/files"),
        ("POST", "/files"),
        ("GET", "/files/*.*"),
        ("DELETE", "/files/*.*"),
        ("PUT", "/stars/\\*"),
        ("HEAD", "/shared"),
        ("PATCH", "/shared"),
    ]


def test_openapi_31_without_paths_has_no_endpoints() -> None:
    document = {"openapi": "3.1.1", "info": {}, "webhooks": {}}

    description = parse_openapi(json.dumps(document).encode(), "")

    assert description.endpoints == ()


@pytest.mark.parametrize(
    ("template", "glob"),
    [
        ("/", "/"),
        ("/a/{id}", "/a/*"),
        ("/a/{id}/b/{x}", "/a/*/b/*"),
        ("/v1/{a}-{b}", "/v1/*-*"),
        ("/lit/**", "/lit/\\*\\*"),
    ],
)
def test_path_templates_become_globs(template: str, glob: str) -> None:
    assert path_glob(template) == glob


def openapi(paths: object, version: str = "3.0.3") -> bytes:
    return json.dumps({"openapi": version, "info": {}, "paths": paths}).encode()


BAD_OPENAPI = {
    "swagger-2.0": (
        json.dumps({"swagger": "2.0", "paths": {}}).encode(),
        "UnsupportedOpenApiVersion",
    ),
    "openapi-4": (openapi({}, "4.0.0"), "UnsupportedOpenApiVersion"),
    "openapi-3.2": (openapi({}, "3.2.0"), "UnsupportedOpenApiVersion"),
    "version-number": (
        json.dumps({"openapi": 3.0, "paths": {}}).encode(),
        "InvalidOpenApi",
    ),
    "no-version": (json.dumps({"paths": {}}).encode(), "InvalidOpenApi"),
    "3.0-without-paths": (
        json.dumps({"openapi": "3.0.0", "info": {}}).encode(),
        "InvalidOpenApi",
    ),
    "array": (b"[1, 2]", "InvalidOpenApi"),
    "malformed-json": (b'{"openapi": ', "InvalidOpenApi"),
    "duplicate-keys": (
        b'{"openapi": "3.0.0", "paths": {"/a": {"get": {}}, "/a": {"put": {}}}}',
        "InvalidOpenApi",
    ),
    "deep-nesting": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "InvalidOpenApi"),
    "relative-path": (openapi({"a/{id}": {"get": {}}}), "InvalidOpenApi"),
    "path-with-query": (openapi({"/a?b=1": {"get": {}}}), "InvalidOpenApi"),
    "path-with-space": (openapi({"/a b": {"get": {}}}), "InvalidOpenApi"),
    "path-with-backslash": (openapi({"/a\\{x}": {"get": {}}}), "InvalidOpenApi"),
    "unbalanced-brace": (openapi({"/a/{id": {"get": {}}}), "InvalidOpenApi"),
    "empty-parameter": (openapi({"/a/{}": {"get": {}}}), "InvalidOpenApi"),
    "operation-not-object": (openapi({"/a": {"get": "yes"}}), "InvalidOpenApi"),
    "dangling-ref": (openapi({"/a": {"$ref": "#/nowhere"}}), "InvalidOpenApi"),
    "external-ref": (
        openapi({"/a": {"$ref": "https://example.org/item.json"}}),
        "UnsupportedDescriptionFormat",
    ),
}


@pytest.mark.parametrize(
    ("document", "code"), BAD_OPENAPI.values(), ids=list(BAD_OPENAPI.keys())
)
def test_hostile_or_unsupported_openapi_is_refused(document: bytes, code: str) -> None:
    with pytest.raises(XRoadError) as info:
        parse_openapi(document, "application/json")

    assert info.value.code == code


YAML_DOC = (
    b"openapi: 3.0.1\ninfo: {title: t, version: '1'}\npaths:\n  /a/{id}:\n    get: {}\n"
)


@pytest.mark.parametrize("hint", ["application/x-yaml", "api.yml", "api.yaml", ""])
def test_yaml_openapi_is_read(hint: str) -> None:
    description = parse_openapi(YAML_DOC, hint)
    assert description.endpoints == (OpenApiEndpoint("GET", "/a/*"),)


def test_json_is_recognised_without_a_hint() -> None:
    description = parse_openapi(openapi({"/x": {"get": {}}}), "text/plain")

    assert description.endpoints == (OpenApiEndpoint("GET", "/x"),)
