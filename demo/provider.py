"""Demo: the population register's information system (the service provider).

It offers one SOAP operation, ``checkDigitalId``, described by a WSDL, and one
REST resource, ``GET /v1/persons/{personCode}/digital-id``, described by an
OpenAPI 3 document. It knows a handful of invented people.
"""

from __future__ import annotations

import json

from aiohttp import web
from lxml import etree

from protocol.xml import parse_xml
from protocol.xsd import IDENTIFIERS_XSD, xroad_xsd

NS = "urn:xgate:demo:population-register"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"

# Invented people; personal codes follow no real country's rules.
PEOPLE = {
    "38001010000": {"name": "Mari Maasikas", "valid": True, "validUntil": "2029-05-31"},
    "49002020000": {"name": "Jaan Tamm", "valid": False, "validUntil": "2024-01-15"},
}

WSDL = f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"
    xmlns:tns="{NS}" targetNamespace="{NS}" name="populationRegister">
  <wsdl:types>
    <xsd:schema elementFormDefault="qualified" targetNamespace="{NS}">
      <xsd:import namespace="http://x-road.eu/xsd/xroad.xsd" schemaLocation="xroad.xsd"/>
      <xsd:element name="checkDigitalId">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="personCode" type="xsd:string"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="checkDigitalIdResponse">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="personCode" type="xsd:string"/>
          <xsd:element name="known" type="xsd:boolean"/>
          <xsd:element name="name" type="xsd:string" minOccurs="0"/>
          <xsd:element name="digitalIdValid" type="xsd:boolean"/>
          <xsd:element name="validUntil" type="xsd:date" minOccurs="0"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </wsdl:types>
  <wsdl:message name="requestHeader">
    <wsdl:part name="client" element="xrd:client"/>
    <wsdl:part name="service" element="xrd:service"/>
    <wsdl:part name="id" element="xrd:id"/>
    <wsdl:part name="userId" element="xrd:userId"/>
    <wsdl:part name="protocolVersion" element="xrd:protocolVersion"/>
  </wsdl:message>
  <wsdl:message name="checkDigitalId">
    <wsdl:part name="body" element="tns:checkDigitalId"/>
  </wsdl:message>
  <wsdl:message name="checkDigitalIdResponse">
    <wsdl:part name="body" element="tns:checkDigitalIdResponse"/>
  </wsdl:message>
  <wsdl:portType name="populationRegisterPortType">
    <wsdl:operation name="checkDigitalId">
      <wsdl:documentation>
        <xrd:title>Is a person's digital ID valid?</xrd:title>
      </wsdl:documentation>
      <wsdl:input message="tns:checkDigitalId"/>
      <wsdl:output message="tns:checkDigitalIdResponse"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="populationRegisterBinding" type="tns:populationRegisterPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="checkDigitalId">
      <soap:operation soapAction="" style="document"/>
      <xrd:version>v1</xrd:version>
      <wsdl:input>
        <soap:body parts="body" use="literal"/>
        <soap:header message="tns:requestHeader" part="client" use="literal"/>
        <soap:header message="tns:requestHeader" part="service" use="literal"/>
        <soap:header message="tns:requestHeader" part="id" use="literal"/>
        <soap:header message="tns:requestHeader" part="userId" use="literal"/>
        <soap:header message="tns:requestHeader" part="protocolVersion" use="literal"/>
      </wsdl:input>
      <wsdl:output>
        <soap:body parts="body" use="literal"/>
        <soap:header message="tns:requestHeader" part="client" use="literal"/>
        <soap:header message="tns:requestHeader" part="service" use="literal"/>
        <soap:header message="tns:requestHeader" part="id" use="literal"/>
        <soap:header message="tns:requestHeader" part="userId" use="literal"/>
        <soap:header message="tns:requestHeader" part="protocolVersion" use="literal"/>
      </wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="populationRegisterService">
    <wsdl:port name="populationRegisterPort" binding="tns:populationRegisterBinding">
      <soap:address location="http://localhost/population-register"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "Population register: digital ID", "version": "1.0.0"},
    "servers": [{"url": "http://localhost/api"}],
    "paths": {
        "/v1/persons/{personCode}/digital-id": {
            "get": {
                "summary": "Is a person's digital ID valid?",
                "parameters": [
                    {
                        "name": "personCode",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The person and the state of their digital ID"
                    },
                    "404": {"description": "No such person"},
                },
            }
        }
    },
}


def check_digital_id(person_code: str) -> dict[str, object]:
    person = PEOPLE.get(person_code)
    if person is None:
        return {"personCode": person_code, "known": False, "digitalIdValid": False}
    return {
        "personCode": person_code,
        "known": True,
        "name": person["name"],
        "digitalIdValid": person["valid"],
        "validUntil": person["validUntil"],
    }


async def soap_endpoint(request: web.Request) -> web.Response:
    """Answer ``checkDigitalId``: echo the X-Road header, answer in the body."""
    envelope = parse_xml(await request.read())
    header = envelope.find(f"{{{SOAP_ENV}}}Header")
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    question = body[0] if body is not None and len(body) else None
    if question is None or etree.QName(question).localname != "checkDigitalId":
        return _soap_fault("Client", "expected a checkDigitalId request")
    code = question.findtext(f"{{{NS}}}personCode") or ""
    answer = check_digital_id(code)

    out = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV})
    if header is not None:
        out.append(header)
    out_body = etree.SubElement(out, f"{{{SOAP_ENV}}}Body")
    response = etree.SubElement(
        out_body, f"{{{NS}}}checkDigitalIdResponse", nsmap={"pr": NS}
    )
    for name in ("personCode", "known", "name", "digitalIdValid", "validUntil"):
        if name in answer:
            value = answer[name]
            text = str(value).lower() if isinstance(value, bool) else str(value)
            etree.SubElement(response, f"{{{NS}}}{name}").text = text
    xml = etree.tostring(out, xml_declaration=True, encoding="UTF-8")
    return web.Response(body=xml, content_type="text/xml", charset="utf-8")


def _soap_fault(code: str, message: str) -> web.Response:
    fault = (
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}">'
        f"<SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>{code}</faultcode>"
        f"<faultstring>{message}</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body>"
        "</SOAP-ENV:Envelope>"
    )
    return web.Response(status=500, body=fault.encode(), content_type="text/xml")


async def rest_digital_id(request: web.Request) -> web.Response:
    answer = check_digital_id(request.match_info["code"])
    status = 200 if answer["known"] else 404
    return web.json_response(answer, status=status)


async def wsdl(request: web.Request) -> web.Response:
    return web.Response(text=WSDL, content_type="text/xml")


async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        text=json.dumps(OPENAPI, indent=2), content_type="application/json"
    )


async def schema(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = xroad_xsd() if name == "xroad.xsd" else IDENTIFIERS_XSD
    return web.Response(body=body, content_type="text/xml")


def provider_app() -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/population-register", soap_endpoint)
    app.router.add_get("/population-register.wsdl", wsdl)
    app.router.add_get("/{name:xroad.xsd|identifiers.xsd}", schema)
    app.router.add_get("/api/v1/persons/{code}/digital-id", rest_digital_id)
    app.router.add_get("/api/openapi.json", openapi)
    return app
