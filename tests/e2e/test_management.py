"""End to end: a third security server joins through management requests only.

The agency runs ``xgate server init/cert-import/register``; the authority runs
``xgate central member-add/cert-issue/requests/request-approve``. No test code
writes the registry. Then a call through the new server reaches the provider.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result
from lxml import etree

from cli.main import main
from demo.ecosystem import HOST, PIN, SOAP_SERVICE, Ecosystem, free_ports
from demo.provider import NS
from protocol import pki
from protocol.errors import RemoteFault
from protocol.identifiers import ClientId, SecurityServerId
from protocol.management import (
    ManagementRequest,
    ManagementService,
    build_management_request,
    build_signed_request,
)
from protocol.soap import build_soap_request, parse_fault
from security_server.management import _fetch_ocsp, register_server
from security_server.server import SecurityServer
from security_server.serverconf import ServerConf
from security_server.token import SoftToken

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NEWCOMER = ClientId("DEMO", "GOV", "3003")
CASEWORK = ClientId("DEMO", "GOV", "3003", "CASEWORK")
STRANGER = ClientId("DEMO", "GOV", "9999")
SERVER_ID = SecurityServerId(NEWCOMER, "ss-newcomer")


def xgate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"XGATE_PIN": PIN})


async def run(*args: str) -> Result:
    """The CLI in a worker thread: its asyncio.run must not meet our loop."""
    return await asyncio.to_thread(xgate, *args)


def central(ecosystem: Ecosystem) -> str:
    return str(ecosystem.directory / "central")


async def pending(ecosystem: Ecosystem) -> list[dict[str, object]]:
    result = await run(
        "central", "requests", "--dir", central(ecosystem), "--state", "submitted"
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


async def issue(
    ecosystem: Ecosystem, csr: Path, kind: str, out: Path, member: str | None
) -> Result:
    extra = ["--member", member] if member else []
    return await run(
        "central", "cert-issue", "--dir", central(ecosystem), str(csr),
        "--kind", kind, "--out", str(out), *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def newcomer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("newcomer") / "ss"


async def test_a_third_server_joins_and_calls(
    ecosystem: Ecosystem, newcomer_dir: Path
) -> None:
    directory = str(newcomer_dir)
    client_port, server_port, ocsp_port = free_ports(3)

    added = await run(
        "central", "member-add", "--dir", central(ecosystem), "GOV/3003",
        "--name", "Case Work Agency",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    init = await run(
        "server", "init", "--dir", directory, "--anchor", str(ecosystem.anchor),
        "--owner", "GOV/3003", "--code", "ss-newcomer", "--bind", HOST,
        "--client-port", str(client_port), "--server-port", str(server_port),
        "--ocsp-port", str(ocsp_port),
    )  # fmt: skip
    assert init.exit_code == 0, init.output

    csr_dir = newcomer_dir / "csr"
    auth_pem, sign_pem = newcomer_dir / "auth.pem", newcomer_dir / "sign.pem"
    issued = [
        await issue(ecosystem, csr_dir / "auth.csr", "auth", auth_pem, None),
        await issue(ecosystem, csr_dir / "sign-GOV-3003.csr", "sign", sign_pem, "GOV/3003"),
    ]  # fmt: skip
    for pem in (auth_pem, sign_pem):
        imported = await run("server", "cert-import", "--dir", directory, str(pem))
        assert imported.exit_code == 0, imported.output
    assert all(r.exit_code == 0 for r in issued), [r.output for r in issued]

    registered = await run("server", "register", "--dir", directory)
    client_reg = await run(
        "server", "register", "--dir", directory, "--client", "GOV/3003/CASEWORK"
    )
    assert registered.exit_code == 0, registered.output
    assert client_reg.exit_code == 0, client_reg.output
    waiting = await pending(ecosystem)
    assert [r["service"] for r in waiting] == ["authCertReg", "clientReg"]

    for item in waiting:
        approved = await run(
            "central", "request-approve", "--dir", central(ecosystem), str(item["id"])
        )
        assert approved.exit_code == 0, approved.output
    assert await pending(ecosystem) == []

    await ecosystem.central.regenerate()
    provider = ecosystem.register_server.runtime
    assert provider is not None
    await provider.conf_client.download()
    grant = ServerConf(ecosystem.register_server.directory)
    try:
        grant.grant(SOAP_SERVICE, CASEWORK)
    finally:
        grant.close()

    server = SecurityServer(newcomer_dir, PIN, clock=ecosystem.central.clock)
    await server.start()
    try:
        conf = server.runtime.conf_client.current if server.runtime else None
        assert conf is not None and conf.is_client_of(SERVER_ID, CASEWORK)
        status, body = await call(client_port)
    finally:
        await server.stop()
    assert status == 200, body[:500]
    assert b"Fault" not in body, body[:500]

    log = await run("central", "audit-log", "--dir", central(ecosystem))
    assert log.exit_code == 0, log.output
    actions = [line.split("\t")[2] for line in log.output.splitlines()]
    assert actions == ["member-add", "request-approve", "request-approve"]


async def call(client_port: int) -> tuple[int, bytes]:
    body = etree.Element(f"{{{NS}}}checkDigitalId", nsmap={"pr": NS})
    etree.SubElement(body, f"{{{NS}}}personCode").text = "38001010000"
    request = build_soap_request(CASEWORK, SOAP_SERVICE, f"mgmt-{uuid.uuid4()}", body)
    headers = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://{HOST}:{client_port}/", data=request, headers=headers
        ) as response:
            return response.status, await response.read()


# -- refusals ---------------------------------------------------------------------


async def test_duplicate_registration_refused(
    ecosystem: Ecosystem, newcomer_dir: Path
) -> None:
    again = await run("server", "register", "--dir", str(newcomer_dir))
    client_again = await run(
        "server",
        "register",
        "--dir",
        str(newcomer_dir),
        "--client",
        "GOV/3003/CASEWORK",
    )
    assert again.exit_code != 0 and "[DuplicateRequest]" in again.output, again.output
    assert "[DuplicateRequest]" in client_again.output, client_again.output
    assert await pending(ecosystem) == []


async def test_request_signed_by_the_wrong_member_refused(
    ecosystem: Ecosystem, newcomer_dir: Path
) -> None:
    # clientReg for the population register's subsystem, signed by GOV/3003.
    token = SoftToken(newcomer_dir / "token")
    token.login(PIN)
    victim = ClientId("DEMO", "GOV", "1001", "REGISTRY")
    request = ManagementRequest(ManagementService.CLIENT_REG, SERVER_ID, client=victim)
    status, body = await post_signed(ecosystem, newcomer_dir, token, request)
    assert status == 500
    assert parse_fault(body).code == "ManagementSenderMismatch"
    assert await pending(ecosystem) == []


async def test_unknown_member_refused(
    ecosystem: Ecosystem, newcomer_dir: Path, tmp_path: Path
) -> None:
    # The CA issues a sign cert for GOV/9999, but no such member is registered.
    token = SoftToken(newcomer_dir / "token")
    token.login(PIN)
    csr = tmp_path / "stranger.csr"
    csr.write_bytes(token.generate_sign_key(STRANGER))
    pem = tmp_path / "stranger.pem"
    issued = await issue(ecosystem, csr, "sign", pem, "GOV/9999")
    assert issued.exit_code == 0, issued.output
    token.import_certificate(pem.read_bytes())

    with pytest.raises(RemoteFault) as refused:
        await register_server(
            newcomer_dir,
            PIN,
            client=ClientId("DEMO", "GOV", "9999", "SUB"),
            clock=ecosystem.central.clock,
        )
    assert refused.value.full_code == "UnknownMember"


async def test_csr_for_another_member_refused(
    ecosystem: Ecosystem, newcomer_dir: Path, tmp_path: Path
) -> None:
    refused = await issue(
        ecosystem,
        newcomer_dir / "csr" / "sign-GOV-3003.csr",
        "sign",
        tmp_path / "x.pem",
        "GOV/1001",
    )
    assert refused.exit_code != 0
    assert "[InvalidRequest]" in refused.output or "Csr" in refused.output, (
        refused.output
    )
    assert not (tmp_path / "x.pem").exists()


async def test_reject_and_unknown_request(ecosystem: Ecosystem) -> None:
    missing = await run(
        "central", "request-approve", "--dir", central(ecosystem), "999"
    )
    done = await run("central", "request-reject", "--dir", central(ecosystem), "1")
    assert "[UnknownRequest]" in missing.output, missing.output
    assert "[RequestNotPending]" in done.output, done.output


async def post_signed(
    ecosystem: Ecosystem, directory: Path, token: SoftToken, request: ManagementRequest
) -> tuple[int, bytes]:
    from security_server.management import _global_conf

    async with aiohttp.ClientSession() as session:
        conf = await _global_conf(directory, session, ecosystem.central.clock)
        assert conf.private is not None
        key, cert = token.sign_key(NEWCOMER)
        ocsp = await _fetch_ocsp(session, conf, cert, ecosystem.central.clock())
        soap = build_management_request(
            request,
            sender=NEWCOMER,
            provider=conf.private.management_service.provider,
            query_id="wrong-member",
        )
        body, content_type = build_signed_request(
            soap,
            owner_key=key,
            sign_cert=pki.cert_der(cert),
            ocsp_response=ocsp,
            boundary="wrong-member-boundary",
        )
        async with session.post(
            conf.private.management_service.auth_cert_reg_address,
            data=body,
            headers={"Content-Type": content_type},
        ) as response:
            return response.status, await response.read()
