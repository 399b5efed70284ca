"""Tests for configuration publishing and the configuration HTTP service."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from central_server.publisher import (
    KEYS_DIR,
    ConfSigningKeys,
    PublisherError,
    export_anchor,
    generate,
    stamp_of,
)
from central_server.registry import IncompleteRegistry, Registry
from protocol.anchor import parse_anchor
from protocol.confdir import parse_signed_directory
from protocol.digests import digest
from protocol.globalconf import (
    auth_cert_hash,
    parse_private_params,
    parse_shared_params,
)
from protocol.identifiers import ClientId, SecurityServerId

NOW = dt.datetime(2025, 1, 4, 9, 30, 0, 123456, tzinfo=dt.UTC)
INST = "TEST"
GOV1 = ClientId(INST, "GOV", "1234")
MGMT = ClientId(INST, "GOV", "1234", "MANAGEMENT")
SUB1 = ClientId(INST, "GOV", "1234", "TAXES")
SS1 = SecurityServerId(GOV1, "SS1")


def make_cert(cn: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def certs() -> dict[str, x509.Certificate]:
    return {name: make_cert(name) for name in ("ca", "ocsp", "tsa", "auth1")}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ConfSigningKeys:
    return ConfSigningKeys.create(tmp_path_factory.mktemp("keys"), INST, NOW)


@pytest.fixture
def registry(tmp_path: Path, certs: dict[str, x509.Certificate]) -> Registry:
    reg = Registry.create(tmp_path / "data", INST)
    reg.add_member_class("GOV", "Government")
    reg.add_member(GOV1, "Tax Office")
    reg.add_subsystem(MGMT)
    reg.add_subsystem(SUB1)
    reg.add_security_server(SS1, "ss1.example")
    reg.add_auth_cert(SS1, der(certs["auth1"]))
    reg.register_client(SS1, SUB1)
    reg.add_approved_ca(
        "Test CA",
        der(certs["ca"]),
        profile="test-profile",
        ocsp_url="http://cs.example:8072/",
        ocsp_cert_der=der(certs["ocsp"]),
    )
    reg.add_approved_tsa("Test TSA", "http://tsa.example:8899/", der(certs["tsa"]))
    reg.add_global_group("owners", "Owners")
    reg.add_group_member("owners", GOV1)
    reg.set_management_service("http://cs.example:8071/managementservice/", MGMT)
    reg.set_central_server_address("cs.example")
    return reg


def counter_rand(n: int) -> bytes:
    return bytes(range(n))


def test_keys_on_disk(tmp_path: Path) -> None:
    created = ConfSigningKeys.create(tmp_path, INST, NOW)
    key_files = list((tmp_path / KEYS_DIR).glob("*.key.pem"))
    assert len(key_files) == 1
    assert stat.S_IMODE(os.stat(key_files[0]).st_mode) == 0o600

    opened = ConfSigningKeys.open(tmp_path)
    assert opened.active().cert == created.active().cert
    assert opened.verification_certs() == (created.active().cert,)
    with pytest.raises(PublisherError):
        ConfSigningKeys.create(tmp_path, INST, NOW)


def test_generate_round_trip(
    registry: Registry,
    keys: ConfSigningKeys,
    tmp_path: Path,
    certs: dict[str, x509.Certificate],
) -> None:
    out = tmp_path / "conf"
    path = generate(registry, keys, out, NOW, rand=counter_rand)
    assert path == out / "V6" / "internalconf"

    directory = parse_signed_directory(path.read_bytes(), [keys.active().cert])
    assert directory.version == 6
    assert directory.expire_at == NOW.replace(microsecond=0) + dt.timedelta(seconds=600)
    by_id = {p.content_identifier: p for p in directory.parts}
    assert set(by_id) == {"PRIVATE-PARAMETERS", "SHARED-PARAMETERS"}
    assert all(p.instance == INST for p in directory.parts)

    shared_part = by_id["SHARED-PARAMETERS"]
    assert shared_part.location.startswith(f"/V6/{stamp_of(NOW)}/")
    shared_bytes = (out / shared_part.location.lstrip("/")).read_bytes()
    assert digest(shared_bytes, shared_part.hash_algorithm_uri) == shared_part.digest

    shared = parse_shared_params(shared_bytes)
    assert shared.instance == INST
    assert [(m.id, m.subsystems) for m in shared.members] == [
        (GOV1, ("MANAGEMENT", "TAXES"))
    ]
    (server,) = shared.security_servers
    assert (server.id, server.address, server.clients) == (SS1, "ss1.example", (SUB1,))
    assert server.auth_cert_hashes == (auth_cert_hash(certs["auth1"]),)
    (ca,) = shared.approved_cas
    assert (ca.name, ca.top_ca, ca.profile) == ("Test CA", certs["ca"], "test-profile")
    assert (ca.ocsp[0].url, ca.ocsp[0].cert) == (
        "http://cs.example:8072/",
        certs["ocsp"],
    )
    assert shared.approved_tsas[0].cert == certs["tsa"]
    assert shared.global_groups[0].members == (GOV1,)
    (source,) = shared.sources
    assert source.address == "cs.example"
    assert source.internal_verification_certs == (keys.active().cert,)

    private_part = by_id["PRIVATE-PARAMETERS"]
    private = parse_private_params(
        (out / private_part.location.lstrip("/")).read_bytes()
    )
    assert private.management_service.provider == MGMT
    assert private.timestamping_interval_seconds == 60


def test_generate_refuses_without_address(
    tmp_path: Path, keys: ConfSigningKeys
) -> None:
    reg = Registry.create(tmp_path, INST)
    with pytest.raises(IncompleteRegistry):
        generate(reg, keys, tmp_path / "conf", NOW)
    assert not (tmp_path / "conf").exists()


def test_generate_removes_old_stamps(
    registry: Registry, keys: ConfSigningKeys, tmp_path: Path
) -> None:
    out = tmp_path / "conf"
    generate(registry, keys, out, NOW)
    generate(registry, keys, out, NOW)  # same instant: a distinct stamp dir
    assert len([p for p in (out / "V6").iterdir() if p.is_dir()]) == 2

    later = NOW + dt.timedelta(seconds=601)
    generate(registry, keys, out, later)
    stamps = sorted(p.name for p in (out / "V6").iterdir() if p.is_dir())
    assert stamps == [stamp_of(later)]


def test_export_anchor(registry: Registry, keys: ConfSigningKeys) -> None:
    anchor = parse_anchor(export_anchor(registry, keys, "http://cs.example:8070/", NOW))
    assert anchor.instance == INST
    (source,) = anchor.sources
    assert source.download_url == "http://cs.example:8070/internalconf"
    assert source.verification_certs == (keys.active().cert,)
    with pytest.raises(PublisherError):
        export_anchor(registry, keys, "https://cs.example", NOW)


# -- HTTP ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def conf_client(
    registry: Registry, keys: ConfSigningKeys, tmp_path: Path
) -> TestClient:
    from central_server.service import conf_app

    out = tmp_path / "conf"
    generate(registry, keys, out, NOW)
    (tmp_path / "secret.txt").write_text("secret")
    client = TestClient(TestServer(conf_app(out)))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.asyncio
async def test_http_internalconf(
    conf_client: TestClient, keys: ConfSigningKeys
) -> None:
    resp = await conf_client.get("/internalconf?version=6")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("multipart/related")
    body = await resp.read()
    directory = parse_signed_directory(body, [keys.active().cert])

    shared = next(
        p for p in directory.parts if p.content_identifier == "SHARED-PARAMETERS"
    )
    part = await conf_client.get(shared.location)
    assert part.status == 200
    assert digest(await part.read(), shared.hash_algorithm_uri) == shared.digest


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "url",
    [
        "/internalconf?version=2",
        "/internalconf",
        "/internalconf?version=66",
        "/externalconf?version=6",
        "/V6/../../secret.txt",
        "/V6/%2e%2e/secret.txt",
        "/V6/20250104093000123456000/..%2f..%2fsecret.txt",
        "/V6/20250104093000123456000/internalconf",
        "/V6/..%2F..%2F/secret.txt",
        "/V5/20250104093000123456000/shared-params.xml",
    ],
)
async def test_http_not_found(conf_client: TestClient, url: str) -> None:
    resp = await conf_client.get(url)
    assert resp.status == 404
    assert b"secret" not in await resp.read()


# -- init_central and CentralServer -------------------------------------------------


def test_init_central(tmp_path: Path) -> None:
    from central_server.service import CentralConfigError, init_central, read_config
    from protocol.pki import EJBCA_PROFILE

    init_central(tmp_path, INST, authority_member=GOV1, address="127.0.0.1", now=NOW)
    config = read_config(tmp_path)
    assert (config["address"], config["conf_port"], config["ocsp_port"]) == (
        "127.0.0.1",
        8070,
        8072,
    )

    reg = Registry.open(tmp_path)
    shared, private = reg.snapshot()
    assert dict(shared.member_classes) == {"GOV": "Government", "COM": "Commercial"}
    assert shared.members[0].subsystems == ("MANAGEMENT",)
    (ca,) = shared.approved_cas
    assert ca.profile == EJBCA_PROFILE
    assert ca.ocsp[0].url == "http://127.0.0.1:8072/"
    assert private.management_service.provider == MGMT
    reg.close()
    with pytest.raises(CentralConfigError):
        init_central(
            tmp_path, INST, authority_member=GOV1, address="127.0.0.1", now=NOW
        )


@pytest.mark.asyncio
async def test_central_server_serves(tmp_path: Path) -> None:
    from aiohttp import ClientSession

    from central_server.service import CentralServer, init_central

    init_central(tmp_path, INST, authority_member=GOV1, address="127.0.0.1", now=NOW)
    keys = ConfSigningKeys.open(tmp_path)
    times = iter(NOW + dt.timedelta(seconds=i) for i in range(100))
    server = CentralServer(
        tmp_path,
        host="127.0.0.1",
        conf_port=0,
        ocsp_port=0,
        clock=lambda: next(times),
        generation_interval=3600,
    )
    await server.start()
    try:
        assert server.conf_port != 0 and server.ocsp_port != 0
        base = f"http://127.0.0.1:{server.conf_port}"
        async with ClientSession() as session:
            async with session.get(base + "/internalconf?version=6") as resp:
                first = parse_signed_directory(await resp.read(), [keys.active().cert])
            await server.regenerate()
            async with session.get(base + "/internalconf?version=6") as resp:
                second = parse_signed_directory(await resp.read(), [keys.active().cert])
            async with session.get(base + second.parts[1].location) as resp:
                assert resp.status == 200
                shared = parse_shared_params(await resp.read())
        assert second.expire_at > first.expire_at
        assert shared.sources[0].address == "127.0.0.1"
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_central_server_regenerates_in_background(tmp_path: Path) -> None:
    import asyncio

    from central_server.service import CentralServer, init_central

    init_central(tmp_path, INST, authority_member=GOV1, address="127.0.0.1", now=NOW)
    times = iter(NOW + dt.timedelta(seconds=i) for i in range(1000))
    server = CentralServer(
        tmp_path,
        host="127.0.0.1",
        conf_port=0,
        ocsp_port=0,
        clock=lambda: next(times),
        generation_interval=0.02,
    )
    await server.start()
    try:
        await asyncio.sleep(0.3)
    finally:
        await server.stop()
    stamps = [p for p in (tmp_path / "conf" / "V6").iterdir() if p.is_dir()]
    assert len(stamps) >= 3
