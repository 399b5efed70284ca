"""Core: XML Schemas of the X-Road header elements, for WSDLs that import them.

Service descriptions written for X-Road import ``xroad.xsd`` (header elements)
which imports ``identifiers.xsd`` (identifier types). SOAP client libraries
resolve these imports when they build themselves from a WSDL, so xgate serves
its own rendering of them. Element names, namespaces and types follow
identifiers.md §2-§3 and soap-message.md §3; the text is ours.
"""

from __future__ import annotations

IDENTIFIERS_XSD = b"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns="http://x-road.eu/xsd/identifiers"
    targetNamespace="http://x-road.eu/xsd/identifiers"
    elementFormDefault="qualified">
  <xs:simpleType name="XRoadObjectType">
    <xs:restriction base="xs:string">
      <xs:enumeration value="MEMBER"/>
      <xs:enumeration value="SUBSYSTEM"/>
      <xs:enumeration value="SERVICE"/>
      <xs:enumeration value="SERVER"/>
      <xs:enumeration value="GLOBALGROUP"/>
      <xs:enumeration value="LOCALGROUP"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:attribute name="objectType" type="XRoadObjectType"/>
  <xs:element name="xRoadInstance" type="xs:string"/>
  <xs:element name="memberClass" type="xs:string"/>
  <xs:element name="memberCode" type="xs:string"/>
  <xs:element name="subsystemCode" type="xs:string"/>
  <xs:element name="groupCode" type="xs:string"/>
  <xs:element name="serviceCode" type="xs:string"/>
  <xs:element name="serviceVersion" type="xs:string"/>
  <xs:element name="serverCode" type="xs:string"/>
  <xs:complexType name="XRoadClientIdentifierType">
    <xs:sequence>
      <xs:element ref="xRoadInstance"/>
      <xs:element ref="memberClass"/>
      <xs:element ref="memberCode"/>
      <xs:element ref="subsystemCode" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute ref="objectType" use="required"/>
  </xs:complexType>
  <xs:complexType name="XRoadServiceIdentifierType">
    <xs:sequence>
      <xs:element ref="xRoadInstance"/>
      <xs:element ref="memberClass"/>
      <xs:element ref="memberCode"/>
      <xs:element ref="subsystemCode" minOccurs="0"/>
      <xs:element ref="serviceCode"/>
      <xs:element ref="serviceVersion" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute ref="objectType" use="required"/>
  </xs:complexType>
  <xs:complexType name="XRoadSecurityServerIdentifierType">
    <xs:sequence>
      <xs:element ref="xRoadInstance"/>
      <xs:element ref="memberClass"/>
      <xs:element ref="memberCode"/>
      <xs:element ref="serverCode"/>
    </xs:sequence>
    <xs:attribute ref="objectType" use="required"/>
  </xs:complexType>
</xs:schema>
"""

XROAD_XSD_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns="http://x-road.eu/xsd/xroad.xsd"
    xmlns:id="http://x-road.eu/xsd/identifiers"
    targetNamespace="http://x-road.eu/xsd/xroad.xsd"
    elementFormDefault="qualified">
  <xs:import namespace="http://x-road.eu/xsd/identifiers"
      schemaLocation="{identifiers_location}"/>
  <xs:element name="client" type="id:XRoadClientIdentifierType"/>
  <xs:element name="service" type="id:XRoadServiceIdentifierType"/>
  <xs:element name="securityServer" type="id:XRoadSecurityServerIdentifierType"/>
  <xs:element name="id" type="xs:string"/>
  <xs:element name="userId" type="xs:string"/>
  <xs:element name="issue" type="xs:string"/>
  <xs:element name="protocolVersion" type="xs:string"/>
  <xs:element name="requestHash">
    <xs:complexType>
      <xs:simpleContent>
        <xs:extension base="xs:string">
          <xs:attribute name="algorithmId" type="xs:string" use="required"/>
        </xs:extension>
      </xs:simpleContent>
    </xs:complexType>
  </xs:element>
  <xs:element name="version" type="xs:string"/>
  <xs:element name="title" type="xs:string"/>
  <xs:element name="notes" type="xs:string"/>
  <xs:element name="techNotes" type="xs:string"/>
</xs:schema>
"""


def xroad_xsd(identifiers_location: str = "identifiers.xsd") -> bytes:
    """``xroad.xsd`` importing the identifiers schema from ``identifiers_location``."""
    return XROAD_XSD_TEMPLATE.format(identifiers_location=identifiers_location).encode()
