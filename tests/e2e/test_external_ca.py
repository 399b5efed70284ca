"""An external CA approved by the governing authority signs for the consumer.

certificates-ocsp.md §1, §6; global-configuration.md §7. A second CA, with its
own in-process OCSP responder, issues a new signing certificate from the
consumer's existing CSR; once the configuration is republished and downloaded
calls signed with it verify. A CA that is not approved is refused.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from central_server.ca import CertificateAuthority, ocsp_app
from cli.main import main
from demo.ecosystem import AGENCY, HOST, Ecosystem, _serve_app, free_ports
from protocol import ocsp, pki
from protocol.digests import digest
from protocol.errors import SignatureVerificationError
from protocol.signature import sign_parts
from protocol.trust import SignedParts, verify_message_signature
from tests.e2e.test_conf_outage import call

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PARTS = {"/message.xml": digest(b"<e/>")}


async def republish(ecosystem: Ecosystem) -> None:
    await ecosystem.central.regenerate()
    for server in (ecosystem.agency_server, ecosystem.register_server):
        await server.runtime.conf_client.download()


async def test_external_ca_signs_for_the_consumer(ecosystem: Ecosystem, clock) -> None:
    port = free_ports(1)[0]
    external = CertificateAuthority.create(
        ecosystem.directory / "external-ca",
        "DEMO",
        clock(),
        name="External Qualified CA",
        ocsp_url=f"http://{HOST}:{port}/",
    )
    runner = await _serve_app(ocsp_app(external, clock), port)
    try:
        pem = ecosystem.directory / "external-ca.pem"
        pem.write_bytes(external.ca_cert.public_bytes(serialization.Encoding.PEM))
        args = ["central", "ca-add", "--dir", str(ecosystem.central.dir)]
        args += ["--name", "External", "--cert", str(pem)]
        args += ["--ocsp-url", f"http://{HOST}:{port}/"]
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        assert result.exit_code == 0, result.output

        csr = ecosystem.directory / "ss-agency" / "csr" / "sign-GOV-2002.csr"
        cert = external.issue(csr.read_bytes(), "sign", clock(), AGENCY)
        runtime = ecosystem.agency_server.runtime
        runtime.token.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
        await republish(ecosystem)
        assert await runtime.ocsp.refresh(force=True)
        assert runtime.ocsp.get(cert) is not None  # from the external responder

        assert await call(ecosystem, "external-ca") == ""
        assert runtime.token.sign_key(AGENCY)[1] == cert
    finally:
        await runner.cleanup()


async def test_certificate_of_an_unapproved_ca_is_refused(
    ecosystem: Ecosystem, clock
) -> None:
    now = clock()
    rogue = CertificateAuthority.create(
        ecosystem.directory / "rogue-ca",
        "DEMO",
        now - timedelta(minutes=1),
        name="Rogue CA",
    )
    key = pki.generate_key()
    csr = pki.build_csr(key, pki.sign_subject(AGENCY))
    cert = rogue.issue(csr, "sign", now - timedelta(minutes=1), AGENCY)
    response = rogue.ocsp_response(ocsp.build_ocsp_request(cert, rogue.ca_cert), now)
    signed = sign_parts(
        list(PARTS.items()),
        key=key,
        cert=cert,
        ocsp_responses=[response],
        signing_time=now,
    )
    provider_conf = ecosystem.register_server.runtime.conf_client.current
    with pytest.raises(SignatureVerificationError) as info:
        verify_message_signature(
            SignedParts(signed.signature, PARTS),
            signer=AGENCY,
            global_conf=provider_conf,
            at=now,
        )
    assert info.value.full_code == "SignatureVerification.CertValidation"
    assert "not issued by approved certification service provider" in str(
        info.value.message
    )
