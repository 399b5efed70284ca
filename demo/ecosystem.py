"""Demo: build and run a whole ecosystem on 127.0.0.1 with free ports.

Instance ``DEMO``. The population register (member ``GOV/1001``, subsystem
``REGISTRY``) provides a digital-ID check; the social-protection agency
(member ``GOV/2002``, subsystem ``BENEFITS``) consumes it. Every step uses the
same ``init``/``serve`` code a real deployment uses: the central server issues
certificates from CSRs the security servers made, registers them, and
publishes a signed global configuration they download and verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from central_server.ca import CertificateAuthority
from central_server.publisher import ConfSigningKeys, export_anchor
from central_server.registry import Registry
from central_server.service import CA_DIR, CentralServer, init_central
from localio.clock import utc_now
from protocol.identifiers import ClientId, SecurityServerId, ServiceId
from security_server.server import SecurityServer, init_server
from security_server.serverconf import ServerConf
from security_server.settings import Ports, ServerSettings
from security_server.token import SoftToken
from timestamp.tsa import TimestampAuthority, tsa_app

from .provider import provider_app

INSTANCE = "DEMO"
HOST = "127.0.0.1"
PIN = "demo-token-pin"

AUTHORITY = ClientId(INSTANCE, "GOV", "0001")
REGISTER = ClientId(INSTANCE, "GOV", "1001")
REGISTRY_SUBSYSTEM = ClientId(INSTANCE, "GOV", "1001", "REGISTRY")
AGENCY = ClientId(INSTANCE, "GOV", "2002")
BENEFITS_SUBSYSTEM = ClientId(INSTANCE, "GOV", "2002", "BENEFITS")
SOAP_SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "checkDigitalId", "v1")
REST_SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "digital-id")


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free, distinct from each other."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Ecosystem:
    """Everything the demo started, for the story and for tests."""

    directory: Path
    ports: dict[str, int]
    central: CentralServer
    tsa_runner: web.AppRunner
    provider_runner: web.AppRunner
    register_server: SecurityServer
    agency_server: SecurityServer
    tsa_cert: Path
    ca_cert: Path
    anchor: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def client_proxy_url(self) -> str:
        return f"http://{HOST}:{self.ports['agency_client']}"

    async def stop(self) -> None:
        for server in (self.agency_server, self.register_server):
            with contextlib.suppress(Exception):
                await server.stop()
        for runner in (self.provider_runner, self.tsa_runner):
            await runner.cleanup()
        await self.central.stop()


async def _serve_app(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


async def build_ecosystem(
    directory: Path, *, clock: Callable[[], datetime] = utc_now
) -> Ecosystem:
    """Initialise every role in ``directory`` and start them all."""
    names = (
        "central_conf",
        "central_ocsp",
        "central_admin",
        "tsa",
        "provider",
        "register_client",
        "register_server_proxy",
        "register_ocsp",
        "agency_client",
        "agency_server_proxy",
        "agency_ocsp",
    )
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    now = clock()

    central_dir = directory / "central"
    init_central(
        central_dir,
        INSTANCE,
        authority_member=AUTHORITY,
        authority_name="Demo Governing Authority",
        address=HOST,
        now=now,
        conf_port=ports["central_conf"],
        ocsp_port=ports["central_ocsp"],
        admin_port=ports["central_admin"],
    )
    tsa = TimestampAuthority.create(
        directory / "tsa", "DEMO Timestamping Authority", now
    )
    tsa_url = f"http://{HOST}:{ports['tsa']}/"
    register_id = SecurityServerId(REGISTER, "ss-register")
    agency_id = SecurityServerId(AGENCY, "ss-agency")
    registry = Registry.open(central_dir)
    try:
        registry.add_approved_tsa(
            "DEMO TSA", tsa_url, tsa.cert.public_bytes(serialization.Encoding.DER)
        )
        registry.add_member(REGISTER, "Population Register")
        registry.add_subsystem(REGISTRY_SUBSYSTEM)
        registry.add_member(AGENCY, "Social Protection Agency")
        registry.add_subsystem(BENEFITS_SUBSYSTEM)
        registry.add_security_server(
            register_id, f"{HOST}:{ports['register_server_proxy']}"
        )
        registry.add_security_server(
            agency_id, f"{HOST}:{ports['agency_server_proxy']}"
        )
        anchor = export_anchor(
            registry,
            ConfSigningKeys.open(central_dir),
            f"http://{HOST}:{ports['central_conf']}",
            now,
        )
    finally:
        registry.close()
    anchor_path = directory / "anchor.xml"
    anchor_path.write_bytes(anchor)

    central = CentralServer(
        central_dir,
        host=HOST,
        conf_port=ports["central_conf"],
        ocsp_port=ports["central_ocsp"],
        admin_port=ports["central_admin"],
        clock=clock,
        generation_interval=30,
    )
    await central.start()
    tsa_runner = await _serve_app(tsa_app(tsa, clock), ports["tsa"])
    provider_runner = await _serve_app(provider_app(), ports["provider"])

    register_dir = directory / "ss-register"
    agency_dir = directory / "ss-agency"
    for server_dir, server_id, prefix in (
        (register_dir, register_id, "register"),
        (agency_dir, agency_id, "agency"),
    ):
        await _join(
            central, central_dir, server_dir, server_id, anchor, ports, prefix, clock
        )
    await central.regenerate()

    _configure_provider(register_dir, ports["provider"])
    _configure_consumer(agency_dir)

    register_server = SecurityServer(register_dir, PIN, clock=clock)
    agency_server = SecurityServer(agency_dir, PIN, clock=clock)
    await register_server.start()
    await agency_server.start()

    ca_cert = directory / "ca.pem"
    ca_cert.write_bytes(
        CertificateAuthority.open(central_dir / CA_DIR).ca_cert.public_bytes(
            serialization.Encoding.PEM
        )
    )
    return Ecosystem(
        directory=directory,
        ports=ports,
        central=central,
        tsa_runner=tsa_runner,
        provider_runner=provider_runner,
        register_server=register_server,
        agency_server=agency_server,
        tsa_cert=tsa.cert_path,
        ca_cert=ca_cert,
        anchor=anchor_path,
    )


async def _join(
    central: CentralServer,
    central_dir: Path,
    server_dir: Path,
    server_id: SecurityServerId,
    anchor: bytes,
    ports: dict[str, int],
    prefix: str,
    clock: Callable[[], datetime],
) -> None:
    """What an agency and the authority do to bring one security server in."""
    owner = server_id.owner
    result = await init_server(
        server_dir,
        anchor,
        owner=owner,
        server_code=server_id.server_code,
        pin=PIN,
        ports=Ports(
            client_http=ports[f"{prefix}_client"],
            server_proxy=ports[f"{prefix}_server_proxy"],
            ocsp=ports[f"{prefix}_ocsp"],
        ),
        bind_host=HOST,
        clock=clock,
    )
    ca = CertificateAuthority.open(central_dir / CA_DIR)
    auth_cert = ca.issue(result.auth_csr.read_bytes(), "auth", clock())
    sign_cert = ca.issue(
        result.sign_csr.read_bytes(), "sign", clock(), expected_member=owner
    )
    token = SoftToken(server_dir / "token")
    token.login(PIN)
    for cert in (auth_cert, sign_cert):
        token.import_certificate(cert.public_bytes(serialization.Encoding.PEM))

    registry = Registry.open(central_dir)
    try:
        registry.add_auth_cert(
            server_id, auth_cert.public_bytes(serialization.Encoding.DER)
        )
        subsystem = REGISTRY_SUBSYSTEM if owner == REGISTER else BENEFITS_SUBSYSTEM
        registry.register_client(server_id, subsystem)
    finally:
        registry.close()
    serverconf = ServerConf(server_dir)
    try:
        serverconf.add_client(owner)
        serverconf.add_client(
            REGISTRY_SUBSYSTEM if owner == REGISTER else BENEFITS_SUBSYSTEM
        )
    finally:
        serverconf.close()


def _configure_provider(server_dir: Path, provider_port: int) -> None:
    base = f"http://{HOST}:{provider_port}"
    serverconf = ServerConf(server_dir)
    try:
        serverconf.add_service(
            SOAP_SERVICE,
            kind="SOAP",
            url=f"{base}/population-register",
            description_url=f"{base}/population-register.wsdl",
        )
        serverconf.add_service(
            REST_SERVICE,
            kind="REST",
            url=f"{base}/api",
            description_url=f"{base}/api/openapi.json",
        )
        serverconf.grant(SOAP_SERVICE, BENEFITS_SUBSYSTEM)
        serverconf.grant(
            REST_SERVICE,
            BENEFITS_SUBSYSTEM,
            method="GET",
            path="/v1/persons/*/digital-id",
        )
    finally:
        serverconf.close()


def _configure_consumer(server_dir: Path) -> None:
    """The consumer's subsystem was added when it joined; here SOAP client
    libraries that build themselves from ``GET /wsdl`` get it, on behalf of
    BENEFITS (metaservices.md §4.1)."""
    settings = ServerSettings.load(server_dir)
    settings = replace(
        settings, legacy_wsdl=True, legacy_wsdl_client=BENEFITS_SUBSYSTEM.slash()
    )
    settings.save(server_dir)


async def wait_for_timestamps(ecosystem: Ecosystem, timeout: float = 20) -> None:
    """Let both servers' timestampers stamp everything logged so far."""

    async def drained(server: SecurityServer) -> None:
        assert server.runtime is not None
        while await server.runtime.message_log.unstamped(limit=1):
            server.runtime.timestamper.notify()
            await asyncio.sleep(0.05)

    await asyncio.wait_for(
        asyncio.gather(
            drained(ecosystem.register_server), drained(ecosystem.agency_server)
        ),
        timeout,
    )
