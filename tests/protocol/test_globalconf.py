"""Tests for protocol.globalconf: parameters XML and the snapshot queries."""

from __future__ import annotations

import ast
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

import protocol.globalconf as globalconf_module
from protocol.anchor import AnchorSource, ConfigurationAnchor
from protocol.errors import OutdatedGlobalConf
from protocol.globalconf import (
    ApprovedCA,
    ApprovedTSA,
    ConfSource,
    GlobalConf,
    GlobalGroup,
    MalformedGlobalConf,
    ManagementService,
    Member,
    OCSPInfo,
    PrivateParameters,
    SecurityServer,
    SharedParameters,
    auth_cert_hash,
    build_private_params,
    build_shared_params,
    parse_private_params,
    parse_shared_params,
)
from protocol.identifiers import ClientId, SecurityServerId

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
DIRS = FIXTURES / "globalconf" / "dirs"
NOW = datetime(2025, 1, 4, 9, 0, tzinfo=UTC)


def _need_fixtures() -> None:
    if not DIRS.is_dir():
        pytest.skip("X-Road fixtures are not available")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (name, key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def pki() -> dict[str, x509.Certificate]:
    ca_key, int_key = _key(), _key()
    return {
        "ca": _cert("Root CA", ca_key),
        "int": _cert("Intermediate CA", int_key, ("Root CA", ca_key)),
        "leaf": _cert("leaf", _key(), ("Intermediate CA", int_key)),
        "stranger": _cert("stranger", _key()),
        "ocsp": _cert("OCSP", _key(), ("Root CA", ca_key)),
        "tsa": _cert("TSA", _key()),
        "auth": _cert("auth", _key(), ("Root CA", ca_key)),
        "conf": _cert("conf signer", _key()),
    }


GOV = ClientId("INST", "GOV", "1234")
TAXES = ClientId("INST", "GOV", "1234", "TAXES")
COM = ClientId("INST", "COM", "5678")
SS_A = SecurityServerId(GOV, "SS-A")


@pytest.fixture(scope="module")
def shared(pki: dict[str, x509.Certificate]) -> SharedParameters:
    return SharedParameters(
        instance="INST",
        sources=(ConfSource("cs1.inst.example", (pki["conf"],), ()),),
        approved_cas=(
            ApprovedCA(
                "Demo CA",
                pki["ca"],
                (pki["int"],),
                (OCSPInfo("http://ocsp.example", pki["ocsp"], "FREE"),),
                "demo-profile",
                intermediate_ocsp=((OCSPInfo("http://ocsp2.example", None),),),
                default_csr_format="PEM",
            ),
        ),
        approved_tsas=(
            ApprovedTSA("Demo TSA", "http://tsa.example", pki["tsa"], "PAID"),
        ),
        members=(Member(GOV, "Tax Office", ("TAXES",)), Member(COM, "Company")),
        security_servers=(
            SecurityServer(
                SS_A, "ss-a.example", (auth_cert_hash(pki["auth"]),), (TAXES, COM)
            ),
            SecurityServer(SecurityServerId(COM, "SS-B"), None, (), (), "down", True),
        ),
        global_groups=(GlobalGroup("INST", "owners", "Owners", (GOV, TAXES)),),
        member_classes=(("GOV", "Government"), ("COM", "Commercial")),
        ocsp_freshness_seconds=600,
    )


@pytest.fixture(scope="module")
def private(pki: dict[str, x509.Certificate]) -> PrivateParameters:
    anchor = ConfigurationAnchor(
        "PARTNER",
        None,
        (AnchorSource("http://cs.partner/externalconf", (pki["conf"],)),),
    )
    return PrivateParameters(
        "INST",
        (anchor,),
        ManagementService(
            "https://cs1.inst.example:4001/managementservice/", pki["tsa"], GOV
        ),
        timestamping_interval_seconds=90,
    )


@pytest.fixture(scope="module")
def conf(shared: SharedParameters, private: PrivateParameters) -> GlobalConf:
    return GlobalConf("INST", private, {"INST": shared}, NOW + timedelta(minutes=10))


# -- XML ----------------------------------------------------------------------


def test_shared_round_trip(shared: SharedParameters) -> None:
    assert parse_shared_params(build_shared_params(shared)) == shared


def test_shared_build_shape(
    shared: SharedParameters, pki: dict[str, x509.Certificate]
) -> None:
    root = etree.fromstring(build_shared_params(shared))

    assert root.tag == "{http://x-road.eu/xsd/xroad.xsd}conf"
    order = [el.tag for el in root]
    assert order[:2] == ["instanceIdentifier", "source"]
    assert order[-1] == "globalSettings"
    assert [m.get("id") for m in root.iter("member", "subsystem")] == [
        "id0",
        "id1",
        "id2",
    ]
    server = root.find("securityServer")
    assert server.findtext("owner") == "id0"
    assert [c.text for c in server.findall("client")] == ["id1", "id2"]
    expected_hash = base64.b64encode(auth_cert_hash(pki["auth"])).decode()
    assert server.findtext("authCertHash") == expected_hash
    group_member = root.find("globalGroup/groupMember")
    assert group_member.get("{http://x-road.eu/xsd/identifiers}objectType") == "MEMBER"


def test_build_refuses_unlisted_client(shared: SharedParameters) -> None:
    stranger = ClientId("INST", "GOV", "9999")
    bad = SecurityServer(SS_A, None, (), (stranger,))
    params = SharedParameters("INST", (), (), (), shared.members, (bad,), (), ())

    with pytest.raises(MalformedGlobalConf):
        build_shared_params(params)


def test_private_round_trip(private: PrivateParameters) -> None:
    data = build_private_params(private)

    assert parse_private_params(data) == private
    assert b"managementRequestServiceProviderId" in data


@pytest.mark.parametrize(
    "data",
    [
        b"<x/>",
        b'<c:conf xmlns:c="http://x-road.eu/xsd/xroad.xsd"/>',
        b'<c:conf xmlns:c="http://x-road.eu/xsd/xroad.xsd"><instanceIdentifier>I'
        b"</instanceIdentifier><securityServer><owner>nope</owner><serverCode>S"
        b"</serverCode></securityServer></c:conf>",
        b'<c:conf xmlns:c="http://x-road.eu/xsd/xroad.xsd"><instanceIdentifier>I'
        b"</instanceIdentifier><approvedTSA><name>T</name><url>u</url><cert>YmFy</cert>"
        b"</approvedTSA></c:conf>",
    ],
    ids=["wrong-root", "no-instance", "dangling-idref", "bad-cert"],
)
def test_malformed_shared_refused(data: bytes) -> None:
    with pytest.raises(MalformedGlobalConf) as info:
        parse_shared_params(data)

    assert info.value.code == "MalformedGlobalConf"


def _fixture_files(name: str) -> list[Path]:
    return sorted(DIRS.glob(f"*/*/{name}")) if DIRS.is_dir() else []


@pytest.mark.parametrize(
    "path",
    _fixture_files("shared-params.xml"),
    ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}",
)
def test_fixture_shared_params_parse_and_round_trip(path: Path) -> None:
    params = parse_shared_params(path.read_bytes())

    assert params.instance
    assert params.members
    assert parse_shared_params(build_shared_params(params)) == params


@pytest.mark.parametrize(
    "path",
    _fixture_files("private-params.xml"),
    ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}",
)
def test_fixture_private_params_parse_and_round_trip(path: Path) -> None:
    params = parse_private_params(path.read_bytes())

    assert params.management_service.auth_cert_reg_address == "http://mgmt.com:1234"
    assert params.management_service.provider.member_code
    assert parse_private_params(build_private_params(params)) == params


def _fixture_conf(name: str, own: str) -> GlobalConf:
    _need_fixtures()
    shared = {}
    for path in (DIRS / name).glob("*/shared-params.xml"):
        params = parse_shared_params(path.read_bytes())
        shared[params.instance] = params
    private = parse_private_params(
        (DIRS / name / own / "private-params.xml").read_bytes()
    )
    return GlobalConf(own, private, shared, None)


def test_fixture_good_v2_queries() -> None:
    conf = _fixture_conf("globalconf_good_v2", "EE")

    assert conf.ocsp_freshness_seconds == 42
    assert len(conf.approved_tsas()) == 3
    assert len(conf.ocsp_responder_certs()) == 12
    assert len(conf.approved_cas("EE")) == 5
    assert conf.known_addresses() >= {
        "127.0.0.1",
        "https://www.foo.com/bar",
        "https://foo.bar.baz",
    }
    assert conf.timestamping_interval_seconds == 123


def test_fixture_good_v6_maintenance_and_cost_types() -> None:
    conf = _fixture_conf("globalconf_good_v6", "EE")

    servers = [s for s in conf.shared["EE"].security_servers if s.in_maintenance]
    assert [s.maintenance_message for s in servers] == ["Test maintenance mode"]
    first = conf.approved_cas("EE")[0]
    assert [o.cost_type for o in first.ocsp][:2] == ["FREE", "PAID"]
    assert first.default_csr_format == "PEM"
    assert conf.approved_tsas("EE")[0].cost_type == "PAID"


def test_fixture_pem_certificates_are_read() -> None:
    _need_fixtures()
    data = (DIRS / "globalconf_good2_v3" / "DEV" / "shared-params.xml").read_bytes()

    params = parse_shared_params(data)

    assert params.approved_tsas[0].cert.subject
    assert params.approved_cas[0].ocsp[0].cert is not None


# -- snapshot queries ---------------------------------------------------------


def test_servers_hosting_counts_owner_and_clients(conf: GlobalConf) -> None:
    assert [s.id for s in conf.servers_hosting(GOV)] == [SS_A]
    assert [s.id for s in conf.servers_hosting(TAXES)] == [SS_A]
    assert conf.servers_hosting(ClientId("INST", "GOV", "1234", "OTHER")) == []
    assert conf.servers_hosting(ClientId("ELSE", "GOV", "1234")) == []


def test_server_lookup_and_is_client_of(conf: GlobalConf) -> None:
    assert conf.server(SS_A).address == "ss-a.example"
    assert conf.server(SecurityServerId(GOV, "nope")) is None
    assert conf.is_client_of(SS_A, COM)
    assert not conf.is_client_of(SecurityServerId(COM, "SS-B"), GOV)


def test_server_for_auth_cert(
    conf: GlobalConf, pki: dict[str, x509.Certificate]
) -> None:
    assert conf.server_for_auth_cert(pki["auth"]).id == SS_A
    assert conf.server_for_auth_cert(pki["stranger"]) is None


def test_ca_lookup(conf: GlobalConf, pki: dict[str, x509.Certificate]) -> None:
    assert conf.ca_certs("INST") == [pki["ca"], pki["int"]]
    assert conf.approved_ca_for(pki["leaf"], "INST").name == "Demo CA"
    assert conf.approved_ca_for(pki["auth"], "INST").name == "Demo CA"
    assert conf.approved_ca_for(pki["stranger"], "INST") is None
    assert conf.issuer_cert(pki["leaf"]) == pki["int"]
    ca = conf.approved_ca_for(pki["leaf"], "INST")
    assert [o.url for o in ca.ocsp_for(pki["int"])] == ["http://ocsp2.example"]
    assert conf.ocsp_responder_certs("INST") == [pki["ocsp"]]


def test_members_groups_and_settings(
    conf: GlobalConf, pki: dict[str, x509.Certificate]
) -> None:
    assert conf.member(TAXES).name == "Tax Office"
    assert conf.member(ClientId("INST", "GOV", "1234", "NOPE")) is None
    assert len(conf.members()) == 2
    assert conf.global_group_members("INST", "owners") == (GOV, TAXES)
    assert conf.ocsp_freshness_seconds == 600
    assert conf.timestamping_interval_seconds == 90
    assert conf.internal_verification_certs() == [pki["conf"]]


def test_check_valid(conf: GlobalConf) -> None:
    conf.check_valid(NOW)

    with pytest.raises(OutdatedGlobalConf) as info:
        conf.check_valid(NOW + timedelta(hours=1))
    assert info.value.code == "OutdatedGlobalConf"
    GlobalConf("INST", None, {}, None).check_valid(NOW + timedelta(days=9999))


def test_expired_partners_are_dropped(shared: SharedParameters) -> None:
    partner = SharedParameters("P", (), (), (), (), (), (), ())
    conf = GlobalConf(
        "INST",
        None,
        {"INST": shared, "P": partner},
        None,
        {"P": NOW + timedelta(minutes=1)},
    )

    assert "P" in conf.without_expired_partners(NOW).shared
    assert "P" not in conf.without_expired_partners(NOW + timedelta(minutes=2)).shared


def test_module_is_sans_io() -> None:
    tree = ast.parse(Path(globalconf_module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }

    assert not imported & {"aiohttp", "asyncio", "sqlite3", "socket", "random", "os"}
    assert "datetime.now" not in Path(globalconf_module.__file__).read_text()
