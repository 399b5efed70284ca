"""Store tests for central_server.management: states, effects, audit log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from central_server.ca import CertificateAuthority
from central_server.management import (
    ManagementCenter,
    RequestState,
    list_audit_log,
)
from central_server.registry import Registry
from central_server.service import CA_DIR, init_central
from protocol import pki
from protocol.errors import XRoadError
from protocol.identifiers import ClientId, SecurityServerId
from protocol.management import (
    ManagementRequest,
    ManagementService,
    build_management_request,
    build_signed_request,
)
from protocol.ocsp import build_ocsp_request

NOW = datetime.now(UTC)
AUTHORITY = ClientId("TEST", "GOV", "0001")
PROVIDER = ClientId("TEST", "GOV", "0001", "MANAGEMENT")
OWNER = ClientId("TEST", "GOV", "1234")
SUB = ClientId("TEST", "GOV", "1234", "BILLING")
SERVER = SecurityServerId(OWNER, "SS-A")


@dataclass
class Setup:
    center: ManagementCenter
    registry: Registry
    ca: CertificateAuthority
    sign_key: object
    auth_key: object
    sign_der: bytes
    auth_der: bytes

    def send(self, request: ManagementRequest) -> int:
        soap = build_management_request(
            request, sender=OWNER, provider=PROVIDER, query_id="q"
        )
        sign_cert = pki.load_certificate(self.sign_der)
        ocsp = self.ca.ocsp_response(
            build_ocsp_request(sign_cert, self.ca.ca_cert), NOW
        )
        is_auth = request.service is ManagementService.AUTH_CERT_REG
        body, content_type = build_signed_request(
            soap,
            owner_key=self.sign_key,
            sign_cert=self.sign_der,
            ocsp_response=ocsp,
            boundary="central-test-boundary",
            auth_key=self.auth_key if is_auth else None,
            auth_cert=self.auth_der if is_auth else None,
        )
        reply = self.center.receive(body, content_type, NOW)
        return int(reply.split(b"requestId>")[1].split(b"<")[0])

    def auth_reg(self) -> ManagementRequest:
        return ManagementRequest(
            ManagementService.AUTH_CERT_REG,
            SERVER,
            address="ss-a.test:5500",
            auth_cert=self.auth_der,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    init_central(
        tmp_path, "TEST", authority_member=AUTHORITY, address="cs.test", now=NOW
    )
    registry = Registry.open(tmp_path)
    registry.add_member(OWNER, "Owner")
    ca = CertificateAuthority.open(tmp_path / CA_DIR)
    sign_key, auth_key = pki.generate_key(), pki.generate_key()
    sign = ca.issue(
        pki.build_csr(sign_key, pki.sign_subject(OWNER)),
        "sign",
        NOW - timedelta(minutes=1),
        expected_member=OWNER,
    )
    auth = ca.issue(
        pki.build_csr(auth_key, pki.auth_subject(SERVER)),
        "auth",
        NOW - timedelta(minutes=1),
    )
    yield Setup(
        ManagementCenter(registry),
        registry,
        ca,
        sign_key,
        auth_key,
        pki.cert_der(sign),
        pki.cert_der(auth),
    )
    registry.close()


def test_auth_cert_reg_waits_then_applies(setup: Setup) -> None:
    request_id = setup.send(setup.auth_reg())
    stored = setup.center.get_request(request_id)
    assert stored.state is RequestState.SUBMITTED
    assert setup.registry.list_security_servers() == []

    setup.center.approve(request_id, actor="alice", now=NOW)

    record = setup.registry.get_security_server(SERVER)
    assert record.address == "ss-a.test:5500"
    assert record.auth_certs == (setup.auth_der,)
    assert setup.center.get_request(request_id).state is RequestState.APPROVED
    assert [(e.actor, e.action, e.result) for e in list_audit_log(setup.registry)] == [
        ("alice", "request-approve", "ok")
    ]


def test_client_reg_creates_subsystem(setup: Setup) -> None:
    setup.center.approve(setup.send(setup.auth_reg()), actor="a", now=NOW)
    request = ManagementRequest(ManagementService.CLIENT_REG, SERVER, client=SUB)
    setup.center.approve(setup.send(request), actor="a", now=NOW)
    assert setup.registry.get_security_server(SERVER).clients == (SUB,)

    deletion = ManagementRequest(ManagementService.CLIENT_DELETION, SERVER, client=SUB)
    deleted = setup.send(deletion)  # applied at once
    assert setup.center.get_request(deleted).state is RequestState.APPROVED
    assert setup.registry.get_security_server(SERVER).clients == ()


def test_reject_leaves_registry_alone(setup: Setup) -> None:
    request_id = setup.send(setup.auth_reg())
    setup.center.reject(request_id, actor="bob", now=NOW)
    assert setup.registry.list_security_servers() == []
    with pytest.raises(XRoadError) as again:
        setup.center.approve(request_id, actor="bob", now=NOW)
    assert again.value.code == "RequestNotPending"
    results = [e.result for e in list_audit_log(setup.registry)]
    assert results == ["ok", "RequestNotPending"]


def test_client_reg_before_server_exists_fails_on_approval(setup: Setup) -> None:
    request = ManagementRequest(ManagementService.CLIENT_REG, SERVER, client=SUB)
    request_id = setup.send(request)
    with pytest.raises(XRoadError) as refused:
        setup.center.approve(request_id, actor="a", now=NOW)
    assert refused.value.code == "UnknownSecurityServer"
    assert setup.center.get_request(request_id).state is RequestState.SUBMITTED


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (
            ManagementRequest(ManagementService.OWNER_CHANGE, SERVER, client=OWNER),
            "UnsupportedManagementService",
        ),
        (
            ManagementRequest(ManagementService.CLIENT_REG, SERVER, client=OWNER),
            "ManagementRequestRefused",
        ),
    ],
    ids=["owner-change", "owner-as-client"],
)
def test_refused_at_receipt(
    setup: Setup, request_: ManagementRequest, code: str
) -> None:
    with pytest.raises(XRoadError) as refused:
        setup.send(request_)
    assert refused.value.code == code
    assert setup.center.list_requests() == []


def test_pending_duplicate_refused(setup: Setup) -> None:
    setup.send(setup.auth_reg())
    with pytest.raises(XRoadError) as refused:
        setup.send(setup.auth_reg())
    assert refused.value.code == "DuplicateRequest"
