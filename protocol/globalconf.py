"""Core: global configuration parts and one verified snapshot of them.

Follows global-configuration.md §6-§9 (private and shared parameters, schema
versions 2 to 6 on input, version 6 on output) and certificates-ocsp.md §1
and §7 (how CAs, TSAs and authentication-certificate hashes are looked up).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from .anchor import (
    ConfigurationAnchor,
    anchor_from_element,
    anchor_to_element,
    check_root,
    child,
    children,
    decode_cert,
    encode_cert,
    opt_text,
    req_text,
    sub,
)
from .digests import b64, unb64
from .errors import GlobalConfError, OutdatedGlobalConf, XRoadError
from .identifiers import (
    ID_NS,
    XROAD_NS,
    ClientId,
    SecurityServerId,
    client_from_xml,
    to_xml,
)
from .xml import parse_xml

DEFAULT_OCSP_FRESHNESS = 3600
DEFAULT_TIMESTAMPING_INTERVAL = 60


class MalformedGlobalConf(GlobalConfError):
    """A configuration part does not follow its schema."""

    code = "MalformedGlobalConf"


# -- model -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OCSPInfo:
    url: str
    cert: x509.Certificate | None
    cost_type: str | None = None  # v6: FREE, PAID or UNDEFINED


@dataclass(frozen=True, slots=True)
class ApprovedCA:
    """One approved CA: a top CA, its intermediates and their OCSP responders.

    ``ocsp`` belongs to the top CA; ``intermediate_ocsp`` runs parallel to
    ``intermediates`` (empty means none listed for any intermediate).
    """

    name: str
    top_ca: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    ocsp: tuple[OCSPInfo, ...]
    profile: str
    authentication_only: bool = False
    intermediate_ocsp: tuple[tuple[OCSPInfo, ...], ...] = ()
    default_csr_format: str | None = None  # v6: PEM or DER

    @property
    def certs(self) -> tuple[x509.Certificate, ...]:
        return (self.top_ca,) + self.intermediates

    def all_ocsp(self) -> tuple[OCSPInfo, ...]:
        return self.ocsp + tuple(i for per in self.intermediate_ocsp for i in per)

    def ocsp_for(self, ca_cert: x509.Certificate) -> tuple[OCSPInfo, ...]:
        """Responders listed for one of this CA's certificates."""
        if ca_cert == self.top_ca:
            return self.ocsp
        for index, cert in enumerate(self.intermediates):
            if cert == ca_cert and index < len(self.intermediate_ocsp):
                return self.intermediate_ocsp[index]
        return ()


@dataclass(frozen=True, slots=True)
class ApprovedTSA:
    name: str
    url: str
    cert: x509.Certificate
    cost_type: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    id: ClientId
    name: str
    subsystems: tuple[str, ...] = ()  # subsystem codes


@dataclass(frozen=True, slots=True)
class SecurityServer:
    id: SecurityServerId
    address: str | None
    auth_cert_hashes: tuple[bytes, ...]  # raw SHA-256 (SHA-1 in conf version 2)
    clients: tuple[ClientId, ...]
    maintenance_message: str | None = None  # v5+: set when in maintenance mode
    in_maintenance: bool = False

    def serves(self, client: ClientId) -> bool:
        """True when ``client`` is the owner or one of the listed clients."""
        return client == self.id.owner.member or client in self.clients


@dataclass(frozen=True, slots=True)
class GlobalGroup:
    instance: str
    code: str
    description: str
    members: tuple[ClientId, ...]


@dataclass(frozen=True, slots=True)
class ConfSource:
    address: str
    internal_verification_certs: tuple[x509.Certificate, ...] = ()
    external_verification_certs: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True, slots=True)
class SharedParameters:
    instance: str
    sources: tuple[ConfSource, ...]
    approved_cas: tuple[ApprovedCA, ...]
    approved_tsas: tuple[ApprovedTSA, ...]
    members: tuple[Member, ...]
    security_servers: tuple[SecurityServer, ...]
    global_groups: tuple[GlobalGroup, ...]
    member_classes: tuple[tuple[str, str], ...]  # (code, description)
    ocsp_freshness_seconds: int = DEFAULT_OCSP_FRESHNESS


@dataclass(frozen=True, slots=True)
class ManagementService:
    auth_cert_reg_address: str
    auth_cert_reg_cert: x509.Certificate | None
    provider: ClientId


@dataclass(frozen=True, slots=True)
class PrivateParameters:
    instance: str
    anchors: tuple[ConfigurationAnchor, ...]
    management_service: ManagementService
    timestamping_interval_seconds: int = DEFAULT_TIMESTAMPING_INTERVAL


def auth_cert_hash(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate DER, as listed in ``securityServer/authCertHash``."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


# -- shared parameters: build ------------------------------------------------


def build_shared_params(p: SharedParameters) -> bytes:
    """Serialise shared parameters in schema v6 element order (§7)."""
    root = etree.Element(f"{{{XROAD_NS}}}conf", nsmap={"id": ID_NS, "tns": XROAD_NS})
    sub(root, "instanceIdentifier", p.instance)
    for source in p.sources:
        _build_source(root, source)
    for ca in p.approved_cas:
        _build_ca(root, ca)
    for tsa in p.approved_tsas:
        tsa_el = sub(root, "approvedTSA")
        sub(tsa_el, "name", tsa.name)
        sub(tsa_el, "url", tsa.url)
        sub(tsa_el, "cert", encode_cert(tsa.cert))
        if tsa.cost_type:
            sub(tsa_el, "costType", tsa.cost_type)

    classes = dict(p.member_classes)
    refs = _build_members(root, p.members, classes)
    for server in p.security_servers:
        _build_server(root, server, refs)
    for group in p.global_groups:
        group_el = sub(root, "globalGroup")
        sub(group_el, "groupCode", group.code)
        sub(group_el, "description", group.description)
        for member in group.members:
            group_el.append(to_xml(member, "groupMember", nsmap={}))

    settings = sub(root, "globalSettings")
    for code, description in p.member_classes:
        _build_member_class(settings, code, description)
    sub(settings, "ocspFreshnessSeconds", str(p.ocsp_freshness_seconds))
    return _serialise(root)


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _build_source(root: etree._Element, source: ConfSource) -> None:
    source_el = sub(root, "source")
    sub(source_el, "address", source.address)
    for cert in source.internal_verification_certs:
        sub(source_el, "internalVerificationCert", encode_cert(cert))
    for cert in source.external_verification_certs:
        sub(source_el, "externalVerificationCert", encode_cert(cert))


def _build_ca(root: etree._Element, ca: ApprovedCA) -> None:
    ca_el = sub(root, "approvedCA")
    sub(ca_el, "name", ca.name)
    sub(ca_el, "authenticationOnly", "true" if ca.authentication_only else "false")
    _build_ca_info(sub(ca_el, "topCA"), ca.top_ca, ca.ocsp)
    for index, cert in enumerate(ca.intermediates):
        per = ca.intermediate_ocsp[index] if index < len(ca.intermediate_ocsp) else ()
        _build_ca_info(sub(ca_el, "intermediateCA"), cert, per)
    sub(ca_el, "certificateProfileInfo", ca.profile)
    if ca.default_csr_format:
        sub(ca_el, "defaultCsrFormat", ca.default_csr_format)


def _build_ca_info(
    element: etree._Element, cert: x509.Certificate, ocsp: tuple[OCSPInfo, ...]
) -> None:
    sub(element, "cert", encode_cert(cert))
    for info in ocsp:
        ocsp_el = sub(element, "ocsp")
        sub(ocsp_el, "url", info.url)
        if info.cert is not None:
            sub(ocsp_el, "cert", encode_cert(info.cert))
        if info.cost_type:
            sub(ocsp_el, "costType", info.cost_type)


def _build_member_class(parent: etree._Element, code: str, description: str) -> None:
    class_el = sub(parent, "memberClass")
    sub(class_el, "code", code)
    sub(class_el, "description", description)


def _build_members(
    root: etree._Element, members: tuple[Member, ...], classes: dict[str, str]
) -> dict[ClientId, str]:
    """Write members with sequential ids; return the IDREF of every client."""
    refs: dict[ClientId, str] = {}
    for member in members:
        if member.id.subsystem_code is not None:
            raise MalformedGlobalConf(
                f"member {member.id} must not carry a subsystem code"
            )
        ref = f"id{len(refs)}"
        refs[member.id] = ref
        member_el = sub(root, "member")
        member_el.set("id", ref)
        _build_member_class(
            member_el, member.id.member_class, classes.get(member.id.member_class, "")
        )
        sub(member_el, "memberCode", member.id.member_code)
        sub(member_el, "name", member.name)
        for code in member.subsystems:
            subsystem = dataclasses.replace(member.id, subsystem_code=code)
            ref = f"id{len(refs)}"
            refs[subsystem] = ref
            subsystem_el = sub(member_el, "subsystem")
            subsystem_el.set("id", ref)
            sub(subsystem_el, "subsystemCode", code)
    return refs


def _build_server(
    root: etree._Element, server: SecurityServer, refs: dict[ClientId, str]
) -> None:
    owner = server.id.owner.member
    if owner not in refs:
        raise MalformedGlobalConf(
            f"owner {owner} of {server.id} is not a listed member"
        )
    server_el = sub(root, "securityServer")
    sub(server_el, "owner", refs[owner])
    sub(server_el, "serverCode", server.id.server_code)
    if server.address:
        sub(server_el, "address", server.address)
    for cert_hash in server.auth_cert_hashes:
        sub(server_el, "authCertHash", b64(cert_hash))
    for client in server.clients:
        if client not in refs:
            raise MalformedGlobalConf(
                f"client {client} of {server.id} is not a listed member"
            )
        sub(server_el, "client", refs[client])
    if server.in_maintenance or server.maintenance_message:
        maintenance = sub(server_el, "inMaintenanceMode")
        if server.maintenance_message:
            sub(maintenance, "message", server.maintenance_message)


# -- shared parameters: parse ------------------------------------------------


def parse_shared_params(data: bytes) -> SharedParameters:
    """Parse shared parameters of schema v2 to v6.

    :raises MalformedGlobalConf: not XML, wrong root, missing or bad content.
    """
    root = _parse_root(data, "shared parameters")
    try:
        return _shared_from(root)
    except MalformedGlobalConf:
        raise
    except XRoadError as exc:
        raise MalformedGlobalConf(f"invalid shared parameters: {exc}") from exc


def _parse_root(data: bytes, what: str) -> etree._Element:
    try:
        root = parse_xml(data)
        check_root(root, "conf")
    except XRoadError as exc:
        raise MalformedGlobalConf(f"invalid {what}: {exc}") from exc
    return root


def _shared_from(root: etree._Element) -> SharedParameters:
    instance = req_text(root, "instanceIdentifier")
    sources = tuple(_parse_source(el) for el in children(root, "source"))
    cas = tuple(_parse_ca(el) for el in children(root, "approvedCA"))
    tsas = tuple(
        ApprovedTSA(
            req_text(el, "name"),
            req_text(el, "url"),
            decode_cert(req_text(el, "cert"), "approvedTSA/cert"),
            opt_text(el, "costType"),
        )
        for el in children(root, "approvedTSA")
    )
    members, refs = _parse_members(root, instance)
    servers = tuple(_parse_server(el, refs) for el in children(root, "securityServer"))
    groups = tuple(_parse_group(el, instance) for el in children(root, "globalGroup"))

    settings = child(root, "globalSettings")
    classes: tuple[tuple[str, str], ...] = ()
    freshness = DEFAULT_OCSP_FRESHNESS
    if settings is not None:
        classes = tuple(
            (req_text(el, "code"), opt_text(el, "description") or "")
            for el in children(settings, "memberClass")
        )
        freshness = _int(opt_text(settings, "ocspFreshnessSeconds"), freshness)
    return SharedParameters(
        instance, sources, cas, tsas, members, servers, groups, classes, freshness
    )


def _int(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise MalformedGlobalConf(f"expected an integer, got {text!r}") from None


def _certs(parent: etree._Element, name: str) -> tuple[x509.Certificate, ...]:
    return tuple(decode_cert(el.text, name) for el in children(parent, name))


def _parse_source(element: etree._Element) -> ConfSource:
    return ConfSource(
        req_text(element, "address"),
        _certs(element, "internalVerificationCert"),
        _certs(element, "externalVerificationCert"),
    )


def _parse_ca(element: etree._Element) -> ApprovedCA:
    top = child(element, "topCA")
    if top is None:
        raise MalformedGlobalConf("approvedCA has no topCA")
    top_cert, top_ocsp = _parse_ca_info(top)
    intermediates = [_parse_ca_info(el) for el in children(element, "intermediateCA")]
    auth_only = opt_text(element, "authenticationOnly") in ("true", "1")
    per = tuple(ocsp for _, ocsp in intermediates)
    return ApprovedCA(
        req_text(element, "name"),
        top_cert,
        tuple(cert for cert, _ in intermediates),
        top_ocsp,
        opt_text(element, "certificateProfileInfo") or "",
        auth_only,
        per if any(per) else (),
        opt_text(element, "defaultCsrFormat"),
    )


def _parse_ca_info(
    element: etree._Element,
) -> tuple[x509.Certificate, tuple[OCSPInfo, ...]]:
    cert = decode_cert(req_text(element, "cert"), "CA cert")
    ocsp = []
    for ocsp_el in children(element, "ocsp"):
        cert_text = opt_text(ocsp_el, "cert")
        ocsp.append(
            OCSPInfo(
                req_text(ocsp_el, "url"),
                decode_cert(cert_text, "ocsp/cert") if cert_text else None,
                opt_text(ocsp_el, "costType"),
            )
        )
    return cert, tuple(ocsp)


def _parse_members(
    root: etree._Element, instance: str
) -> tuple[tuple[Member, ...], dict[str, ClientId]]:
    members = []
    refs: dict[str, ClientId] = {}
    for member_el in children(root, "member"):
        class_el = child(member_el, "memberClass")
        if class_el is None:
            raise MalformedGlobalConf("member has no memberClass")
        member_id = ClientId(
            instance, req_text(class_el, "code"), req_text(member_el, "memberCode")
        )
        _add_ref(refs, member_el, member_id)
        codes = []
        for subsystem_el in children(member_el, "subsystem"):
            code = req_text(subsystem_el, "subsystemCode")
            codes.append(code)
            _add_ref(
                refs, subsystem_el, dataclasses.replace(member_id, subsystem_code=code)
            )
        members.append(
            Member(member_id, opt_text(member_el, "name") or "", tuple(codes))
        )
    return tuple(members), refs


def _add_ref(
    refs: dict[str, ClientId], element: etree._Element, client: ClientId
) -> None:
    ref = element.get("id")
    if ref is None:
        return
    if ref in refs:
        raise MalformedGlobalConf(f"duplicate id attribute {ref!r}")
    refs[ref] = client


def _resolve(refs: dict[str, ClientId], ref: str, what: str) -> ClientId:
    try:
        return refs[ref]
    except KeyError:
        raise MalformedGlobalConf(f"{what} refers to unknown id {ref!r}") from None


def _parse_server(element: etree._Element, refs: dict[str, ClientId]) -> SecurityServer:
    owner = _resolve(refs, req_text(element, "owner"), "securityServer/owner")
    if owner.subsystem_code is not None:
        raise MalformedGlobalConf(f"security server owner {owner} is not a member")
    clients = tuple(
        _resolve(refs, (el.text or "").strip(), "securityServer/client")
        for el in children(element, "client")
    )
    hashes = tuple(unb64(el.text or "") for el in children(element, "authCertHash"))
    maintenance = child(element, "inMaintenanceMode")
    return SecurityServer(
        SecurityServerId(owner, req_text(element, "serverCode")),
        opt_text(element, "address"),
        hashes,
        clients,
        opt_text(maintenance, "message") if maintenance is not None else None,
        maintenance is not None,
    )


def _parse_group(element: etree._Element, instance: str) -> GlobalGroup:
    return GlobalGroup(
        instance,
        req_text(element, "groupCode"),
        opt_text(element, "description") or "",
        tuple(client_from_xml(el) for el in children(element, "groupMember")),
    )


# -- private parameters ------------------------------------------------------


def build_private_params(p: PrivateParameters) -> bytes:
    """Serialise private parameters (schema v3, §6)."""
    root = etree.Element(f"{{{XROAD_NS}}}conf", nsmap={"id": ID_NS, "tns": XROAD_NS})
    sub(root, "instanceIdentifier", p.instance)
    for anchor in p.anchors:
        anchor_to_element(anchor, sub(root, "configurationAnchor"))
    service = p.management_service
    service_el = sub(root, "managementService")
    sub(service_el, "authCertRegServiceAddress", service.auth_cert_reg_address)
    if service.auth_cert_reg_cert is not None:
        sub(
            service_el,
            "authCertRegServiceCert",
            encode_cert(service.auth_cert_reg_cert),
        )
    service_el.append(
        to_xml(service.provider, "managementRequestServiceProviderId", {})
    )
    sub(root, "timeStampingIntervalSeconds", str(p.timestamping_interval_seconds))
    return _serialise(root)


def parse_private_params(data: bytes) -> PrivateParameters:
    """Parse private parameters of schema v2 or v3.

    :raises MalformedGlobalConf: not XML, wrong root, missing or bad content.
    """
    root = _parse_root(data, "private parameters")
    try:
        service_el = child(root, "managementService")
        if service_el is None:
            raise MalformedGlobalConf("private parameters lack managementService")
        provider_el = child(service_el, "managementRequestServiceProviderId")
        if provider_el is None:
            raise MalformedGlobalConf("managementService lacks its provider id")
        cert_text = opt_text(service_el, "authCertRegServiceCert")
        service = ManagementService(
            req_text(service_el, "authCertRegServiceAddress"),
            decode_cert(cert_text, "authCertRegServiceCert") if cert_text else None,
            client_from_xml(provider_el),
        )
        anchors = tuple(
            anchor_from_element(el, lenient=True)
            for el in children(root, "configurationAnchor")
        )
        interval = _int(
            opt_text(root, "timeStampingIntervalSeconds"), DEFAULT_TIMESTAMPING_INTERVAL
        )
        return PrivateParameters(
            req_text(root, "instanceIdentifier"), anchors, service, interval
        )
    except MalformedGlobalConf:
        raise
    except XRoadError as exc:
        raise MalformedGlobalConf(f"invalid private parameters: {exc}") from exc


# -- the snapshot ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GlobalConf:
    """One verified configuration snapshot: own private params plus shared params.

    ``shared`` maps instance codes to their shared parameters (own instance and
    federation partners). ``expires_at`` is the own instance's expiry; None
    means it never expires. ``partner_expiry`` holds the other instances'.
    """

    own_instance: str
    private: PrivateParameters | None
    shared: dict[str, SharedParameters]
    expires_at: datetime | None
    partner_expiry: dict[str, datetime | None] = field(default_factory=dict)

    def check_valid(self, now: datetime) -> None:
        """Raise :class:`OutdatedGlobalConf` when ``now`` is past the expiry (§9)."""
        if self.expires_at is not None and now > self.expires_at:
            raise OutdatedGlobalConf(
                f"global configuration expired at {self.expires_at.isoformat()}"
            )

    def without_expired_partners(self, now: datetime) -> GlobalConf:
        """Drop partner instances past their expiry, as §9 requires."""
        expired = {
            inst
            for inst, when in self.partner_expiry.items()
            if when is not None and now > when and inst != self.own_instance
        }
        if not expired:
            return self
        shared = {k: v for k, v in self.shared.items() if k not in expired}
        expiry = {k: v for k, v in self.partner_expiry.items() if k not in expired}
        return GlobalConf(
            self.own_instance, self.private, shared, self.expires_at, expiry
        )

    # -- members and servers

    def _instances(self, instance: str | None) -> Iterator[SharedParameters]:
        if instance is None:
            yield from self.shared.values()
        elif instance in self.shared:
            yield self.shared[instance]

    def member(self, client: ClientId) -> Member | None:
        for member in self.members(client.instance):
            if member.id == client.member:
                if (
                    client.subsystem_code is None
                    or client.subsystem_code in member.subsystems
                ):
                    return member
        return None

    def members(self, instance: str | None = None) -> list[Member]:
        return [m for p in self._instances(instance) for m in p.members]

    def servers_hosting(self, client: ClientId) -> list[SecurityServer]:
        """Servers of the client's instance where it is the owner or a client."""
        return [
            s
            for p in self._instances(client.instance)
            for s in p.security_servers
            if s.serves(client)
        ]

    def known_addresses(self, instance: str | None = None) -> set[str]:
        """Addresses of all security servers that publish one."""
        return {
            s.address
            for p in self._instances(instance)
            for s in p.security_servers
            if s.address
        }

    def server(self, server_id: SecurityServerId) -> SecurityServer | None:
        for params in self._instances(server_id.owner.instance):
            for server in params.security_servers:
                if server.id == server_id:
                    return server
        return None

    def server_for_auth_cert(self, cert: x509.Certificate) -> SecurityServer | None:
        """The server whose ``authCertHash`` list holds this certificate."""
        der = cert.public_bytes(serialization.Encoding.DER)
        by_length = {32: hashlib.sha256(der).digest(), 20: hashlib.sha1(der).digest()}
        for params in self.shared.values():
            for server in params.security_servers:
                for value in server.auth_cert_hashes:
                    if by_length.get(len(value)) == value:
                        return server
        return None

    def is_client_of(self, server_id: SecurityServerId, client: ClientId) -> bool:
        server = self.server(server_id)
        return server is not None and server.serves(client)

    def global_group_members(self, instance: str, code: str) -> tuple[ClientId, ...]:
        for params in self._instances(instance):
            for group in params.global_groups:
                if group.code == code:
                    return group.members
        return ()

    def global_groups(self, instance: str | None = None) -> list[GlobalGroup]:
        return [g for p in self._instances(instance) for g in p.global_groups]

    # -- PKI

    def approved_cas(self, instance: str | None = None) -> list[ApprovedCA]:
        return [ca for p in self._instances(instance) for ca in p.approved_cas]

    def ca_certs(self, instance: str | None = None) -> list[x509.Certificate]:
        """Every top and intermediate CA certificate (all instances for None)."""
        return [c for ca in self.approved_cas(instance) for c in ca.certs]

    def approved_ca_for(
        self, cert: x509.Certificate, instance: str | None = None
    ) -> ApprovedCA | None:
        """The approved CA with a certificate whose subject is ``cert``'s issuer."""
        for ca in self.approved_cas(instance):
            if any(ca_cert.subject == cert.issuer for ca_cert in ca.certs):
                return ca
        return None

    def issuer_cert(
        self, cert: x509.Certificate, instance: str | None = None
    ) -> x509.Certificate | None:
        """The CA certificate whose subject DN equals ``cert``'s issuer DN."""
        for ca_cert in self.ca_certs(instance):
            if ca_cert.subject == cert.issuer:
                return ca_cert
        return None

    def ocsp_responder_certs(
        self, instance: str | None = None
    ) -> list[x509.Certificate]:
        return [
            info.cert
            for ca in self.approved_cas(instance)
            for info in ca.all_ocsp()
            if info.cert is not None
        ]

    def approved_tsas(self, instance: str | None = None) -> list[ApprovedTSA]:
        """Approved TSAs of one instance, or of all instances for None."""
        return [t for p in self._instances(instance) for t in p.approved_tsas]

    @property
    def ocsp_freshness_seconds(self) -> int:
        own = self.shared.get(self.own_instance)
        return own.ocsp_freshness_seconds if own else DEFAULT_OCSP_FRESHNESS

    @property
    def timestamping_interval_seconds(self) -> int:
        if self.private is None:
            return DEFAULT_TIMESTAMPING_INTERVAL
        return self.private.timestamping_interval_seconds

    def internal_verification_certs(self) -> list[x509.Certificate]:
        """Own instance's internal-source signing certs (key rotation, §8 step 2)."""
        own = self.shared.get(self.own_instance)
        if own is None:
            return []
        return [c for s in own.sources for c in s.internal_verification_certs]
