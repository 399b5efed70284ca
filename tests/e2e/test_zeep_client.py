"""A real SOAP client library (zeep) calling through the ecosystem unchanged.

zeep builds itself from the provider's WSDL, which imports the X-Road header
schemas; only the endpoint address is pointed at the consumer's client proxy,
as an X-Road client's configuration would do.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import zeep

from demo.ecosystem import BENEFITS_SUBSYSTEM, HOST, SOAP_SERVICE, Ecosystem

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def call_with_zeep(
    wsdl_url: str, proxy_url: str, query_id: str
) -> tuple[object, object]:
    client = zeep.Client(wsdl_url)
    service = client.create_service(
        "{urn:xgate:demo:population-register}populationRegisterBinding", proxy_url
    )
    provider = SOAP_SERVICE.provider
    headers = {
        "client": {
            "objectType": "SUBSYSTEM",
            "xRoadInstance": BENEFITS_SUBSYSTEM.instance,
            "memberClass": BENEFITS_SUBSYSTEM.member_class,
            "memberCode": BENEFITS_SUBSYSTEM.member_code,
            "subsystemCode": BENEFITS_SUBSYSTEM.subsystem_code,
        },
        "service": {
            "objectType": "SERVICE",
            "xRoadInstance": provider.instance,
            "memberClass": provider.member_class,
            "memberCode": provider.member_code,
            "subsystemCode": provider.subsystem_code,
            "serviceCode": SOAP_SERVICE.service_code,
            "serviceVersion": SOAP_SERVICE.service_version,
        },
        "id": query_id,
        "userId": "EE38001010000",
        "protocolVersion": "4.0",
    }
    result = service.checkDigitalId(personCode="38001010000", _soapheaders=headers)
    return result, headers


async def test_zeep_client_calls_soap_service_through_client_proxy(
    ecosystem: Ecosystem,
) -> None:
    wsdl_url = f"http://{HOST}:{ecosystem.ports['provider']}/population-register.wsdl"
    query_id = f"zeep-{uuid.uuid4()}"

    result, _ = await asyncio.to_thread(
        call_with_zeep, wsdl_url, ecosystem.client_proxy_url + "/", query_id
    )

    assert result.body.name == "Mari Maasikas"
    assert result.body.digitalIdValid is True
    assert result.header.id == query_id  # the X-Road header came back mirrored
    assert result.header.client.subsystemCode == "BENEFITS"
    runtime = ecosystem.agency_server.runtime
    records = await runtime.message_log.find(query_id=query_id)
    assert sorted(r.response for r in records) == [False, True]
