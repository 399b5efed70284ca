"""End to end: revocation and configuration signing-key rotation, seen from outside.

The ecosystem is shared by the whole module, so the order matters: the
standard-tool checks and the key rotation come first, the signing
certificate is revoked and then replaced, and the provider's authentication
certificate is revoked last of all.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from central_server.ca import CertificateAuthority
from central_server.publisher import ConfSigningKeys
from central_server.service import CA_DIR
from cli.main import main
from demo.ecosystem import (
    AGENCY,
    BENEFITS_SUBSYSTEM,
    HOST,
    PIN,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    free_ports,
)
from demo.story import demo_json
from protocol.confdir import parse_signed_directory
from protocol.errors import GlobalConfError
from protocol.identifiers import ServiceId
from protocol.soap import build_soap_request
from security_server.confclient import ConfClient
from security_server.peers import PEER_OCSP_REUSE
from security_server.server import SecurityServer
from security_server.serverconf import ServerConf
from security_server.token import SoftToken

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NS = "urn:xgate:test:trust"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PROBE = ServiceId(REGISTRY_SUBSYSTEM, "trustProbe")
RECEIVED = web.AppKey("received", list)
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not on PATH")


# -- a service that counts what reaches it ----------------------------------------


async def answer_probe(request: web.Request) -> web.Response:
    """Echo the SOAP header back with a one-element answer."""
    raw = await request.read()
    request.app[RECEIVED].append(raw)
    envelope = etree.fromstring(raw)
    out = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV})
    out.append(envelope.find(f"{{{SOAP_ENV}}}Header"))
    body = etree.SubElement(out, f"{{{SOAP_ENV}}}Body")
    etree.SubElement(body, f"{{{NS}}}trustProbeResponse", nsmap={"t": NS}).text = "ok"
    return web.Response(
        body=etree.tostring(out, xml_declaration=True, encoding="UTF-8"),
        headers={"Content-Type": "text/xml; charset=UTF-8"},
    )


@pytest.fixture(scope="module")
def received() -> list[bytes]:
    return []


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def probe_service(ecosystem: Ecosystem, received: list[bytes]):
    app = web.Application()
    app[RECEIVED] = received
    app.router.add_post("/probe", answer_probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, HOST, port).start()
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        serverconf.add_service(PROBE, kind="SOAP", url=f"http://{HOST}:{port}/probe")
        serverconf.grant(PROBE, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()
    yield
    await runner.cleanup()


async def call_probe(ecosystem: Ecosystem) -> tuple[int, bytes]:
    body = etree.Element(f"{{{NS}}}trustProbe", nsmap={"t": NS})
    request = build_soap_request(
        BENEFITS_SUBSYSTEM, PROBE, f"trust-{uuid.uuid4()}", body
    )
    headers = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/", data=request, headers=headers
        ) as response:
            return response.status, await response.read()


def fault_code(body: bytes) -> str | None:
    fault = etree.fromstring(body).find(f".//{{{SOAP_ENV}}}Fault")
    return None if fault is None else (fault.findtext("faultcode") or "")


def xgate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def central_dir(ecosystem: Ecosystem) -> Path:
    return ecosystem.directory / "central"


async def refresh_ocsp(ecosystem: Ecosystem) -> None:
    for server in (ecosystem.register_server, ecosystem.agency_server):
        assert server.runtime is not None
        await server.runtime.ocsp.refresh(force=True)


async def openssl(*args: str, stdin: bytes = b"") -> tuple[int, str]:
    """Run openssl without blocking the loop the servers run on."""
    assert OPENSSL is not None
    process = await asyncio.create_subprocess_exec(
        OPENSSL,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(stdin), 15)
    return process.returncode or 0, output.decode("utf-8", "replace")


# -- 1. the standard tools agree with us --------------------------------------------


@needs_openssl
async def test_openssl_ocsp_says_good_then_revoked(
    ecosystem: Ecosystem, tmp_path: Path
) -> None:
    demo = demo_json(ecosystem)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(issue_spare_auth_cert(ecosystem))
    query = (
        *("ocsp", "-issuer", str(demo["ca_cert"]), "-cert", str(leaf)),
        *("-url", str(demo["ocsp_url"]), "-CAfile", str(demo["ca_cert"])),
        "-no_nonce",
    )

    before_rc, before = await openssl(*query)
    serial = f"{x509.load_pem_x509_certificate(leaf.read_bytes()).serial_number:x}"
    revoked = xgate(
        "central", "cert-revoke", "--dir", str(central_dir(ecosystem)), serial
    )
    after_rc, after = await openssl(*query)

    assert before_rc == 0, before
    assert f"{leaf}: good" in before
    assert "Response verify OK" in before
    assert revoked.exit_code == 0, revoked.output
    assert after_rc == 0, after
    assert f"{leaf}: revoked" in after


def issue_spare_auth_cert(ecosystem: Ecosystem) -> bytes:
    """A second certificate for the consumer's auth key; the token never sees it."""
    csr = (ecosystem.agency_server.directory / "csr" / "auth.csr").read_bytes()
    ca = CertificateAuthority.open(central_dir(ecosystem) / CA_DIR)
    cert = ca.issue(csr, "auth", ecosystem.central.clock())
    return cert.public_bytes(serialization.Encoding.PEM)


@needs_openssl
async def test_openssl_accepts_a_tsa_reply(
    ecosystem: Ecosystem, tmp_path: Path
) -> None:
    demo = demo_json(ecosystem)
    data = tmp_path / "data.txt"
    data.write_bytes(b"evidence stamped by the demo TSA\n")
    query, reply = tmp_path / "query.tsq", tmp_path / "reply.tsr"
    rc, output = await openssl(
        *("ts", "-query", "-data", str(data), "-sha256", "-cert"),
        *("-out", str(query)),
    )
    assert rc == 0, output
    async with aiohttp.ClientSession() as session:
        async with session.post(
            str(demo["tsa_url"]),
            data=query.read_bytes(),
            headers={"Content-Type": "application/timestamp-query"},
        ) as response:
            assert response.status == 200
            reply.write_bytes(await response.read())

    text_rc, text = await openssl("ts", "-reply", "-in", str(reply), "-text")
    verify_rc, verified = await openssl(
        *("ts", "-verify", "-data", str(data), "-in", str(reply)),
        *("-CAfile", str(demo["tsa_cert"])),
    )

    assert text_rc == 0, text
    assert "Status: Granted." in text
    assert verify_rc == 0, verified
    assert "Verification: OK" in verified


@needs_openssl
async def test_openssl_s_client_sees_the_registered_auth_cert(
    ecosystem: Ecosystem, tmp_path: Path
) -> None:
    demo = demo_json(ecosystem)
    addresses = demo["server_proxy_addresses"]
    assert isinstance(addresses, dict)
    # The provider requires a client certificate: present the consumer's.
    consumer = ecosystem.agency_server.runtime
    assert consumer is not None
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    key.write_bytes(
        consumer.token.auth_key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(consumer.token.auth_cert.public_bytes(serialization.Encoding.PEM))

    rc, output = await openssl(
        *("s_client", "-connect", addresses["ss-register"], "-showcerts"),
        *("-cert", str(cert), "-key", str(key), "-tls1_2"),
        stdin=b"Q\n",
    )
    begin = output.index("-----BEGIN CERTIFICATE-----")
    end = output.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    shown = x509.load_pem_x509_certificate(output[begin:end].encode())

    provider = ecosystem.register_server.runtime
    assert provider is not None
    conf = provider.conf_client.current
    assert conf is not None
    registered = conf.server_for_auth_cert(shown)  # type: ignore[attr-defined]
    assert shown == provider.token.auth_cert
    assert registered is not None
    assert registered.id == ecosystem.register_server.settings.server_id


# -- 2. configuration signing-key rotation ---------------------------------------------


async def test_signing_key_rotation_needs_no_new_anchor(
    ecosystem: Ecosystem, tmp_path: Path
) -> None:
    directory = central_dir(ecosystem)
    servers = (ecosystem.register_server, ecosystem.agency_server)
    old_id = ConfSigningKeys.open(directory).active().key_id

    added = xgate("central", "signing-key-add", "--dir", str(directory))
    new = ConfSigningKeys.open(directory).listing()[-1]
    await ecosystem.central.regenerate()
    for server in servers:
        assert server.runtime is not None
        conf = await server.runtime.conf_client.download()
        assert new.cert in conf.internal_verification_certs()

    activated = xgate(
        "central", "signing-key-activate", "--dir", str(directory), new.key_id
    )
    published = (await ecosystem.central.regenerate()).read_bytes()
    for server in servers:
        assert server.runtime is not None
        await server.runtime.conf_client.download()
    status, body = await call_probe(ecosystem)

    assert added.exit_code == 0, added.output
    assert activated.exit_code == 0, activated.output
    assert new.key_id != old_id
    assert parse_signed_directory(published, [new.cert]).signer_cert == new.cert
    assert status == 200 and fault_code(body) is None, body[:400]

    # A server starting from the old anchor, with nothing stored, cannot
    # verify the new signer: it must refuse with a code, not accept.
    newcomer = ConfClient(
        tmp_path / "globalconf", ecosystem.anchor, clock=ecosystem.central.clock
    )
    with pytest.raises(GlobalConfError) as refused:
        await newcomer.download()
    assert refused.value.code == "GlobalConfMissingVerificationCert"
    assert newcomer.current is None


# -- 3. a member's signing certificate is revoked, then replaced ---------------------


async def test_revoked_signing_cert_messages_are_refused(
    ecosystem: Ecosystem, received: list[bytes]
) -> None:
    consumer = ecosystem.agency_server.runtime
    assert consumer is not None
    _, sign_cert = consumer.token.sign_key(AGENCY)
    status, body = await call_probe(ecosystem)
    assert status == 200 and fault_code(body) is None, body[:400]

    revoked = xgate(
        *("central", "cert-revoke", "--dir", str(central_dir(ecosystem))),
        f"{sign_cert.serial_number:x}",
    )
    await refresh_ocsp(ecosystem)
    received.clear()
    _, body = await call_probe(ecosystem)

    assert revoked.exit_code == 0, revoked.output
    assert (fault_code(body) or "").startswith("Server."), body[:400]
    assert received == []


async def test_replaced_signing_cert_is_accepted_again(
    ecosystem: Ecosystem, received: list[bytes]
) -> None:
    csr = ecosystem.agency_server.directory / "csr" / "sign-GOV-2002.csr"
    ca = CertificateAuthority.open(central_dir(ecosystem) / CA_DIR)
    cert = ca.issue(
        csr.read_bytes(), "sign", ecosystem.central.clock(), expected_member=AGENCY
    )
    token = SoftToken(ecosystem.agency_server.directory / "token")
    token.login(PIN)
    token.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
    await refresh_ocsp(ecosystem)
    received.clear()

    status, body = await call_probe(ecosystem)

    assert status == 200 and fault_code(body) is None, body[:400]
    assert len(received) == 1
    consumer = ecosystem.agency_server.runtime
    assert consumer is not None
    assert consumer.token.sign_key(AGENCY)[1] == cert


# -- 4. the provider's authentication certificate is revoked (last) -------------------


async def test_revoked_provider_auth_cert_is_refused_before_sending(
    ecosystem: Ecosystem, received: list[bytes], clock
) -> None:
    status, body = await call_probe(ecosystem)  # the consumer has met the peer
    assert status == 200 and fault_code(body) is None, body[:400]
    provider = ecosystem.register_server.runtime
    assert provider is not None
    serial = provider.token.auth_cert.serial_number

    revoked = xgate(
        "central", "cert-revoke", "--dir", str(central_dir(ecosystem)), f"{serial:x}"
    )
    await refresh_ocsp(ecosystem)
    received.clear()
    # The consumer re-checks a peer's OCSP status every few minutes.
    clock.offset = PEER_OCSP_REUSE + timedelta(seconds=1)
    try:
        _, body = await call_probe(ecosystem)
    finally:
        clock.offset = timedelta()

    assert revoked.exit_code == 0, revoked.output
    assert is_ssl_refusal(body), body[:400]
    assert received == []


async def test_restarted_consumer_refuses_the_revoked_provider(
    ecosystem: Ecosystem, received: list[bytes]
) -> None:
    """With no response cached, the consumer asks the CA and must refuse."""
    provider = ecosystem.register_server.runtime
    assert provider is not None
    record = CertificateAuthority.open(central_dir(ecosystem) / CA_DIR).status(
        provider.token.auth_cert.serial_number
    )
    assert record is not None and record.revoked_at is not None  # revoked above
    old = ecosystem.agency_server
    await old.stop()
    ecosystem.agency_server = SecurityServer(old.directory, PIN, clock=old.clock)
    await ecosystem.agency_server.start()
    received.clear()

    _, body = await call_probe(ecosystem)

    assert is_ssl_refusal(body), body[:400]
    assert received == []


def is_ssl_refusal(body: bytes) -> bool:
    code = fault_code(body) or ""
    return code.startswith("Server.ClientProxy.SslAuthenticationFailed")
