from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.errors import InvalidRequest, UnknownMember, UnknownService
from protocol.identifiers import (
    ClientId,
    GlobalGroupId,
    LocalGroupId,
    SecurityServerId,
    ServiceId,
)
from security_server.serverconf import (
    ClientStatus,
    Endpoint,
    ServerConf,
    ServiceKind,
    UnknownLocalGroup,
    endpoint_matches,
    normalize_service_path,
)

OWNER = ClientId("INST", "GOV", "1234")
PROVIDER = ClientId("INST", "GOV", "1234", "PROVIDER")
CONSUMER = ClientId("INST", "COM", "5678", "CONSUMER")
OTHER = ClientId("INST", "COM", "9999", "OTHER")
SOAP_V1 = ServiceId(PROVIDER, "getRandom", "v1")
REST = ServiceId(PROVIDER, "pets")


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[ServerConf]:
    store = ServerConf(tmp_path)
    store.set_identity(SecurityServerId(OWNER, "SS1"))
    store.add_client(PROVIDER, ClientStatus.REGISTERED)
    yield store
    store.close()


def test_identity_and_settings_survive_reopen(tmp_path: Path) -> None:
    first = ServerConf(tmp_path)
    first.set_identity(SecurityServerId(OWNER, "SS/1"))
    first.set_setting("ocsp.interval", "1200")
    first.close()

    again = ServerConf(tmp_path)

    assert again.server_id == SecurityServerId(OWNER, "SS/1")
    assert again.instance == "INST"
    assert again.get_setting("ocsp.interval") == "1200"
    assert again.get_setting("missing", "x") == "x"


def test_clients_status_and_removal(conf: ServerConf) -> None:
    conf.add_client(OWNER)

    assert set(conf.clients()) == {OWNER, PROVIDER}
    assert conf.client_status(OWNER) is ClientStatus.SAVED
    conf.set_client_status(OWNER, ClientStatus.REGISTERED)
    assert conf.client_status(OWNER) is ClientStatus.REGISTERED
    conf.remove_client(OWNER)
    assert conf.client_status(OWNER) is None
    with pytest.raises(UnknownMember):
        conf.set_client_status(OWNER, ClientStatus.SAVED)


def test_client_of_other_instance_is_refused(conf: ServerConf) -> None:
    with pytest.raises(InvalidRequest):
        conf.add_client(ClientId("OTHER", "GOV", "1"))


def test_service_lookup_by_exact_version(conf: ServerConf) -> None:
    conf.add_service(SOAP_V1, kind="SOAP", url="http://is/soap", timeout=30)
    conf.add_service(REST, kind=ServiceKind.REST, url="http://is/rest")

    found = conf.get_service(ServiceId(PROVIDER, "getRandom", "v1"))
    assert found is not None and found.url == "http://is/soap" and found.timeout == 30
    assert found.kind is ServiceKind.SOAP
    assert conf.get_service(ServiceId(PROVIDER, "getRandom", "v2")) is None
    assert conf.get_service(ServiceId(PROVIDER, "getRandom")) is None
    rest = conf.get_service(ServiceId(PROVIDER, "pets"))
    assert rest is not None and rest.kind is ServiceKind.REST
    assert conf.get_service(ServiceId(PROVIDER, "pets", "v1")) is None
    assert [s.service_id for s in conf.services_of(PROVIDER)] == [SOAP_V1, REST]


def test_service_disable_and_remove(conf: ServerConf) -> None:
    conf.add_service(SOAP_V1, kind="SOAP", url="http://is/soap")

    conf.set_service_disabled(SOAP_V1, "maintenance until noon")
    found = conf.get_service(SOAP_V1)
    assert found is not None and found.disabled
    assert found.disabled_notice == "maintenance until noon"
    conf.remove_service(SOAP_V1)
    assert conf.get_service(SOAP_V1) is None
    with pytest.raises(UnknownService):
        conf.set_service_disabled(SOAP_V1, None)


def test_service_of_unknown_provider_is_refused(conf: ServerConf) -> None:
    with pytest.raises(UnknownMember):
        conf.add_service(ServiceId(OTHER, "x"), kind="REST", url="http://is")


def test_rest_endpoints(conf: ServerConf) -> None:
    conf.add_endpoint(REST, "get", "/pets/*")
    conf.add_endpoint(REST)

    assert conf.endpoints(REST) == [Endpoint("*", "**"), Endpoint("GET", "/pets/*")]


def test_soap_acl_matches_code_only(conf: ServerConf) -> None:
    conf.grant(SOAP_V1, CONSUMER)

    assert conf.is_allowed(CONSUMER, ServiceId(PROVIDER, "getRandom", "v9"))
    assert conf.is_allowed(CONSUMER, ServiceId(PROVIDER, "getRandom"))
    assert not conf.is_allowed(CONSUMER.member, SOAP_V1)
    assert not conf.is_allowed(OTHER, SOAP_V1)
    assert not conf.is_allowed(CONSUMER, ServiceId(PROVIDER, "other", "v1"))
    conf.revoke(SOAP_V1, CONSUMER)
    assert not conf.is_allowed(CONSUMER, SOAP_V1)


def test_acl_through_global_and_local_groups(conf: ServerConf) -> None:
    everyone = GlobalGroupId("INST", "security-server-owners")
    conf.grant(SOAP_V1, everyone)
    conf.create_local_group(PROVIDER, "friends")
    conf.add_local_group_member(PROVIDER, "friends", OTHER)
    conf.grant(REST, LocalGroupId("friends"), "GET", "/pets/**")

    assert conf.is_allowed(CONSUMER, SOAP_V1, global_groups=lambda g: {CONSUMER})
    assert not conf.is_allowed(CONSUMER, SOAP_V1, global_groups=lambda g: set())
    assert not conf.is_allowed(CONSUMER, SOAP_V1)
    assert conf.is_allowed(OTHER, REST, method="get", path="/pets/1/photo")
    assert not conf.is_allowed(CONSUMER, REST, method="GET", path="/pets/1")
    assert conf.access_rights(SOAP_V1)[0].subject == everyone
    with pytest.raises(UnknownLocalGroup):
        conf.grant(REST, LocalGroupId("strangers"))
    with pytest.raises(UnknownLocalGroup):
        conf.add_local_group_member(PROVIDER, "strangers", OTHER)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/pets/12", True),
        ("get", "/pets/12", True),
        ("POST", "/pets/12", False),
        ("GET", "/pets/12/photo", False),
        ("GET", "/pets%2F12%2Fphoto", False),
        ("GET", "/pets/a/../12", True),
        ("GET", "/pets/%2e%2e/admin", False),
        ("GET", "/pets/%252e%252e/admin", False),
        ("GET", "/pets/a..b", False),
        ("GET", "/pets/*", True),
        ("PUT", "/files/x*y", True),
        ("PUT", "/files/xy", False),
        ("DELETE", "/any/thing/at/all", True),
        ("DELETE", "", True),
    ],
    ids=lambda v: str(v),
)
def test_rest_acl_method_and_path(
    conf: ServerConf, method: str, path: str, allowed: bool
) -> None:
    conf.grant(REST, CONSUMER, "GET", "/pets/*")
    conf.grant(REST, CONSUMER, "PUT", "/files/x\\*y")
    conf.grant(REST, CONSUMER, "DELETE", "**")

    assert conf.is_allowed(CONSUMER, REST, method=method, path=path) is allowed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/b/../c", "/a/c"),
        ("/a/./b/", "/a/b/"),
        ("/../../etc", None),  # climbs above the root: refused
        ("/a%2Fb", "/a/b"),
        ("/%25252e", "/"),
        ("/x..y", None),
        ("/%ff", None),
        ("", ""),
    ],
)
def test_normalize_service_path(raw: str, expected: str | None) -> None:
    assert normalize_service_path(raw) == expected


def test_star_stays_within_one_segment() -> None:
    endpoint = Endpoint("*", "/a/*/c")

    assert endpoint_matches(endpoint, "GET", "/a/b/c")
    assert not endpoint_matches(endpoint, "GET", "/a/b/x/c")


@pytest.mark.parametrize(
    ("code", "version"),
    [
        ("get Person", None),
        ("getPerson", "v/1"),
        ("listMethods", None),
        ("getWsdl", "v1"),
    ],
    ids=[
        "space-in-code",
        "slash-in-version",
        "reserved-listMethods",
        "reserved-getWsdl",
    ],
)
def test_add_service_refuses_bad_or_reserved_codes(
    tmp_path: Path, code: str, version: str | None
) -> None:

    conf = ServerConf(tmp_path)
    provider = ClientId("EE", "GOV", "1001", "REG")
    conf.add_client(provider)
    with pytest.raises(InvalidRequest):
        conf.add_service(
            ServiceId(provider, code, version), kind="SOAP", url="http://x/"
        )
    assert conf.services_of(provider) == []
    conf.close()
