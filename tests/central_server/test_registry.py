"""Tests for the central server registry store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from central_server.registry import (
    DuplicateEntry,
    EntryNotFound,
    IncompleteRegistry,
    InvalidRegistryInput,
    Registry,
    UnknownGlobalGroup,
    UnknownRegistryMember,
    UnknownSecurityServer,
)
from protocol.errors import InvalidRequest, XRoadError
from protocol.identifiers import ClientId, SecurityServerId

NOW = dt.datetime(2025, 1, 4, 9, 30, tzinfo=dt.UTC)
INST = "TEST"
GOV1 = ClientId(INST, "GOV", "1234")
SUB1 = ClientId(INST, "GOV", "1234", "TAXES")
COM2 = ClientId(INST, "COM", "5678")
SS1 = SecurityServerId(GOV1, "SS1")


def make_cert(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def certs() -> dict[str, bytes]:
    return {
        name: make_cert(name)
        for name in ("ca", "ocsp", "tsa", "auth1", "auth2", "mgmt")
    }


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry.create(tmp_path, INST)
    reg.add_member_class("GOV", "Government")
    reg.add_member_class("COM", "Commercial")
    reg.add_member(GOV1, "Tax Office")
    return reg


def test_create_and_reopen(tmp_path: Path) -> None:
    reg = Registry.create(tmp_path, INST)
    reg.add_member_class("GOV", "Government")
    reg.close()

    again = Registry.open(tmp_path)
    assert again.instance == INST
    assert again.list_member_classes() == [("GOV", "Government")]


def test_create_twice_refused(tmp_path: Path) -> None:
    Registry.create(tmp_path, INST).close()
    with pytest.raises(DuplicateEntry) as info:
        Registry.create(tmp_path, INST)
    assert info.value.code == "DuplicateEntry"


def test_open_missing(tmp_path: Path) -> None:
    with pytest.raises(EntryNotFound):
        Registry.open(tmp_path / "nothing")


def test_bad_instance(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        Registry.create(tmp_path, "IN ST")


def test_member_classes(registry: Registry) -> None:
    assert registry.list_member_classes() == [
        ("COM", "Commercial"),
        ("GOV", "Government"),
    ]
    with pytest.raises(DuplicateEntry):
        registry.add_member_class("GOV", "again")
    with pytest.raises(InvalidRequest):
        registry.add_member_class("G/V", "slash")
    with pytest.raises(InvalidRegistryInput):
        registry.add_member_class("NGO", "  ")


def test_members(registry: Registry) -> None:
    registry.add_member(COM2, "Shop")
    record = registry.get_member(COM2)
    assert record.member_id == COM2
    assert record.name == "Shop"
    assert [m.member_id for m in registry.list_members()] == [GOV1, COM2]


@pytest.mark.parametrize(
    ("member_id", "error"),
    [
        (ClientId(INST, "GOV", "1234"), DuplicateEntry),
        (ClientId(INST, "NGO", "1"), EntryNotFound),
        (ClientId("OTHER", "GOV", "1"), InvalidRegistryInput),
        (ClientId(INST, "GOV", "a b"), InvalidRequest),
        (ClientId(INST, "GOV", "1", "SUB"), InvalidRegistryInput),
    ],
    ids=["duplicate", "unknown-class", "other-instance", "bad-chars", "subsystem"],
)
def test_add_member_refused(
    registry: Registry, member_id: ClientId, error: type
) -> None:
    with pytest.raises(error) as info:
        registry.add_member(member_id, "Name")
    assert isinstance(info.value, XRoadError)


def test_get_unknown_member(registry: Registry) -> None:
    with pytest.raises(UnknownRegistryMember) as info:
        registry.get_member(COM2)
    assert info.value.code == "UnknownMember"


def test_subsystems(registry: Registry) -> None:
    registry.add_subsystem(SUB1)
    assert registry.list_subsystems(GOV1) == [SUB1]
    with pytest.raises(DuplicateEntry):
        registry.add_subsystem(SUB1)
    with pytest.raises(UnknownRegistryMember):
        registry.add_subsystem(ClientId(INST, "COM", "5678", "X"))
    with pytest.raises(InvalidRegistryInput):
        registry.add_subsystem(GOV1)
    with pytest.raises(InvalidRequest):
        registry.add_subsystem(ClientId(INST, "GOV", "1234", "A&B"))


def test_security_servers(registry: Registry, certs: dict[str, bytes]) -> None:
    registry.add_subsystem(SUB1)
    registry.add_security_server(SS1, "ss1.example")
    registry.set_server_address(SS1, "10.0.0.1")
    registry.add_auth_cert(SS1, certs["auth1"])
    registry.add_auth_cert(SS1, certs["auth2"])
    registry.remove_auth_cert(SS1, certs["auth1"])
    registry.register_client(SS1, SUB1)
    registry.register_client(SS1, GOV1)
    registry.unregister_client(SS1, GOV1)

    record = registry.get_security_server(SS1)
    assert record.address == "10.0.0.1"
    assert record.auth_certs == (certs["auth2"],)
    assert record.clients == (SUB1,)


def test_security_server_refusals(registry: Registry, certs: dict[str, bytes]) -> None:
    registry.add_security_server(SS1, "ss1.example")
    registry.add_auth_cert(SS1, certs["auth1"])
    unknown_ss = SecurityServerId(GOV1, "NOPE")
    cases = [
        (lambda: registry.add_security_server(SS1, "x.example"), DuplicateEntry),
        (
            lambda: registry.add_security_server(SecurityServerId(COM2, "S"), "x"),
            UnknownRegistryMember,
        ),
        (
            lambda: registry.add_security_server(SecurityServerId(GOV1, "S 2"), "x"),
            InvalidRequest,
        ),
        (
            lambda: registry.add_security_server(SecurityServerId(GOV1, "S2"), "a/b"),
            InvalidRegistryInput,
        ),
        (
            lambda: registry.set_server_address(unknown_ss, "x.example"),
            UnknownSecurityServer,
        ),
        (lambda: registry.add_auth_cert(SS1, certs["auth1"]), DuplicateEntry),
        (lambda: registry.add_auth_cert(SS1, b"not a cert"), InvalidRegistryInput),
        (
            lambda: registry.add_auth_cert(unknown_ss, certs["auth2"]),
            UnknownSecurityServer,
        ),
        (lambda: registry.remove_auth_cert(SS1, certs["auth2"]), EntryNotFound),
        (lambda: registry.register_client(SS1, SUB1), UnknownRegistryMember),
        (lambda: registry.unregister_client(SS1, GOV1), EntryNotFound),
    ]
    for call, error in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, XRoadError)
    registry.register_client(SS1, GOV1)
    with pytest.raises(DuplicateEntry):
        registry.register_client(SS1, GOV1)
    assert registry.get_security_server(SS1).clients == (GOV1,)


def test_failed_call_changes_nothing(
    registry: Registry, certs: dict[str, bytes]
) -> None:
    registry.add_security_server(SS1, "ss1.example")
    with pytest.raises(DuplicateEntry):
        registry.add_security_server(SS1, "ss2.example")
    assert registry.get_security_server(SS1).address == "ss1.example"
    assert len(registry.list_security_servers()) == 1


def test_approved_cas_and_tsas(registry: Registry, certs: dict[str, bytes]) -> None:
    registry.add_approved_ca(
        "Test CA",
        certs["ca"],
        profile="p",
        ocsp_url="http://ocsp.example:8072/",
        ocsp_cert_der=certs["ocsp"],
    )
    registry.add_approved_tsa("Test TSA", "http://tsa.example:8899/", certs["tsa"])
    (ca,) = registry.list_approved_cas()
    assert (ca.name, ca.cert, ca.ocsp_cert, ca.authentication_only) == (
        "Test CA",
        certs["ca"],
        certs["ocsp"],
        False,
    )
    assert registry.list_approved_tsas()[0].url == "http://tsa.example:8899/"

    with pytest.raises(DuplicateEntry):
        registry.add_approved_ca("Test CA", certs["auth1"], profile="p")
    with pytest.raises(DuplicateEntry):
        registry.add_approved_ca("Other", certs["ca"], profile="p")
    with pytest.raises(InvalidRegistryInput):
        registry.add_approved_ca("X", certs["auth1"], profile="p", ocsp_url="ftp://x")
    with pytest.raises(InvalidRegistryInput):
        registry.add_approved_ca(
            "X", certs["auth1"], profile="p", ocsp_cert_der=certs["ocsp"]
        )
    with pytest.raises(DuplicateEntry):
        registry.add_approved_tsa("Test TSA", "http://t.example/", certs["tsa"])
    with pytest.raises(InvalidRegistryInput):
        registry.add_approved_tsa("T2", "not a url", certs["tsa"])


def test_global_groups(registry: Registry) -> None:
    registry.add_subsystem(SUB1)
    registry.add_global_group("owners", "Server owners")
    registry.add_group_member("owners", GOV1)
    registry.add_group_member("owners", SUB1)
    (group,) = registry.list_global_groups()
    assert (group.code, group.members) == ("owners", (GOV1, SUB1))

    with pytest.raises(DuplicateEntry):
        registry.add_global_group("owners", "again")
    with pytest.raises(DuplicateEntry):
        registry.add_group_member("owners", GOV1)
    with pytest.raises(UnknownGlobalGroup):
        registry.add_group_member("nope", GOV1)
    with pytest.raises(UnknownRegistryMember):
        registry.add_group_member("owners", COM2)


def test_settings(registry: Registry, certs: dict[str, bytes]) -> None:
    settings = registry.settings()
    assert settings.ocsp_freshness_seconds == 3600
    assert settings.timestamping_interval_seconds == 60
    assert settings.conf_expire_interval_seconds == 600

    registry.set_ocsp_freshness(7200)
    registry.set_timestamping_interval(120)
    registry.set_conf_expire_interval(900)
    registry.add_subsystem(ClientId(INST, "GOV", "1234", "MANAGEMENT"))
    provider = ClientId(INST, "GOV", "1234", "MANAGEMENT")
    registry.set_management_service(
        "https://cs.example:4001/managementservice/", provider, certs["mgmt"]
    )
    settings = registry.settings()
    assert settings.ocsp_freshness_seconds == 7200
    assert settings.timestamping_interval_seconds == 120
    assert settings.conf_expire_interval_seconds == 900
    assert settings.management_service_provider == provider
    assert settings.management_service_cert == certs["mgmt"]


@pytest.mark.parametrize(
    ("setter", "value"),
    [
        ("set_ocsp_freshness", 60),  # not above the timestamping interval
        ("set_ocsp_freshness", "3600"),
        ("set_timestamping_interval", 59),
        ("set_timestamping_interval", 3600),  # not below the OCSP freshness
        ("set_conf_expire_interval", 0),
        ("set_conf_expire_interval", True),
    ],
)
def test_settings_refused(registry: Registry, setter: str, value: object) -> None:
    with pytest.raises(InvalidRegistryInput) as info:
        getattr(registry, setter)(value)
    assert info.value.code == "InvalidRequest"


def test_management_service_refused(registry: Registry) -> None:
    with pytest.raises(UnknownRegistryMember):
        registry.set_management_service("http://cs.example/", SUB1)
    with pytest.raises(InvalidRegistryInput):
        registry.set_management_service("cs.example", GOV1)
    assert registry.settings().management_service_address is None


def test_snapshot_needs_management_service(registry: Registry) -> None:
    with pytest.raises(IncompleteRegistry):
        registry.snapshot()


def test_snapshot(registry: Registry, certs: dict[str, bytes]) -> None:
    from protocol.globalconf import auth_cert_hash

    registry.add_subsystem(SUB1)
    registry.add_security_server(SS1, "ss1.example")
    registry.add_auth_cert(SS1, certs["auth1"])
    registry.register_client(SS1, SUB1)
    registry.add_approved_ca(
        "Test CA",
        certs["ca"],
        profile="p",
        ocsp_url="http://ocsp.example/",
        ocsp_cert_der=certs["ocsp"],
    )
    registry.add_approved_tsa("Test TSA", "http://tsa.example/", certs["tsa"])
    registry.add_global_group("owners", "Owners")
    registry.add_group_member("owners", GOV1)
    registry.set_management_service("http://cs.example:8071/managementservice/", SUB1)

    shared, private = registry.snapshot()
    assert shared.instance == INST
    assert [(m.id, m.name, m.subsystems) for m in shared.members] == [
        (GOV1, "Tax Office", ("TAXES",))
    ]
    (server,) = shared.security_servers
    assert server.id == SS1
    assert server.clients == (SUB1,)
    auth1 = x509.load_der_x509_certificate(certs["auth1"])
    assert server.auth_cert_hashes == (auth_cert_hash(auth1),)
    (ca,) = shared.approved_cas
    assert ca.name == "Test CA"
    assert ca.ocsp[0].url == "http://ocsp.example/"
    assert shared.approved_tsas[0].name == "Test TSA"
    assert shared.global_groups[0].members == (GOV1,)
    assert dict(shared.member_classes)["GOV"] == "Government"
    assert shared.ocsp_freshness_seconds == 3600
    assert private.instance == INST
    assert private.management_service.provider == SUB1
    assert private.timestamping_interval_seconds == 60
