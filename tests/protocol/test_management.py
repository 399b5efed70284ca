"""Core tests for protocol.management: bodies, multipart, signatures, checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from protocol import management as m
from protocol import ocsp, pki
from protocol.globalconf import (
    ApprovedCA,
    GlobalConf,
    ManagementService,
    OCSPInfo,
    PrivateParameters,
    SharedParameters,
)
from protocol.identifiers import ClientId, SecurityServerId

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
INST = "TEST"
OWNER = ClientId(INST, "GOV", "1234")
OTHER = ClientId(INST, "COM", "5555")
SERVER = SecurityServerId(OWNER, "SS-A")
PROVIDER = ClientId(INST, "GOV", "0001", "MANAGEMENT")
BOUNDARY = "mgmt-test-boundary-7f3k9"


@dataclass
class Pki:
    ca_key: object
    ca: x509.Certificate
    keys: dict[str, object]
    certs: dict[str, x509.Certificate]

    def ocsp(self, cert: x509.Certificate) -> bytes:
        return ocsp.build_ocsp_response(
            issuer=self.ca,
            status="good",
            this_update=NOW - timedelta(minutes=1),
            responder_key=self.ca_key,
            responder_cert=self.ca,
            cert=cert,
        )

    def der(self, name: str) -> bytes:
        return pki.cert_der(self.certs[name])


@pytest.fixture(scope="module")
def test_pki() -> Pki:
    ca_key = pki.generate_key()
    ca = pki.build_ca("TEST CA", ca_key, NOW - timedelta(days=1), 365)
    keys: dict[str, object] = {}
    certs: dict[str, x509.Certificate] = {}
    subjects: dict[str, tuple[str, object]] = {
        "owner": ("sign", OWNER),
        "other": ("sign", OTHER),
        "auth": ("auth", SERVER),
    }
    for serial, (name, (kind, ident)) in enumerate(subjects.items(), start=2):
        key = pki.generate_key()
        subject = (
            pki.sign_subject(ident)  # type: ignore[arg-type]
            if kind == "sign"
            else pki.auth_subject(ident)  # type: ignore[arg-type]
        )
        csr = pki.build_csr(key, subject)
        keys[name] = key
        certs[name] = pki.issue_certificate(
            csr,
            kind,
            ca_key,
            ca,
            serial,
            NOW - timedelta(hours=1),
            30,  # type: ignore[arg-type]
        )
    return Pki(ca_key, ca, keys, certs)


def conf_for(p: Pki) -> GlobalConf:
    approved = ApprovedCA(
        "TEST CA", p.ca, (), (OCSPInfo("http://ocsp.test/", p.ca),), pki.EJBCA_PROFILE
    )
    shared = SharedParameters(INST, (), (approved,), (), (), (), (), ())
    private = PrivateParameters(
        INST, (), ManagementService("http://cs.test/managementservice/", None, PROVIDER)
    )
    return GlobalConf(INST, private, {INST: shared}, None)


def client_reg(client: ClientId = OTHER) -> m.ManagementRequest:
    return m.ManagementRequest(m.ManagementService.CLIENT_REG, SERVER, client=client)


def auth_reg(p: Pki) -> m.ManagementRequest:
    return m.ManagementRequest(
        m.ManagementService.AUTH_CERT_REG,
        SERVER,
        address="ss-a.test:5500",
        auth_cert=p.der("auth"),
    )


def signed(
    p: Pki, request: m.ManagementRequest, signer: str = "owner", sender=OWNER
) -> tuple[bytes, str]:
    soap = m.build_management_request(
        request, sender=sender, provider=PROVIDER, query_id="q-1"
    )
    is_auth = request.service is m.ManagementService.AUTH_CERT_REG
    return m.build_signed_request(
        soap,
        owner_key=p.keys[signer],
        sign_cert=p.der(signer),
        ocsp_response=p.ocsp(p.certs[signer]),
        boundary=BOUNDARY,
        auth_key=p.keys["auth"] if is_auth else None,
        auth_cert=p.der("auth") if is_auth else None,
    )


def verify(p: Pki, body: bytes, content_type: str) -> ClientId:
    parsed = m.parse_signed_request(body, content_type)
    return m.verify_management_request(
        parsed, global_conf=conf_for(p), provider=PROVIDER, at=NOW
    )


# -- bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        client_reg(),
        client_reg(ClientId(INST, "COM", "5555", "BILLING")),
        replace(
            client_reg(ClientId(INST, "COM", "5555", "BILLING")),
            subsystem_name="Billing API",
        ),
        m.ManagementRequest(m.ManagementService.CLIENT_DELETION, SERVER, client=OTHER),
        m.ManagementRequest(m.ManagementService.OWNER_CHANGE, SERVER, client=OTHER),
        m.ManagementRequest(
            m.ManagementService.ADDRESS_CHANGE, SERVER, address="10.0.0.7"
        ),
    ],
    ids=["clientReg", "subsystem", "named", "deletion", "ownerChange", "address"],
)
def test_body_round_trip(request_: m.ManagementRequest) -> None:
    soap = m.build_management_request(
        request_, sender=OWNER, provider=PROVIDER, query_id="q-7"
    )
    header, parsed = m.parse_management_request(soap)
    assert parsed == request_
    assert header.client == OWNER
    assert header.service.service_code == request_.service.value


def test_auth_cert_reg_round_trip(test_pki: Pki) -> None:
    body, content_type = signed(test_pki, auth_reg(test_pki))
    parsed = m.parse_signed_request(body, content_type)
    assert parsed.request == auth_reg(test_pki)
    assert parsed.auth_cert == test_pki.der("auth")
    assert parsed.owner_signature.algorithm == "SHA512withRSA"
    assert verify(test_pki, body, content_type) == OWNER


def test_response_round_trip() -> None:
    soap = m.build_management_request(
        client_reg(), sender=OWNER, provider=PROVIDER, query_id="q-9"
    )
    header, _ = m.parse_management_request(soap)
    response = m.build_management_response(soap, 412)
    assert b"clientRegResponse" in response
    assert m.parse_management_response(response, header) == 412

    other = replace(header, query_id="q-10")
    with pytest.raises(m.ManagementRequestError):
        m.parse_management_response(response, other)


@pytest.mark.parametrize(
    "request_",
    [
        m.ManagementRequest(m.ManagementService.CLIENT_REG, SERVER),
        replace(client_reg(), subsystem_name="not for a member"),
        m.ManagementRequest(m.ManagementService.ADDRESS_CHANGE, SERVER),
        m.ManagementRequest(m.ManagementService.ADDRESS_CHANGE, SERVER, address="a b"),
        m.ManagementRequest(m.ManagementService.AUTH_CERT_REG, SERVER, address="h"),
        m.ManagementRequest(
            m.ManagementService.OWNER_CHANGE,
            SERVER,
            client=ClientId(INST, "GOV", "1", "SUB"),
        ),
        client_reg().__class__(
            m.ManagementService.CLIENT_REG,
            SecurityServerId(OWNER, "bad;code"),
            client=OTHER,
        ),
    ],
    ids=["no-client", "name", "no-address", "bad-address", "no-cert", "sub", "id"],
)
def test_malformed_requests_refused(request_: m.ManagementRequest) -> None:
    with pytest.raises(m.ManagementRequestError) as info:
        m.build_management_body(request_)
    assert info.value.code == "InvalidManagementRequest"


def test_unknown_service_refused() -> None:
    soap = m.build_management_request(
        client_reg(), sender=OWNER, provider=PROVIDER, query_id="q"
    )
    soap = soap.replace(b"clientReg", b"clientRename")
    with pytest.raises(m.UnsupportedManagementService) as info:
        m.parse_management_request(soap)
    assert info.value.code == "UnsupportedManagementService"


# -- signatures and verification -----------------------------------------------


def test_client_reg_verifies(test_pki: Pki) -> None:
    assert verify(test_pki, *signed(test_pki, client_reg(), signer="other")) == OTHER


def test_signed_by_wrong_member(test_pki: Pki) -> None:
    body, content_type = signed(test_pki, client_reg(), signer="owner")
    with pytest.raises(m.ManagementSenderMismatch) as info:
        verify(test_pki, body, content_type)
    assert info.value.code == "ManagementSenderMismatch"


def test_sender_must_own_server(test_pki: Pki) -> None:
    body, content_type = signed(test_pki, client_reg(), signer="other", sender=OTHER)
    with pytest.raises(m.ManagementSenderMismatch):
        verify(test_pki, body, content_type)


def test_tampered_soap_fails(test_pki: Pki) -> None:
    body, content_type = signed(test_pki, client_reg(), signer="other")
    with pytest.raises(m.ManagementSignatureError) as info:
        verify(test_pki, body.replace(b"q-1", b"q-2"), content_type)
    assert info.value.code == "InvalidManagementSignature"


def test_auth_cert_for_another_member_refused(test_pki: Pki) -> None:
    # Owner OTHER claims the server of OWNER: sender check refuses it.
    request = replace(auth_reg(test_pki), server=SecurityServerId(OTHER, "SS-A"))
    body, content_type = signed(test_pki, request, signer="owner", sender=OTHER)
    with pytest.raises(m.ManagementSenderMismatch):
        verify(test_pki, body, content_type)


def test_proof_of_possession_required(test_pki: Pki) -> None:
    soap = m.build_management_request(
        auth_reg(test_pki), sender=OWNER, provider=PROVIDER, query_id="q"
    )
    body, content_type = m.build_signed_request(
        soap,
        owner_key=test_pki.keys["owner"],
        sign_cert=test_pki.der("owner"),
        ocsp_response=test_pki.ocsp(test_pki.certs["owner"]),
        boundary=BOUNDARY,
        auth_key=test_pki.keys["other"],  # not the auth cert's key
        auth_cert=test_pki.der("auth"),
    )
    with pytest.raises(m.ManagementSignatureError):
        verify(test_pki, body, content_type)


def test_foreign_ca_refused(test_pki: Pki) -> None:
    stranger_key = pki.generate_key()
    stranger = pki.build_ca("OTHER CA", stranger_key, NOW - timedelta(days=1), 9)
    foreign = Pki(stranger_key, stranger, test_pki.keys, dict(test_pki.certs))
    csr = pki.build_csr(test_pki.keys["other"], pki.sign_subject(OTHER))  # type: ignore[arg-type]
    foreign.certs["other"] = pki.issue_certificate(
        csr, "sign", stranger_key, stranger, 9, NOW - timedelta(hours=1), 9
    )
    body, content_type = signed(foreign, client_reg(), signer="other")
    with pytest.raises(m.ManagementSignatureError):
        verify(test_pki, body, content_type)


def test_wrong_part_count_refused(test_pki: Pki) -> None:
    body, content_type = signed(test_pki, client_reg(), signer="other")
    cut = body.rsplit(b"--" + BOUNDARY.encode(), 2)[0] + b"--" + BOUNDARY.encode()
    with pytest.raises(m.ManagementRequestError):
        m.parse_signed_request(cut + b"--\r\n", content_type)
    with pytest.raises(m.ManagementRequestError):
        m.parse_signed_request(body, "text/xml")
