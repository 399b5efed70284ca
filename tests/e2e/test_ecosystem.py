"""End to end: a real ecosystem, real HTTP clients, real signatures and timestamps."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import timedelta

import aiohttp
import pytest
from lxml import etree

from demo.ecosystem import (
    AGENCY,
    BENEFITS_SUBSYSTEM,
    REGISTRY_SUBSYSTEM,
    REST_SERVICE,
    SOAP_SERVICE,
    Ecosystem,
    wait_for_timestamps,
)
from demo.provider import NS
from demo.story import make_calls, rest_example, soap_example
from protocol.auditor import verify_container
from protocol.identifiers import ServiceId
from protocol.soap import build_soap_request
from security_server.logexport import build_record_container
from security_server.server import SecurityServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XRD = "http://x-road.eu/xsd/xroad.xsd"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}


async def post_soap(
    ecosystem: Ecosystem, body: bytes, headers=None
) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/", data=body, headers=headers or SOAP_HEADERS
        ) as response:
            return response.status, await response.read()


async def get_rest(
    ecosystem: Ecosystem,
    path: str,
    client: str | None = BENEFITS_SUBSYSTEM.slash(),
    accept: str = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": accept}
    if client is not None:
        headers["X-Road-Client"] = client
    async with aiohttp.ClientSession() as session:
        async with session.get(
            ecosystem.client_proxy_url + path, headers=headers
        ) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def fault_code(body: bytes) -> str:
    envelope = etree.fromstring(body)
    fault = envelope.find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None, body[:300]
    return fault.findtext("faultcode") or ""


def soap_request(service: ServiceId = SOAP_SERVICE, client=BENEFITS_SUBSYSTEM) -> bytes:
    body = etree.Element(f"{{{NS}}}{service.service_code}", nsmap={"pr": NS})
    etree.SubElement(body, f"{{{NS}}}personCode").text = "38001010000"
    return build_soap_request(client, service, "e2e-query", body)


# -- the two calls ---------------------------------------------------------------


async def test_soap_call_is_answered_with_mirrored_headers(
    ecosystem: Ecosystem,
) -> None:
    request = soap_example("e2e-soap-1")
    status, body = await post_soap(ecosystem, request)

    assert status == 200
    envelope = etree.fromstring(body)
    assert envelope.findtext(f".//{{{NS}}}name") == "Mari Maasikas"
    assert envelope.findtext(f".//{{{NS}}}digitalIdValid") == "true"
    header = envelope.find(f"{{{SOAP_ENV}}}Header")
    assert header.findtext(f"{{{XRD}}}id") == "e2e-soap-1"
    assert header.findtext(f"{{{XRD}}}userId") == "EE38001010000"
    assert header.findtext(f"{{{XRD}}}protocolVersion") == "4.0"
    client = header.find(f"{{{XRD}}}client")
    assert [c.text for c in client] == ["DEMO", "GOV", "2002", "BENEFITS"]
    request_hash = header.find(f"{{{XRD}}}requestHash")
    assert request_hash.get("algorithmId") == "http://www.w3.org/2001/04/xmlenc#sha512"
    assert base64.b64decode(request_hash.text) == hashlib.sha512(request).digest()


async def test_rest_call_is_answered_with_x_road_headers(ecosystem: Ecosystem) -> None:
    status, headers, body = await get_rest(ecosystem, rest_example())

    assert status == 200
    assert json.loads(body)["digitalIdValid"] is True
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-road-client"] == BENEFITS_SUBSYSTEM.slash()
    assert lowered["x-road-service"] == REST_SERVICE.slash()
    assert lowered["x-road-id"].startswith("DEMO-")
    assert lowered["x-road-request-id"]
    assert lowered["x-road-request-hash"]
    assert "x-road-error" not in lowered


async def test_rest_error_from_the_service_passes_through(ecosystem: Ecosystem) -> None:
    path = f"/r1/{REST_SERVICE.slash()}/v1/persons/00000000000/digital-id"
    status, headers, body = await get_rest(ecosystem, path)

    assert status == 404
    assert "X-Road-Error" not in headers
    assert json.loads(body)["known"] is False


async def test_both_message_logs_hold_signed_and_timestamped_records(
    ecosystem: Ecosystem,
) -> None:
    answers = await make_calls(ecosystem)
    assert answers.soap_status == answers.rest_status == 200
    await wait_for_timestamps(ecosystem)

    for server in (ecosystem.agency_server, ecosystem.register_server):
        runtime = server.runtime
        conf = runtime.conf_client.current
        for query_id in (answers.soap_query_id, answers.rest_query_id):
            records = await runtime.message_log.find(query_id=query_id)
            assert sorted(r.response for r in records) == [False, True]
            for record in records:
                # The auditor's own check: signature, certificate, OCSP and
                # timestamp (single or batch) of the exported container.
                verdict = verify_container(build_record_container(record), conf)
                signer = (REGISTRY_SUBSYSTEM if record.response else AGENCY).member
                assert verdict.signing_cert.subject.rfc4514_string() == (
                    f"CN={signer.member_code},O={signer.member_class},C=DEMO"
                )
                assert abs(verdict.timestamp_time - record.time) < timedelta(minutes=1)


# -- bad input: each gets its code and the server keeps serving ---------------------


async def test_body_that_is_not_xml(ecosystem: Ecosystem) -> None:
    status, body = await post_soap(ecosystem, b"this is not XML <")
    assert status == 200
    assert fault_code(body) == "Client.InvalidXml"


async def test_soap_without_x_road_headers(ecosystem: Ecosystem) -> None:
    envelope = (
        f'<e:Envelope xmlns:e="{SOAP_ENV}"><e:Body><x:ping xmlns:x="urn:x"/></e:Body>'
        "</e:Envelope>"
    ).encode()
    status, body = await post_soap(ecosystem, envelope)
    assert fault_code(body) == "Client.MissingHeader"


async def test_unknown_service(ecosystem: Ecosystem) -> None:
    status, body = await post_soap(
        ecosystem, soap_request(ServiceId(REGISTRY_SUBSYSTEM, "noSuchService"))
    )
    assert fault_code(body) == "Server.ServerProxy.UnknownService"


async def test_client_not_registered_on_this_server(ecosystem: Ecosystem) -> None:
    status, body = await post_soap(ecosystem, soap_request(client=REGISTRY_SUBSYSTEM))
    assert fault_code(body) == "Server.ClientProxy.UnknownMember"

    status, headers, body = await get_rest(
        ecosystem, rest_example(), client=REGISTRY_SUBSYSTEM.slash()
    )
    assert status == 500
    assert headers["X-Road-Error"] == "Server.ClientProxy.UnknownMember"
    assert json.loads(body)["type"] == "Server.ClientProxy.UnknownMember"


async def test_client_without_access_right(ecosystem: Ecosystem) -> None:
    # The agency's member itself is a client of its server but has no right.
    status, body = await post_soap(ecosystem, soap_request(client=AGENCY))
    assert fault_code(body) == "Server.ServerProxy.AccessDenied"

    # REST rights are per method and path: another path is refused.
    path = f"/r1/{REST_SERVICE.slash()}/v1/persons"
    status, headers, body = await get_rest(ecosystem, path, accept="text/xml")
    assert status == 500
    assert headers["X-Road-Error"] == "Server.ServerProxy.AccessDenied"
    assert etree.fromstring(body).findtext("type") == "Server.ServerProxy.AccessDenied"


async def test_rest_request_without_client_header(ecosystem: Ecosystem) -> None:
    status, headers, body = await get_rest(ecosystem, rest_example(), client=None)
    assert status == 500
    assert headers["X-Road-Error"] == "Server.ClientProxy.InvalidClientIdentifier"


async def test_provider_server_unreachable(ecosystem: Ecosystem) -> None:
    await ecosystem.register_server.stop()
    try:
        status, body = await post_soap(ecosystem, soap_example("e2e-down"))
        assert fault_code(body) == "Server.ClientProxy.NetworkError"
        status, headers, _ = await get_rest(ecosystem, rest_example())
        assert headers["X-Road-Error"] == "Server.ClientProxy.NetworkError"
    finally:
        restarted = SecurityServer(
            ecosystem.register_server.directory,
            ecosystem.register_server.pin,
            clock=ecosystem.register_server.clock,
        )
        await restarted.start()
        ecosystem.register_server = restarted
    status, body = await post_soap(ecosystem, soap_example("e2e-back"))
    assert b"checkDigitalIdResponse" in body


async def test_global_configuration_expired(ecosystem: Ecosystem, clock) -> None:
    clock.offset = timedelta(hours=1)
    try:
        status, body = await post_soap(ecosystem, soap_example("e2e-expired"))
        assert fault_code(body) == "Server.ClientProxy.OutdatedGlobalConf"
        status, headers, _ = await get_rest(ecosystem, rest_example())
        assert headers["X-Road-Error"] == "Server.ClientProxy.OutdatedGlobalConf"
    finally:
        clock.offset = timedelta()


async def test_server_keeps_serving_after_bad_input(ecosystem: Ecosystem) -> None:
    await asyncio.gather(*(post_soap(ecosystem, b"<broken") for _ in range(5)))
    status, body = await post_soap(ecosystem, soap_example("e2e-after"))
    assert status == 200
    assert b"checkDigitalIdResponse" in body
