"""Core: read service descriptions (WSDL 1.1, OpenAPI 3.0/3.1) into services.

A WSDL yields one SOAP service per SOAP 1.1 binding operation: the code is
``binding/operation/@name`` and the version ``binding/operation/xrd:version``
(soap-message.md §12). An OpenAPI document yields the endpoints of one REST
service: an HTTP method plus a path glob, ``{param}`` becoming ``*``
(rest-message.md §7, metaservices.md §5). Codes and versions must use the
strict character set, since this is where identifiers are created
(identifiers.md §6).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from lxml import etree

from .errors import XRoadError
from .identifiers import XROAD_NS, check_strict
from .xml import parse_xml

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL2_NS = "http://www.w3.org/ns/wsdl"
SOAP11_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

MAX_OPERATIONS = 1000
MAX_ENDPOINTS = 2000
# Nesting of JSON objects; Python's own recursion limit is far above this.
MAX_JSON_DEPTH = 64

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_OPENAPI_VERSION = re.compile(r"^3\.[01]\.\d+$")
_TEMPLATE = re.compile(r"\{[^{}/]+\}")
# A template path is printable ASCII without query, fragment or backslash.
_PATH_CHARS = re.compile(r"^/[!$&'()*+,\-./0-9:;=@A-Z_a-z~%{}]*$")


# -- errors --------------------------------------------------------------------


class ServiceDescriptionError(XRoadError, ValueError):
    """A service description cannot be turned into services."""

    code: ClassVar[str] = "InvalidServiceDescription"


class InvalidWsdl(ServiceDescriptionError):
    code = "InvalidWsdl"


class UnsupportedWsdl(ServiceDescriptionError):
    code = "UnsupportedWsdl"  # RPC style, encoded use, WSDL 2.0


class InvalidOpenApi(ServiceDescriptionError):
    code = "InvalidOpenApi"


class UnsupportedOpenApi(ServiceDescriptionError):
    code = "UnsupportedOpenApiVersion"  # Swagger 2.0, OpenAPI 3.2+ and others


class UnsupportedDescriptionFormat(ServiceDescriptionError):
    code = "UnsupportedDescriptionFormat"  # YAML without PyYAML installed


class DuplicateService(ServiceDescriptionError):
    code = "DuplicateService"


class InvalidServiceIdentifier(ServiceDescriptionError):
    code = "InvalidServiceIdentifier"


class DescriptionTooLarge(ServiceDescriptionError):
    code = "ServiceDescriptionTooLarge"


class UnsupportedDescriptionSource(ServiceDescriptionError):
    code = "UnsupportedDescriptionSource"  # a URL scheme other than http(s)/file


# -- WSDL ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WsdlOperation:
    """One SOAP service described by a WSDL binding operation.

    ``address`` is the ``soap:address`` of a port using the binding, if any.
    """

    service_code: str
    version: str | None
    title: str | None = None
    address: str | None = None


def parse_wsdl(data: bytes) -> list[WsdlOperation]:
    """Read the SOAP 1.1 document/literal operations of a WSDL 1.1 document.

    :raises InvalidXml: not well-formed, or has a DOCTYPE or entities.
    :raises UnsupportedWsdl: WSDL 2.0, or an RPC-style or encoded binding.
    :raises InvalidWsdl: no SOAP 1.1 operation, or an operation without name.
    :raises DuplicateService: two operations with the same code and version.
    :raises InvalidServiceIdentifier: a code or version with forbidden characters.
    """
    root = parse_xml(data)
    if root.tag == f"{{{WSDL2_NS}}}description":
        raise UnsupportedWsdl("WSDL 2.0 is not supported; expected WSDL 1.1")
    if root.tag != f"{{{WSDL_NS}}}definitions":
        raise InvalidWsdl(f"expected a wsdl:definitions document, got {root.tag!r}")

    titles = _port_type_titles(root)
    addresses = _binding_addresses(root)
    operations: list[WsdlOperation] = []
    seen: set[tuple[str, str | None]] = set()
    for binding in root.iterfind(f"{{{WSDL_NS}}}binding"):
        soap_binding = binding.find(f"{{{SOAP11_BINDING_NS}}}binding")
        if soap_binding is None:
            continue  # SOAP 1.2 or HTTP bindings describe no X-Road service
        name = binding.get("name", "")
        port_type = _local_name(binding.get("type", ""))
        default_style = soap_binding.get("style", "document")
        for element in binding.iterfind(f"{{{WSDL_NS}}}operation"):
            operation = _wsdl_operation(
                element,
                default_style,
                titles.get(port_type, {}),
                addresses.get(name),
            )
            key = (operation.service_code, operation.version)
            if key in seen:
                raise DuplicateService(
                    f"operation {operation.service_code!r} version "
                    f"{operation.version!r} is described twice"
                )
            seen.add(key)
            operations.append(operation)
            if len(operations) > MAX_OPERATIONS:
                raise InvalidWsdl(f"more than {MAX_OPERATIONS} operations")

    if not operations:
        raise InvalidWsdl("the WSDL describes no SOAP 1.1 binding operation")
    return operations


def _wsdl_operation(
    element: etree._Element,
    default_style: str,
    titles: dict[str, str],
    address: str | None,
) -> WsdlOperation:
    service_code = (element.get("name") or "").strip()
    if not service_code:
        raise InvalidWsdl("a binding operation has no name")
    check_identifier(service_code, "service code")
    _check_document_literal(element, service_code, default_style)

    version = (element.findtext(f"{{{XROAD_NS}}}version") or "").strip() or None
    if version is not None:
        check_identifier(version, "service version")
    return WsdlOperation(service_code, version, titles.get(service_code), address)


def _check_document_literal(
    element: etree._Element, service_code: str, default_style: str
) -> None:
    """Refuse what X-Road cannot carry: RPC style and encoded use (§12)."""
    soap_operation = element.find(f"{{{SOAP11_BINDING_NS}}}operation")
    style = default_style
    if soap_operation is not None:
        style = soap_operation.get("style", default_style)
    if style != "document":
        raise UnsupportedWsdl(
            f"operation {service_code!r} has style {style!r}; only document is "
            "supported"
        )

    for message in ("input", "output", "fault"):
        for part in element.iterfind(f"{{{WSDL_NS}}}{message}"):
            for soap_element in part:
                if not isinstance(soap_element.tag, str):
                    continue
                if etree.QName(soap_element).namespace != SOAP11_BINDING_NS:
                    continue
                use = soap_element.get("use", "literal")
                if use != "literal":
                    raise UnsupportedWsdl(
                        f"operation {service_code!r} has {message} use {use!r}; "
                        "only literal is supported"
                    )


def _port_type_titles(root: etree._Element) -> dict[str, dict[str, str]]:
    """Map port type name -> operation name -> xrd:title (English first)."""
    result: dict[str, dict[str, str]] = {}
    for port_type in root.iterfind(f"{{{WSDL_NS}}}portType"):
        titles: dict[str, str] = {}
        for operation in port_type.iterfind(f"{{{WSDL_NS}}}operation"):
            candidates = operation.findall(
                f"{{{WSDL_NS}}}documentation/{{{XROAD_NS}}}title"
            )
            title = _pick_title(candidates)
            if title:
                titles[operation.get("name", "")] = title
        result[port_type.get("name", "")] = titles
    return result


def _pick_title(candidates: list[etree._Element]) -> str | None:
    # xml:lang defaults to "en" (soap-message.md §12).
    english = [t for t in candidates if t.get(XML_LANG, "en") == "en"]
    for title in english or candidates:
        text = " ".join((title.text or "").split())
        if text:
            return text
    return None


def _binding_addresses(root: etree._Element) -> dict[str, str]:
    """Map binding name -> the first soap:address location of a port using it."""
    result: dict[str, str] = {}
    for port in root.iterfind(f"{{{WSDL_NS}}}service/{{{WSDL_NS}}}port"):
        address = port.find(f"{{{SOAP11_BINDING_NS}}}address")
        location = (
            (address.get("location") or "").strip() if address is not None else ""
        )
        if location:
            result.setdefault(_local_name(port.get("binding", "")), location)
    return result


def _local_name(qname: str) -> str:
    return qname.rpartition(":")[2]


# -- OpenAPI -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenApiEndpoint:
    """An HTTP method (upper case) and a path glob (rest-message.md §7)."""

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class OpenApiDescription:
    version: str
    endpoints: tuple[OpenApiEndpoint, ...]
    title: str | None = None


def parse_openapi(data: bytes, content_type_or_name: str = "") -> OpenApiDescription:
    """Read the endpoints of an OpenAPI 3.0.x or 3.1.x document.

    The format follows ``content_type_or_name`` (a media type or a file name);
    when that says neither JSON nor YAML, a document starting with ``{`` is
    JSON and anything else YAML (metaservices.md §6 defaults to YAML).

    :raises UnsupportedDescriptionFormat: YAML, and PyYAML is not installed.
    :raises UnsupportedOpenApi: Swagger 2.0, or an OpenAPI version other than 3.0/3.1.
    :raises InvalidOpenApi: malformed document, paths or operations.
    """
    document = _load_document(data, content_type_or_name)
    if not isinstance(document, dict):
        raise InvalidOpenApi("an OpenAPI document must be an object")
    if "swagger" in document:
        raise UnsupportedOpenApi(
            f"Swagger {document['swagger']!r} is not supported; expected OpenAPI 3"
        )
    version = document.get("openapi")
    if not isinstance(version, str):
        raise InvalidOpenApi("the document has no 'openapi' version field")
    if not _OPENAPI_VERSION.match(version):
        raise UnsupportedOpenApi(
            f"OpenAPI version {version!r} is not supported; expected 3.0.x or 3.1.x"
        )

    paths = document.get("paths")
    if paths is None and version.startswith("3.1."):
        paths = {}  # 3.1 allows a document of only webhooks or components
    if not isinstance(paths, dict):
        raise InvalidOpenApi("'paths' must be an object")
    endpoints = _endpoints(document, paths)
    info = document.get("info")
    title = info.get("title") if isinstance(info, dict) else None
    return OpenApiDescription(
        version, tuple(endpoints), title if isinstance(title, str) else None
    )


def _endpoints(
    document: dict[str, Any], paths: dict[str, Any]
) -> list[OpenApiEndpoint]:
    endpoints: list[OpenApiEndpoint] = []
    for template, item in paths.items():
        if template.startswith("x-"):
            continue  # a specification extension, not a path
        glob = path_glob(template)
        item = _resolve_path_item(document, template, item)
        for method in HTTP_METHODS:
            if method not in item:
                continue
            if not isinstance(item[method], dict):
                raise InvalidOpenApi(f"{method} {template!r} must be an object")
            endpoint = OpenApiEndpoint(method.upper(), glob)
            if endpoint not in endpoints:
                endpoints.append(endpoint)
        if len(endpoints) > MAX_ENDPOINTS:
            raise InvalidOpenApi(f"more than {MAX_ENDPOINTS} endpoints")
    return endpoints


def _resolve_path_item(
    document: dict[str, Any], template: str, item: object
) -> dict[str, Any]:
    """Follow one local ``$ref`` (``#/components/pathItems/...`` in 3.1)."""
    if not isinstance(item, dict):
        raise InvalidOpenApi(f"path item {template!r} must be an object")
    ref = item.get("$ref")
    if ref is None:
        return item
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise UnsupportedDescriptionFormat(
            f"path item {template!r} refers to {ref!r}; only local references "
            "are supported"
        )
    target: object = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or token not in target:
            raise InvalidOpenApi(f"path item {template!r}: unresolved {ref!r}")
        target = target[token]
    if not isinstance(target, dict) or "$ref" in target:
        raise InvalidOpenApi(f"path item {template!r}: {ref!r} is not a path item")
    return target


def path_glob(template: str) -> str:
    """Turn an OpenAPI path template into an endpoint glob.

    Each ``{param}`` matches one segment (``*``); a literal star is escaped so
    it only matches itself (rest-message.md §7).

    :raises InvalidOpenApi: not an absolute path, or malformed braces.
    """
    if not isinstance(template, str) or not _PATH_CHARS.match(template):
        raise InvalidOpenApi(
            f"path {template!r} must start with '/' and hold no query, fragment, "
            "space or backslash"
        )
    pieces = _TEMPLATE.split(template)
    if any("{" in piece or "}" in piece for piece in pieces):
        raise InvalidOpenApi(f"path {template!r} has unbalanced or nested braces")
    return "*".join(piece.replace("*", "\\*") for piece in pieces)


def check_identifier(value: str, what: str) -> None:
    """Refuse a service code or version outside the strict set (identifiers.md §6).

    :raises InvalidServiceIdentifier: a forbidden character is present.
    """
    try:
        check_strict(value, what)
    except XRoadError as err:
        raise InvalidServiceIdentifier(err.message) from err


def _load_document(data: bytes, content_type_or_name: str) -> object:
    hint = content_type_or_name.lower().split(";")[0].strip()
    if "json" in hint:
        return _load_json(data)
    if "yaml" in hint or hint.endswith(".yml"):
        return _load_yaml(data)
    if data.lstrip().startswith(b"{"):
        return _load_json(data)
    return _load_yaml(data)


def _load_json(data: bytes) -> object:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidOpenApi("the JSON document is not UTF-8") from exc
    if _json_depth_exceeds(text):
        raise InvalidOpenApi(f"JSON nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ServiceDescriptionError):
            raise
        raise InvalidOpenApi(f"malformed JSON: {exc}") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidOpenApi(f"duplicate key {key!r} in the JSON document")
        result[key] = value
    return result


def _json_depth_exceeds(text: str) -> bool:
    """Cheap bracket count outside strings, done before json.loads recurses."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _load_yaml(data: bytes) -> object:
    try:
        import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise UnsupportedDescriptionFormat(
            "YAML is not supported (PyYAML is not installed); provide JSON"
        ) from None
    try:
        # safe_load builds plain types only. Aliases share one object rather
        # than copying it, and only the paths level is walked afterwards.
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise InvalidOpenApi(f"malformed YAML: {exc}") from exc
