"""The metaservice documents: client lists, method lists, getWsdl, getOpenAPI."""

from __future__ import annotations

import json

import pytest
from lxml import etree

from protocol import metaservices as meta
from protocol.errors import InvalidRequest, InvalidXml
from protocol.globalconf import Member
from protocol.identifiers import ID_NS, XROAD_NS, ClientId, ServiceId
from protocol.soap import SOAP_ENV_NS, insert_request_hash, parse_soap, request_hash

CONSUMER = ClientId("INST", "GOV", "1234", "SUBSYS")
PROVIDER_MEMBER = ClientId("INST", "COM", "5678")
PROVIDER = ClientId("INST", "COM", "5678", "REGISTRY")
GET_PERSON = ServiceId(PROVIDER, "getPerson", "v2")

WSDL = b"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
    xmlns:http="http://schemas.xmlsoap.org/wsdl/http/">
  <!-- internal hosts below -->
  <wsdl:service name="s">
    <wsdl:port name="p1"><soap:address location="https://10.0.0.7:8443/x"/></wsdl:port>
    <wsdl:port name="p2"><soap12:address location="https://10.0.0.7/y"/></wsdl:port>
    <wsdl:port name="p3"><http:address location="https://10.0.0.7/z"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""


# -- listClients ------------------------------------------------------------------


def entries() -> list[meta.ClientListEntry]:
    members = [
        Member(PROVIDER_MEMBER, "Example Registry Ltd", ("REGISTRY",)),
        Member(ClientId("INST", "GOV", "1234"), "Agency", ()),
    ]
    return meta.entries_from_members(members)


def test_client_list_has_members_then_their_subsystems() -> None:
    found = entries()

    assert [e.client_id for e in found] == [
        PROVIDER_MEMBER,
        PROVIDER,
        ClientId("INST", "GOV", "1234"),
    ]
    assert found[1].name == "Example Registry Ltd"


def test_client_list_xml_shape_and_round_trip() -> None:
    data = meta.build_client_list_xml(entries())

    root = etree.fromstring(data)
    assert root.tag == f"{{{XROAD_NS}}}clientList"
    ids = root.findall(f"{{{XROAD_NS}}}member/{{{XROAD_NS}}}id")
    assert [i.get(f"{{{ID_NS}}}objectType") for i in ids] == [
        "MEMBER",
        "SUBSYSTEM",
        "MEMBER",
    ]
    assert meta.parse_client_list_xml(data) == entries()


def test_client_list_json_uses_snake_case_and_omits_nulls() -> None:
    entry = meta.ClientListEntry(PROVIDER, "Example Registry Ltd", "Person registry")
    data = meta.build_client_list_json([entry, meta.ClientListEntry(CONSUMER)])

    document = json.loads(data)
    assert document["member"][0] == {
        "id": {
            "object_type": "SUBSYSTEM",
            "xroad_instance": "INST",
            "member_class": "COM",
            "member_code": "5678",
            "subsystem_code": "REGISTRY",
        },
        "name": "Example Registry Ltd",
        "subsystem_name": "Person registry",
    }
    assert set(document["member"][1]) == {"id"}
    assert meta.parse_client_list_json(data)[0] == entry


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("application/json", True),
        ("text/xml, application/json;q=0.1", True),
        ("application/json-patch+json", False),
        ("*/*", False),
    ],
    ids=["none", "exact", "low-q", "other-json", "wildcard"],
)
def test_json_only_for_an_exact_accept_element(
    accept: str | None, expected: bool
) -> None:
    assert meta.wants_json(accept) is expected


def test_parse_client_list_refuses_another_root() -> None:
    with pytest.raises(InvalidXml):
        meta.parse_client_list_xml(b"<other/>")


# -- SOAP method lists ----------------------------------------------------------------


def test_method_list_answer_echoes_headers_and_lists_services() -> None:
    request = meta.build_method_list_request(
        CONSUMER, PROVIDER, meta.ALLOWED_METHODS, "q-1"
    )
    services = [GET_PERSON, ServiceId(PROVIDER, "stats")]

    answer = meta.build_method_list_response(request, services)

    # The answer is a valid X-Road response once the server adds requestHash.
    parsed = parse_soap(insert_request_hash(answer, request_hash(request)), "text/xml")
    assert parsed.header.client == CONSUMER
    assert parsed.header.query_id == "q-1"
    assert etree.QName(parsed.body_tag).localname == "allowedMethodsResponse"
    assert meta.parse_method_list_response(answer) == services


def test_method_list_request_refuses_other_codes() -> None:
    with pytest.raises(meta.MetaserviceRequestError) as info:
        meta.build_method_list_request(CONSUMER, PROVIDER, "getPerson", "q")
    assert info.value.code == "InvalidRequest"


# -- getWsdl ---------------------------------------------------------------------------


def test_get_wsdl_request_round_trip() -> None:
    request = meta.build_get_wsdl_request(CONSUMER, GET_PERSON, "q-2")

    assert meta.parse_get_wsdl_request(request, PROVIDER) == GET_PERSON
    parsed = parse_soap(request, "text/xml")
    assert parsed.header.service == ServiceId(PROVIDER, "getWsdl")


def test_get_wsdl_without_service_code_is_a_provider_side_invalid_request() -> None:
    request = meta.build_get_wsdl_request(CONSUMER, GET_PERSON, "q-3")
    request = request.replace(b"getPerson", b"  ")

    with pytest.raises(meta.MetaserviceRequestError) as info:
        meta.parse_get_wsdl_request(request, PROVIDER)
    # Not a ClientRequestError: the fault prefix is Server.ServerProxy.
    assert info.value.code == "InvalidRequest"
    assert not isinstance(info.value, InvalidRequest)


def test_wsdl_addresses_are_hidden_and_comments_kept() -> None:
    rewritten = meta.rewrite_wsdl_addresses(WSDL)

    root = etree.fromstring(rewritten)
    locations = [el.get("location") for el in root.iter() if el.get("location")]
    assert locations == [
        meta.HIDDEN_ENDPOINT,
        meta.HIDDEN_ENDPOINT,
        "https://10.0.0.7/z",  # not a SOAP binding address
    ]
    assert b"<!-- internal hosts below -->" in rewritten
    assert b"10.0.0.7:8443" not in rewritten


def test_wsdl_that_is_not_xml_is_an_internal_error() -> None:
    with pytest.raises(meta.DescriptionError) as info:
        meta.rewrite_wsdl_addresses(b"<!DOCTYPE x><x/>")
    assert info.value.code == "InternalError"


def test_get_wsdl_answer_renames_the_wrapper_and_attaches_the_wsdl() -> None:
    request = meta.build_get_wsdl_request(CONSUMER, GET_PERSON, "q-4")

    soap_part, attachment = meta.build_get_wsdl_response(request, b"<w/>", "abc")

    body = etree.fromstring(soap_part).find(f"{{{SOAP_ENV_NS}}}Body")
    wrapper = body[0]
    assert wrapper.tag == f"{{{XROAD_NS}}}getWsdlResponse"
    assert wrapper.findtext(f"{{{XROAD_NS}}}serviceCode") == "getPerson"
    assert wrapper.findtext(f"{{{XROAD_NS}}}serviceVersion") == "v2"
    assert attachment.header("Content-ID") == "<wsdl=abc@x-road.eu>"
    assert attachment.content_type == "text/xml"
    assert meta.wsdl_attachment([attachment]).body == b"<w/>"


def test_wsdl_attachment_missing() -> None:
    with pytest.raises(meta.DescriptionError):
        meta.wsdl_attachment([])


def test_legacy_wsdl_query() -> None:
    query = (
        "xRoadInstance=INST&memberClass=COM&memberCode=5678"
        "&subsystemCode=REGISTRY&serviceCode=getPerson&version=v2"
    )
    assert meta.parse_legacy_wsdl_query(query) == GET_PERSON


@pytest.mark.parametrize(
    "query",
    [
        "xRoadInstance=&memberClass=COM&memberCode=5678&serviceCode=s",
        "xRoadInstance=INST&memberClass=COM&memberCode=5678&serviceCode=",
        "xRoadInstance=INST&serviceCode=s",
    ],
    ids=["blank-instance", "blank-service", "central-service"],
)
def test_legacy_wsdl_query_refusals(query: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        meta.parse_legacy_wsdl_query(query)
    assert info.value.code == "InvalidRequest"


# -- REST method lists -----------------------------------------------------------------


def test_rest_method_list_shape_and_round_trip() -> None:
    entry = meta.RestServiceEntry(
        ServiceId(PROVIDER, "persons"),
        meta.SERVICE_TYPE_OPENAPI,
        (("GET", "/v1/people"), ("POST", "/v1/people")),
    )

    data = meta.build_rest_method_list([entry])

    item = json.loads(data)["service"][0]
    assert item["service_code"] == "persons"
    assert item["service_type"] == "OPENAPI"
    assert "service_version" not in item
    assert item["endpoint_list"][1] == {"method": "POST", "path": "/v1/people"}
    assert meta.parse_rest_method_list(data) == [entry]


# -- getOpenAPI ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [("serviceCode=persons", "persons"), ("a=1&SERVICECODE=x", "x")],
    ids=["plain", "case-insensitive"],
)
def test_openapi_service_code(query: str, expected: str) -> None:
    assert meta.parse_get_openapi_query(query) == expected


def test_openapi_service_code_missing() -> None:
    with pytest.raises(meta.MetaserviceRequestError):
        meta.parse_get_openapi_query("servicecode=")


@pytest.mark.parametrize(
    ("content_type", "url", "expected"),
    [
        ("application/json; charset=utf-8", "http://x/a.yaml", "json"),
        ("application/x-yaml", "http://x/a.json", "yaml"),
        (None, "http://x/openapi.json?v=1", "json"),
        ("text/plain", "http://x/openapi", "yaml"),
    ],
    ids=["json-type", "yaml-type", "json-suffix", "default"],
)
def test_description_format(content_type: str | None, url: str, expected: str) -> None:
    assert meta.description_format(content_type, url) == expected


def test_openapi_servers_keep_only_their_path() -> None:
    document = {
        "openapi": "3.0.3",
        "servers": [
            {"url": "https://registry.internal:8443/api/v1"},
            {"url": "https://registry.internal"},
            {"url": "https://{host}/api"},
        ],
        "paths": {"/x": {"servers": [{"url": "https://inner.internal/x"}]}},
    }

    out = json.loads(meta.anonymize_openapi(json.dumps(document).encode(), "json"))

    assert [s["url"] for s in out["servers"]] == ["/api/v1", "", "https://{host}/api"]
    assert out["paths"]["/x"]["servers"][0]["url"] == "https://inner.internal/x"


def test_openapi_2_is_refused() -> None:
    with pytest.raises(meta.DescriptionError) as info:
        meta.anonymize_openapi(b'{"swagger": "2.0", "openapi": "2.0"}', "json")
    assert info.value.code == "InternalError"


def test_openapi_not_json_is_an_internal_error() -> None:
    with pytest.raises(meta.DescriptionError):
        meta.anonymize_openapi(b"{nope", "json")


def test_yaml_description_is_anonymised() -> None:
    import yaml

    data = b"openapi: 3.0.0\nservers:\n  - url: https://h.internal/api\n"
    out = yaml.safe_load(meta.anonymize_openapi(data, "yaml"))
    assert out["servers"][0]["url"] == "/api"
