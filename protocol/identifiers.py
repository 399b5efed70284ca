"""Core: X-Road identifiers as frozen value types (identifiers.md).

Three wire forms exist for each identifier: XML (``id:`` children with a
qualified ``id:objectType``), the human string (``SUBSYSTEM:INST/GOV/1/SUB``),
and the REST form (percent-encoded components joined by ``/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote_to_bytes

from lxml import etree

from .errors import DuplicateHeaderField, InvalidRequest, InvalidXml

ID_NS = "http://x-road.eu/xsd/identifiers"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
OBJECT_TYPE = f"{{{ID_NS}}}objectType"

# identifiers.md §6: the strict set, enforced where identifiers are created.
_STRICT = re.compile(r"^[A-Za-z0-9'()+,\-.=?]+$")
# identifiers.md §5.1: characters allowed raw in a REST component.
_REST_RAW = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%]*$")
_REST_SAFE = "-._~!$&'()*+,;=:@"


class ObjectType(StrEnum):
    MEMBER = "MEMBER"
    SUBSYSTEM = "SUBSYSTEM"
    SERVICE = "SERVICE"
    SERVER = "SERVER"
    GLOBALGROUP = "GLOBALGROUP"
    LOCALGROUP = "LOCALGROUP"


def _require(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise InvalidXml(f"identifier component {name} is missing or empty")
    return value


def check_strict(value: str, what: str = "identifier") -> None:
    """Refuse a component outside the strict character set (identifiers.md §6)."""
    if not _STRICT.match(value):
        raise InvalidRequest(
            f"{what} {value!r} contains characters outside A-Z a-z 0-9 '()+,-.=?"
        )


@dataclass(frozen=True, slots=True)
class ClientId:
    """A member, or a subsystem when ``subsystem_code`` is set."""

    instance: str
    member_class: str
    member_code: str
    subsystem_code: str | None = None

    def __post_init__(self) -> None:
        _require(self.instance, "xRoadInstance")
        _require(self.member_class, "memberClass")
        _require(self.member_code, "memberCode")
        if self.subsystem_code is not None:
            _require(self.subsystem_code, "subsystemCode")

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.SUBSYSTEM if self.subsystem_code else ObjectType.MEMBER

    @property
    def member(self) -> ClientId:
        """The owning member (a member is its own owner)."""
        return ClientId(self.instance, self.member_class, self.member_code)

    def parts(self) -> tuple[str, ...]:
        base = (self.instance, self.member_class, self.member_code)
        return base + ((self.subsystem_code,) if self.subsystem_code else ())

    def __str__(self) -> str:
        return f"{self.object_type.value}:{'/'.join(self.parts())}"

    def slash(self) -> str:
        """REST form: ``INST/CLASS/CODE[/SUB]`` with each part percent-encoded."""
        return "/".join(encode_component(p) for p in self.parts())

    @classmethod
    def parse_slash(cls, text: str) -> ClientId:
        parts = split_encoded(text)
        if len(parts) not in (3, 4):
            raise InvalidRequest(f"client identifier must have 3 or 4 parts: {text!r}")
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class ServiceId:
    provider: ClientId
    service_code: str
    service_version: str | None = None

    def __post_init__(self) -> None:
        _require(self.service_code, "serviceCode")
        if self.service_version is not None:
            _require(self.service_version, "serviceVersion")

    def parts(self) -> tuple[str, ...]:
        version = (self.service_version,) if self.service_version else ()
        return self.provider.parts() + (self.service_code,) + version

    def __str__(self) -> str:
        return f"SERVICE:{'/'.join(self.parts())}"

    def slash(self) -> str:
        """REST form (five parts, no version): ``INST/CLASS/CODE/SUB/SERVICE``."""
        return "/".join(
            encode_component(p) for p in self.provider.parts() + (self.service_code,)
        )

    @classmethod
    def parse_slash(cls, text: str) -> ServiceId:
        """Parse the five-part REST form (identifiers.md §5.2)."""
        parts = split_encoded(text)
        if len(parts) != 5:
            raise InvalidRequest(f"service identifier must have 5 parts: {text!r}")
        return cls(ClientId(*parts[:4]), parts[4])


@dataclass(frozen=True, slots=True)
class SecurityServerId:
    owner: ClientId
    server_code: str

    def __post_init__(self) -> None:
        _require(self.server_code, "serverCode")

    def parts(self) -> tuple[str, ...]:
        return self.owner.member.parts() + (self.server_code,)

    def __str__(self) -> str:
        return f"SERVER:{'/'.join(self.parts())}"

    def slash(self) -> str:
        return "/".join(encode_component(p) for p in self.parts())

    @classmethod
    def parse_slash(cls, text: str) -> SecurityServerId:
        parts = split_encoded(text)
        if len(parts) != 4:
            raise InvalidRequest(
                f"security server identifier must have 4 parts: {text!r}"
            )
        return cls(ClientId(*parts[:3]), parts[3])


@dataclass(frozen=True, slots=True)
class GlobalGroupId:
    instance: str
    group_code: str

    def __str__(self) -> str:
        return f"GLOBALGROUP:{self.instance}/{self.group_code}"


@dataclass(frozen=True, slots=True)
class LocalGroupId:
    group_code: str

    def __str__(self) -> str:
        return f"LOCALGROUP:{self.group_code}"


# -- REST form ---------------------------------------------------------------


def encode_component(value: str) -> str:
    """Percent-encode one component as X-Road emits it (upper-case hex)."""
    return quote(value, safe=_REST_SAFE)


def decode_component(value: str) -> str:
    """Decode one percent-encoded component; ``+`` stays a plus."""
    if not _REST_RAW.match(value):
        raise InvalidRequest(
            f"identifier component has characters that must be encoded: {value!r}"
        )
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise InvalidRequest(f"incomplete percent-encoding in {value!r}")
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"identifier component is not UTF-8: {value!r}") from exc


def split_encoded(text: str) -> list[str]:
    return [decode_component(p) for p in text.split("/")]


# -- XML form ----------------------------------------------------------------

_FIELDS = (
    "xRoadInstance",
    "memberClass",
    "memberCode",
    "subsystemCode",
    "groupCode",
    "serviceCode",
    "serviceVersion",
    "serverCode",
)


def _components(element: etree._Element) -> dict[str, str]:
    found: dict[str, str] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace != ID_NS or qname.localname not in _FIELDS:
            continue  # the reference ignores unknown children
        if qname.localname in found:
            raise DuplicateHeaderField(f"duplicate identifier field {qname.localname}")
        # Values are taken verbatim, never trimmed (identifiers.md §3).
        found[qname.localname] = child.text or ""
    return found


def _object_type(element: etree._Element, allowed: set[ObjectType]) -> ObjectType:
    raw = element.get(OBJECT_TYPE)
    try:
        object_type = ObjectType(raw)
    except ValueError:
        raise InvalidXml(f"missing or unknown objectType {raw!r}") from None
    if object_type not in allowed:
        raise InvalidXml(f"unexpected objectType {raw!r}")
    return object_type


def _client_from(f: dict[str, str]) -> ClientId:
    return ClientId(
        _require(f.get("xRoadInstance"), "xRoadInstance"),
        _require(f.get("memberClass"), "memberClass"),
        _require(f.get("memberCode"), "memberCode"),
        _require(f["subsystemCode"], "subsystemCode") if "subsystemCode" in f else None,
    )


def client_from_xml(element: etree._Element) -> ClientId:
    _object_type(element, {ObjectType.MEMBER, ObjectType.SUBSYSTEM})
    return _client_from(_components(element))


def service_from_xml(element: etree._Element) -> ServiceId:
    _object_type(element, {ObjectType.SERVICE})
    fields = _components(element)
    version = fields.get("serviceVersion")
    return ServiceId(
        _client_from(fields),
        _require(fields.get("serviceCode"), "serviceCode"),
        _require(version, "serviceVersion") if version is not None else None,
    )


def server_from_xml(element: etree._Element) -> SecurityServerId:
    _object_type(element, {ObjectType.SERVER})
    fields = _components(element)
    owner = ClientId(
        _require(fields.get("xRoadInstance"), "xRoadInstance"),
        _require(fields.get("memberClass"), "memberClass"),
        _require(fields.get("memberCode"), "memberCode"),
    )
    return SecurityServerId(owner, _require(fields.get("serverCode"), "serverCode"))


def _append(parent: etree._Element, name: str, value: str) -> None:
    etree.SubElement(parent, f"{{{ID_NS}}}{name}").text = value


def to_xml(
    ident: ClientId | ServiceId | SecurityServerId | GlobalGroupId,
    tag: str,
    nsmap: dict[str | None, str] | None = None,
) -> etree._Element:
    """Build ``<tag id:objectType=...>`` with components in schema order."""
    element = etree.Element(tag, nsmap=nsmap or {"id": ID_NS})
    if isinstance(ident, ClientId):
        element.set(OBJECT_TYPE, ident.object_type.value)
        _client_children(element, ident)
    elif isinstance(ident, ServiceId):
        element.set(OBJECT_TYPE, ObjectType.SERVICE.value)
        _client_children(element, ident.provider)
        _append(element, "serviceCode", ident.service_code)
        if ident.service_version:
            _append(element, "serviceVersion", ident.service_version)
    elif isinstance(ident, SecurityServerId):
        element.set(OBJECT_TYPE, ObjectType.SERVER.value)
        _client_children(element, ident.owner.member)
        _append(element, "serverCode", ident.server_code)
    else:
        element.set(OBJECT_TYPE, ObjectType.GLOBALGROUP.value)
        _append(element, "xRoadInstance", ident.instance)
        _append(element, "groupCode", ident.group_code)
    return element


def _client_children(element: etree._Element, client: ClientId) -> None:
    _append(element, "xRoadInstance", client.instance)
    _append(element, "memberClass", client.member_class)
    _append(element, "memberCode", client.member_code)
    if client.subsystem_code:
        _append(element, "subsystemCode", client.subsystem_code)
