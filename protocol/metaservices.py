"""Core: service metadata -- the metaservices of PR-META and PR-MREST (metaservices.md).

Builds and parses the ``clientList`` documents (§2), the SOAP and REST method
lists (§3, §5), the ``getWsdl`` request and answer with the WSDL address
rewrite (§4) and the OpenAPI ``servers`` anonymisation of ``getOpenAPI`` (§6).
Bytes and value objects in, bytes out; fetching is the adapter's job.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from lxml import etree

from .errors import InvalidRequest, InvalidXml, XRoadError
from .globalconf import Member
from .identifiers import (
    ID_NS,
    XROAD_NS,
    ClientId,
    ServiceId,
    client_from_xml,
    service_from_xml,
    to_xml,
)
from .mime import MimePart
from .soap import SOAP_ENV_NS, build_soap_request
from .xml import parse_xml

LIST_CLIENTS = "listClients"
LIST_METHODS = "listMethods"
ALLOWED_METHODS = "allowedMethods"
GET_WSDL = "getWsdl"
GET_OPENAPI = "getOpenAPI"

# metaservices.md §1: a provider may not define services with these codes.
RESERVED_SERVICE_CODES = frozenset(
    {
        LIST_CLIENTS,
        LIST_METHODS,
        ALLOWED_METHODS,
        GET_WSDL,
        GET_OPENAPI,
        "getSecurityServerMetrics",
        "getSecurityServerOperationalData",
        "getSecurityServerHealthData",
    }
)
SOAP_METASERVICES = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_WSDL})
REST_METASERVICES = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_OPENAPI})

# §4: where every SOAP address of a served WSDL points after the rewrite.
HIDDEN_ENDPOINT = "http://example.org/xroad-endpoint"
WSDL_SOAP11_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"

CLIENT_LIST_XML_TYPE = "text/xml; charset=UTF-8"
CLIENT_LIST_JSON_TYPE = "application/json; charset=utf-8"
METHOD_LIST_TYPE = "text/xml; charset=UTF-8"

SERVICE_TYPE_REST = "REST"
SERVICE_TYPE_OPENAPI = "OPENAPI"

_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_BODY = f"{{{SOAP_ENV_NS}}}Body"
_NSMAP: dict[str | None, str] = {"xrd": XROAD_NS, "id": ID_NS}


class MetaserviceRequestError(XRoadError):
    """A metaservice request lacks what it needs (§4, §6).

    Not a ``ClientRequestError``: the reference reports it with the provider
    side's prefix, ``Server.ServerProxy.InvalidRequest``.
    """

    code = "InvalidRequest"


class DescriptionError(XRoadError):
    """A service description could not be fetched or read (§4, §6)."""

    code = "InternalError"


class UnsupportedDescriptionFormat(DescriptionError):
    """A YAML OpenAPI description, and PyYAML is not installed here."""

    code = "UnsupportedDescriptionFormat"


# -- listClients (§2) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientListEntry:
    """One ``member`` of a ``clientList``: a member or one of its subsystems."""

    client_id: ClientId
    name: str | None = None
    subsystem_name: str | None = None


def entries_from_members(members: Iterable[Member]) -> list[ClientListEntry]:
    """Every member of the global configuration, each followed by its subsystems.

    Global configuration carries no subsystem names, so none are listed.
    """
    entries: list[ClientListEntry] = []
    for member in members:
        entries.append(ClientListEntry(member.id, member.name))
        for code in member.subsystems:
            subsystem = ClientId(
                member.id.instance, member.id.member_class, member.id.member_code, code
            )
            entries.append(ClientListEntry(subsystem, member.name))
    return entries


def wants_json(accept: str | None) -> bool:
    """True when some ``Accept`` element is exactly ``application/json`` (§2)."""
    if not accept:
        return False
    for element in accept.split(","):
        media_type = element.split(";", 1)[0].strip().lower()
        if media_type == "application/json":
            return True
    return False


def build_client_list_xml(entries: Iterable[ClientListEntry]) -> bytes:
    """Build the XML ``clientList`` document (§2)."""
    root = etree.Element(f"{{{XROAD_NS}}}clientList", nsmap=_NSMAP)
    for entry in entries:
        member = etree.SubElement(root, f"{{{XROAD_NS}}}member")
        member.append(to_xml(entry.client_id, f"{{{XROAD_NS}}}id", _NSMAP))
        if entry.name is not None:
            etree.SubElement(member, f"{{{XROAD_NS}}}name").text = entry.name
        if entry.subsystem_name is not None:
            name = etree.SubElement(member, f"{{{XROAD_NS}}}subsystemName")
            name.text = entry.subsystem_name
    etree.cleanup_namespaces(root, top_nsmap=_NSMAP)
    text: bytes = etree.tostring(root, encoding="UTF-8")
    return _XML_DECLARATION + text


def parse_client_list_xml(data: bytes) -> list[ClientListEntry]:
    """Read an XML ``clientList`` document.

    :raises InvalidXml: not a ``clientList`` or a malformed identifier.
    """
    root = parse_xml(data)
    if root.tag != f"{{{XROAD_NS}}}clientList":
        raise InvalidXml(f"root element is {root.tag!r}, not clientList")
    entries = []
    for member in root.iterchildren(f"{{{XROAD_NS}}}member"):
        id_element = member.find(f"{{{XROAD_NS}}}id")
        if id_element is None:
            raise InvalidXml("clientList member has no id")
        entries.append(
            ClientListEntry(
                client_from_xml(id_element),
                member.findtext(f"{{{XROAD_NS}}}name"),
                member.findtext(f"{{{XROAD_NS}}}subsystemName"),
            )
        )
    return entries


def build_client_list_json(entries: Iterable[ClientListEntry]) -> bytes:
    """Build the JSON ``clientList`` document: snake_case keys, no nulls (§2)."""
    members = []
    for entry in entries:
        item: dict[str, Any] = {"id": _client_json(entry.client_id)}
        if entry.name is not None:
            item["name"] = entry.name
        if entry.subsystem_name is not None:
            item["subsystem_name"] = entry.subsystem_name
        members.append(item)
    return json.dumps({"member": members}, ensure_ascii=False).encode("utf-8")


def parse_client_list_json(data: bytes) -> list[ClientListEntry]:
    """Read a JSON ``clientList`` document.

    :raises MetaserviceRequestError: not the documented shape.
    """
    document = _load_json(data)
    try:
        return [
            ClientListEntry(
                _client_from_json(item["id"]),
                item.get("name"),
                item.get("subsystem_name"),
            )
            for item in document.get("member", [])
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise MetaserviceRequestError(f"malformed JSON clientList: {exc!r}") from exc


def _client_json(client_id: ClientId) -> dict[str, str]:
    item = {
        "object_type": client_id.object_type.value,
        "xroad_instance": client_id.instance,
        "member_class": client_id.member_class,
        "member_code": client_id.member_code,
    }
    if client_id.subsystem_code is not None:
        item["subsystem_code"] = client_id.subsystem_code
    return item


def _client_from_json(item: dict[str, str]) -> ClientId:
    return ClientId(
        item["xroad_instance"],
        item["member_class"],
        item["member_code"],
        item.get("subsystem_code"),
    )


# -- SOAP listMethods / allowedMethods (§3) -------------------------------------


def build_method_list_request(
    client: ClientId, provider: ClientId, service_code: str, query_id: str
) -> bytes:
    """Build a ``listMethods`` or ``allowedMethods`` SOAP request."""
    if service_code not in (LIST_METHODS, ALLOWED_METHODS):
        raise MetaserviceRequestError(f"{service_code!r} is not a method list")
    body = etree.Element(f"{{{XROAD_NS}}}{service_code}", nsmap={"xrd": XROAD_NS})
    service = ServiceId(provider, service_code)
    return build_soap_request(client, service, query_id, body)


def build_method_list_response(request_raw: bytes, services: list[ServiceId]) -> bytes:
    """Answer a method list request: its envelope, the body replaced (§3).

    The wrapper is named after the request's body element plus ``Response``;
    the caller adds ``requestHash`` as for any answer.
    """
    envelope, wrapper = _request_wrapper(request_raw)
    name = etree.QName(wrapper).localname
    answer = etree.Element(f"{{{XROAD_NS}}}{name}Response", nsmap=_NSMAP)
    for service_id in services:
        answer.append(to_xml(service_id, f"{{{XROAD_NS}}}service", _NSMAP))
    _replace_body(envelope, answer)
    return _serialise(envelope)


def parse_method_list_response(raw: bytes) -> list[ServiceId]:
    """The services a ``listMethodsResponse``/``allowedMethodsResponse`` names."""
    envelope = parse_xml(raw)
    body = envelope.find(_BODY)
    if body is None or not len(body):
        raise InvalidXml("method list answer has no body element")
    return [service_from_xml(el) for el in body[0].iter(f"{{{XROAD_NS}}}service")]


# -- getWsdl (§4) ---------------------------------------------------------------


def build_get_wsdl_request(
    client: ClientId,
    service_id: ServiceId,
    query_id: str,
    *,
    user_id: str | None = None,
) -> bytes:
    """Build a ``getWsdl`` request for the WSDL of ``service_id``."""
    body = etree.Element(f"{{{XROAD_NS}}}{GET_WSDL}", nsmap={"xrd": XROAD_NS})
    etree.SubElement(body, f"{{{XROAD_NS}}}serviceCode").text = service_id.service_code
    if service_id.service_version is not None:
        version = etree.SubElement(body, f"{{{XROAD_NS}}}serviceVersion")
        version.text = service_id.service_version
    meta = ServiceId(service_id.provider, GET_WSDL)
    return build_soap_request(
        client, meta, query_id, body, user_id, protocol_version="4.0"
    )


def parse_get_wsdl_request(request_raw: bytes, provider: ClientId) -> ServiceId:
    """The service whose WSDL a ``getWsdl`` request asks for.

    :raises MetaserviceRequestError: ``serviceCode`` missing or empty.
    """
    _, wrapper = _request_wrapper(request_raw)
    code = (wrapper.findtext(f"{{{XROAD_NS}}}serviceCode") or "").strip()
    if not code:
        raise MetaserviceRequestError("getWsdl request has no serviceCode")
    version = (wrapper.findtext(f"{{{XROAD_NS}}}serviceVersion") or "").strip()
    try:
        return ServiceId(provider, code, version or None)
    except XRoadError as exc:
        raise MetaserviceRequestError(f"invalid service in getWsdl: {exc}") from exc


def rewrite_wsdl_addresses(wsdl: bytes) -> bytes:
    """Point every SOAP ``address`` of a WSDL at :data:`HIDDEN_ENDPOINT` (§4).

    SOAP 1.2 addresses are rewritten too, so no internal endpoint leaks.
    Comments are kept; the result is UTF-8.

    :raises DescriptionError: the WSDL is not acceptable XML.
    """
    try:
        root = parse_xml(wsdl)
    except InvalidXml as exc:
        raise DescriptionError(f"service WSDL is not valid XML: {exc}") from exc
    for namespace in (WSDL_SOAP11_NS, WSDL_SOAP12_NS):
        for address in root.iter(f"{{{namespace}}}address"):
            if address.get("location") is not None:
                address.set("location", HIDDEN_ENDPOINT)
    body: bytes = etree.tostring(root.getroottree(), encoding="UTF-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def build_get_wsdl_response(
    request_raw: bytes, wsdl: bytes, content_id: str
) -> tuple[bytes, MimePart]:
    """The SOAP part and the WSDL attachment of a ``getWsdl`` answer (§4).

    :param wsdl: the WSDL already rewritten by :func:`rewrite_wsdl_addresses`.
    :param content_id: a fresh UUID; the core makes no nonces.
    """
    envelope, wrapper = _request_wrapper(request_raw)
    answer = copy.deepcopy(wrapper)
    answer.tag = f"{{{XROAD_NS}}}getWsdlResponse"
    _replace_body(envelope, answer)
    attachment = MimePart(
        (
            ("Content-Type", "text/xml"),
            ("Content-Transfer-Encoding", "binary"),
            ("Content-ID", f"<wsdl={content_id}@x-road.eu>"),
        ),
        wsdl,
    )
    return _serialise(envelope), attachment


def wsdl_attachment(attachments: list[MimePart]) -> MimePart:
    """Pick the WSDL from the attachments of a ``getWsdl`` answer.

    :raises DescriptionError: the answer carries no attachment.
    """
    for part in attachments:
        if (part.header("Content-ID") or "").startswith("<wsdl="):
            return part
    if attachments:
        return attachments[0]
    raise DescriptionError("getWsdl answer carries no WSDL attachment")


def parse_legacy_wsdl_query(query: str) -> ServiceId:
    """Read ``GET /wsdl?...`` parameters (§4.1) into the service asked about.

    :raises InvalidRequest: a blank mandatory parameter, or the removed
        central-service form (blank member class and code).
    """
    params = dict(parse_qsl(query, keep_blank_values=True))
    instance = params.get("xRoadInstance", "").strip()
    service_code = params.get("serviceCode", "").strip()
    if not instance or not service_code:
        raise InvalidRequest("xRoadInstance and serviceCode are required")
    member_class = params.get("memberClass", "").strip()
    member_code = params.get("memberCode", "").strip()
    if not member_class and not member_code:
        raise InvalidRequest("central services are not supported")
    try:
        provider = ClientId(
            instance,
            member_class,
            member_code,
            params.get("subsystemCode", "").strip() or None,
        )
        return ServiceId(
            provider, service_code, params.get("version", "").strip() or None
        )
    except XRoadError as exc:
        raise InvalidRequest(f"invalid service in query: {exc}") from exc


# -- REST listMethods / allowedMethods (§5) --------------------------------------


@dataclass(frozen=True, slots=True)
class RestServiceEntry:
    """One REST service of a method list, with its endpoints (method, path glob)."""

    service_id: ServiceId
    service_type: str  # SERVICE_TYPE_REST or SERVICE_TYPE_OPENAPI
    endpoints: tuple[tuple[str, str], ...] = ()


def build_rest_method_list(entries: Iterable[RestServiceEntry]) -> bytes:
    """Build the JSON method list of §5 (snake_case keys, no version)."""
    items = []
    for entry in entries:
        provider = entry.service_id.provider
        item: dict[str, Any] = {
            "object_type": "SERVICE",
            "xroad_instance": provider.instance,
            "member_class": provider.member_class,
            "member_code": provider.member_code,
        }
        if provider.subsystem_code is not None:
            item["subsystem_code"] = provider.subsystem_code
        item["service_code"] = entry.service_id.service_code
        if entry.service_id.service_version is not None:
            item["service_version"] = entry.service_id.service_version
        item["service_type"] = entry.service_type
        item["endpoint_list"] = [
            {"method": method, "path": path} for method, path in entry.endpoints
        ]
        items.append(item)
    return json.dumps({"service": items}, ensure_ascii=False).encode("utf-8")


def parse_rest_method_list(data: bytes) -> list[RestServiceEntry]:
    """Read a JSON REST method list (§5)."""
    document = _load_json(data)
    try:
        return [
            RestServiceEntry(
                ServiceId(
                    _client_from_json(item),
                    item["service_code"],
                    item.get("service_version"),
                ),
                item.get("service_type", SERVICE_TYPE_REST),
                tuple((e["method"], e["path"]) for e in item.get("endpoint_list", [])),
            )
            for item in document.get("service", [])
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise MetaserviceRequestError(f"malformed REST method list: {exc!r}") from exc


# -- getOpenAPI (§6) --------------------------------------------------------------


def parse_get_openapi_query(query: str | None) -> str:
    """The ``serviceCode`` parameter, its name matched case-insensitively.

    :raises MetaserviceRequestError: no non-empty ``serviceCode``.
    """
    for name, value in parse_qsl(query or "", keep_blank_values=True):
        if name.lower() == "servicecode" and value.strip():
            return value.strip()
    raise MetaserviceRequestError("getOpenAPI needs a serviceCode parameter")


def description_format(content_type: str | None, url: str) -> str:
    """``json`` or ``yaml``: by upstream Content-Type first, then URL suffix (§6)."""
    if content_type:
        if "application/json" in content_type.lower():
            return "json"
        if content_type.strip().lower() == "application/x-yaml":
            return "yaml"
    return "json" if urlsplit(url).path.endswith(".json") else "yaml"


def anonymize_openapi(data: bytes, fmt: str) -> bytes:
    """Replace top-level ``servers`` URLs by their path, in the same format (§6).

    URLs holding both ``{`` and ``}`` (templates) are left alone, as are
    path- and operation-level ``servers``.

    :raises DescriptionError: unreadable, or ``openapi`` is not ``3.*``.
    :raises UnsupportedDescriptionFormat: YAML without PyYAML installed.
    """
    document = _load_yaml(data) if fmt == "yaml" else _load_description_json(data)
    if not isinstance(document, dict):
        raise DescriptionError("OpenAPI description is not a mapping")
    version = document.get("openapi")
    if version is not None and not str(version).startswith("3."):
        raise DescriptionError(f"not an OpenAPI 3 description: {version!r}")

    for server in document.get("servers") or []:
        url = server.get("url") if isinstance(server, dict) else None
        if isinstance(url, str) and not ("{" in url and "}" in url):
            server["url"] = urlsplit(url).path

    if fmt == "yaml":
        return _dump_yaml(document)
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")


def _load_description_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise DescriptionError(f"OpenAPI description is not JSON: {exc}") from exc


def _yaml_module() -> Any:
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise UnsupportedDescriptionFormat(
            "YAML OpenAPI descriptions are not supported: PyYAML is not installed"
        ) from None
    return yaml


def _load_yaml(data: bytes) -> Any:
    yaml = _yaml_module()
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise DescriptionError(f"OpenAPI description is not YAML: {exc}") from exc


def _dump_yaml(document: Any) -> bytes:
    yaml = _yaml_module()
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8")


# -- shared helpers ----------------------------------------------------------------


def _load_json(data: bytes) -> Any:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise MetaserviceRequestError(f"malformed JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MetaserviceRequestError("JSON document is not an object")
    return document


def _request_wrapper(request_raw: bytes) -> tuple[etree._Element, etree._Element]:
    """Parse a request envelope; return it and its single body element."""
    envelope = parse_xml(request_raw)
    body = envelope.find(_BODY)
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if len(children) != 1:
        raise MetaserviceRequestError("metaservice request needs one body element")
    return envelope, children[0]


def _replace_body(envelope: etree._Element, answer: etree._Element) -> None:
    body = envelope.find(_BODY)
    assert body is not None
    for child in list(body):
        body.remove(child)
    body.text = None
    body.append(answer)


def _serialise(envelope: etree._Element) -> bytes:
    text: bytes = etree.tostring(envelope, encoding="UTF-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text


__all__ = [
    "ALLOWED_METHODS",
    "GET_OPENAPI",
    "GET_WSDL",
    "HIDDEN_ENDPOINT",
    "LIST_CLIENTS",
    "LIST_METHODS",
    "REST_METASERVICES",
    "RESERVED_SERVICE_CODES",
    "SOAP_METASERVICES",
    "ClientListEntry",
    "DescriptionError",
    "MetaserviceRequestError",
    "RestServiceEntry",
    "UnsupportedDescriptionFormat",
    "anonymize_openapi",
    "build_client_list_json",
    "build_client_list_xml",
    "build_get_wsdl_request",
    "build_get_wsdl_response",
    "build_method_list_request",
    "build_method_list_response",
    "build_rest_method_list",
    "description_format",
    "entries_from_members",
    "parse_client_list_json",
    "parse_client_list_xml",
    "parse_get_openapi_query",
    "parse_get_wsdl_request",
    "parse_legacy_wsdl_query",
    "parse_method_list_response",
    "parse_rest_method_list",
    "rewrite_wsdl_addresses",
    "wants_json",
    "wsdl_attachment",
]
