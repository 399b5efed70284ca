"""Tests for protocol/trust.py: signer and peer trust decisions, sans-io.

Specs: transport.md §3 and §7.4, certificates-ocsp.md §2, §3, §5 and §6. The
PKI is built here with the project's own helpers: two approved CAs (A and B),
each with its own delegated OCSP responder, an approved authentication-only
CA, a CA the configuration does not know, and one that copies A's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from protocol import ocsp, pki
from protocol.digests import digest
from protocol.errors import SignatureVerificationError, SslAuthenticationFailed
from protocol.globalconf import (
    ApprovedCA,
    GlobalConf,
    Member,
    OCSPInfo,
    SecurityServer,
    SharedParameters,
    auth_cert_hash,
)
from protocol.identifiers import ClientId, SecurityServerId
from protocol.signature import sign_parts
from protocol.trust import SignedParts, check_auth_certificate, verify_message_signature

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
INSTANCE = "INST"
FRESHNESS = 600  # ocspFreshnessSeconds of the verifier's own instance
MEMBER = ClientId(INSTANCE, "GOV", "1234")
SUBSYSTEM = ClientId(INSTANCE, "GOV", "1234", "TAXES")
OTHER_MEMBER = ClientId(INSTANCE, "COM", "5678")
SERVER_ID = SecurityServerId(MEMBER, "SS-A")
MESSAGE = b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"/>'
REVOKED = {"status": "revoked", "revoked_at": NOW - timedelta(days=1)}


# -- the test PKI --------------------------------------------------------------


@dataclass(frozen=True)
class Ca:
    """A CA key and certificate with its delegated OCSP responder."""

    key: object
    cert: x509.Certificate
    responder_key: object
    responder: x509.Certificate


@dataclass(frozen=True)
class Credential:
    """An end-entity key and certificate, and the CA that issued it."""

    key: object
    cert: x509.Certificate
    ca: Ca


@dataclass(frozen=True)
class Pki:
    credentials: Mapping[str, Credential]
    # Who may sign an OCSP response in a test: name -> (key, certificate).
    responders: Mapping[str, tuple[object, x509.Certificate]]
    server: SecurityServer
    global_conf: GlobalConf


def _make_ca(name: str) -> Ca:
    start = NOW - timedelta(days=365)
    key = pki.generate_key()
    cert = pki.build_ca(name, key, start, 3650)
    responder_key = pki.generate_key()
    responder = pki.build_ocsp_signer_cert(key, cert, responder_key, start, 730)
    return Ca(key, cert, responder_key, responder)


def _issue(
    ca: Ca,
    kind: pki.CertKind,
    subject: x509.Name,
    serial: int,
    *,
    start: datetime = NOW - timedelta(days=30),
) -> Credential:
    key = pki.generate_key()
    csr = pki.build_csr(key, subject)
    cert = pki.issue_certificate(csr, kind, ca.key, ca.cert, serial, start, 365)
    return Credential(key, cert, ca)


def _approved(name: str, ca: Ca, *, authentication_only: bool = False) -> ApprovedCA:
    return ApprovedCA(
        name,
        ca.cert,
        (),
        (OCSPInfo(f"http://ocsp.{name.lower()}.example", ca.responder),),
        pki.EJBCA_PROFILE,
        authentication_only=authentication_only,
    )


@pytest.fixture(scope="module")
def test_pki() -> Pki:
    ca_a = _make_ca("Test CA A")
    ca_b = _make_ca("Test CA B")
    ca_auth_only = _make_ca("Test CA Auth")
    ca_unknown = _make_ca("Unknown CA")
    ca_lookalike = _make_ca("Test CA A")  # A's subject DN, another key

    sign = pki.sign_subject(MEMBER)
    auth = pki.auth_subject(SERVER_ID)
    credentials = {
        "sign_a": _issue(ca_a, "sign", sign, 101),
        "sign_b": _issue(ca_b, "sign", sign, 201),
        "sign_auth_only": _issue(ca_auth_only, "sign", sign, 301),
        "sign_unknown": _issue(ca_unknown, "sign", sign, 401),
        "sign_lookalike": _issue(ca_lookalike, "sign", sign, 501),
        "sign_expired": _issue(
            ca_a, "sign", sign, 102, start=NOW - timedelta(days=400)
        ),
        "auth_a": _issue(ca_a, "auth", auth, 103),
        "auth_b": _issue(ca_b, "auth", auth, 202),
        "auth_auth_only": _issue(ca_auth_only, "auth", auth, 302),
        "auth_unknown": _issue(ca_unknown, "auth", auth, 402),
        "auth_expired": _issue(
            ca_a, "auth", auth, 104, start=NOW - timedelta(days=400)
        ),
        "auth_unregistered": _issue(
            ca_a, "auth", pki.auth_subject(SecurityServerId(MEMBER, "SS-X")), 105
        ),
    }
    delegate_key = pki.generate_key()
    delegate = pki.build_ocsp_signer_cert(
        ca_a.key, ca_a.cert, delegate_key, NOW - timedelta(days=30), 365, "A Spare"
    )
    auth_a = credentials["auth_a"]
    responders = {
        "a": (ca_a.responder_key, ca_a.responder),
        "a-ca": (ca_a.key, ca_a.cert),
        "a-unlisted-delegate": (delegate_key, delegate),
        "a-auth-cert": (auth_a.key, auth_a.cert),
        "b": (ca_b.responder_key, ca_b.responder),
        "b-ca": (ca_b.key, ca_b.cert),
    }

    # Every auth-kind certificate except "auth_unregistered" is registered, and
    # so is "sign_a": a usage test must not fail on registration instead.
    registered = [
        c.cert
        for name, c in credentials.items()
        if name.startswith("auth_") and name != "auth_unregistered"
    ] + [credentials["sign_a"].cert]
    server = SecurityServer(
        SERVER_ID,
        "ss-a.inst.example",
        tuple(auth_cert_hash(cert) for cert in registered),
        (SUBSYSTEM,),
    )
    shared = SharedParameters(
        instance=INSTANCE,
        sources=(),
        approved_cas=(
            _approved("A", ca_a),
            _approved("B", ca_b),
            _approved("Auth", ca_auth_only, authentication_only=True),
        ),
        approved_tsas=(),
        members=(
            Member(MEMBER, "Tax Office", ("TAXES",)),
            Member(OTHER_MEMBER, "Company"),
        ),
        security_servers=(server,),
        global_groups=(),
        member_classes=(("GOV", "Government"), ("COM", "Commercial")),
        ocsp_freshness_seconds=FRESHNESS,
    )
    global_conf = GlobalConf(
        INSTANCE, None, {INSTANCE: shared}, NOW + timedelta(hours=1)
    )
    return Pki(credentials, responders, server, global_conf)


def _ocsp_responses(
    test_pki: Pki, name: str, spec: Mapping[str, object] | None
) -> list[bytes]:
    """OCSP evidence for credential ``name``; ``spec`` None means none at all.

    By default the issuing CA's configured responder says good at ``NOW``;
    ``spec`` overrides ``status``, ``this_update``, ``next_update``,
    ``revoked_at`` or picks another ``responder`` by name.
    """
    if spec is None:
        return []
    credential = test_pki.credentials[name]
    args = dict(spec)
    responder = args.pop("responder", None)
    if responder is None:
        key, cert = credential.ca.responder_key, credential.ca.responder
    else:
        key, cert = test_pki.responders[str(responder)]
    args.setdefault("status", "good")
    args.setdefault("this_update", NOW)
    der = ocsp.build_ocsp_response(
        issuer=credential.ca.cert,
        cert=credential.cert,
        responder_key=key,
        responder_cert=cert,
        **args,  # type: ignore[arg-type]
    )
    return [der]


def _signed(test_pki: Pki, name: str, spec: Mapping[str, object] | None) -> SignedParts:
    credential = test_pki.credentials[name]
    signed = sign_parts(
        [("/message.xml", digest(MESSAGE))],
        key=credential.key,  # type: ignore[arg-type]
        cert=credential.cert,
        ocsp_responses=_ocsp_responses(test_pki, name, spec),
        signing_time=NOW - timedelta(seconds=5),
    )
    return SignedParts(signed.signature, {"/message.xml": digest(MESSAGE)})


# -- message signatures (transport.md §7.4, certificates-ocsp.md §3, §5, §6) ----


@pytest.mark.parametrize(
    ("credential", "spec", "signer"),
    [
        ("sign_a", {}, MEMBER),
        ("sign_b", {}, MEMBER),
        ("sign_a", {}, SUBSYSTEM),
        ("sign_a", {"responder": "a-ca"}, MEMBER),
        ("sign_a", {"responder": "a-unlisted-delegate"}, MEMBER),
        ("sign_a", {"this_update": NOW - timedelta(seconds=FRESHNESS)}, MEMBER),
        ("sign_a", {"this_update": NOW + timedelta(minutes=5)}, MEMBER),
    ],
    ids=[
        "ca-a-own-responder",
        "ca-b-own-responder",
        "signer-is-subsystem-of-member",
        "ocsp-by-issuing-ca-itself",
        "ocsp-by-unlisted-delegate-of-issuer",
        "ocsp-exactly-at-freshness-limit",
        "ocsp-this-update-after-now",
    ],
)
def test_signature_accepted(
    test_pki: Pki, credential: str, spec: dict[str, object], signer: ClientId
) -> None:
    parts = _signed(test_pki, credential, spec)

    verified = verify_message_signature(
        parts, signer=signer, global_conf=test_pki.global_conf, at=NOW
    )

    assert verified.signing_cert == test_pki.credentials[credential].cert


@pytest.mark.parametrize(
    ("credential", "spec", "signer", "code"),
    [
        ("sign_a", {}, OTHER_MEMBER, "IncorrectCertificate"),
        ("auth_a", {}, MEMBER, "IncorrectCertificate"),
        ("sign_unknown", {}, MEMBER, "CertValidation"),
        ("sign_lookalike", {}, MEMBER, "CertValidation.InvalidSignature"),
        ("sign_auth_only", {}, MEMBER, "CertValidation"),
        ("sign_a", {}, ClientId("OTHER", "GOV", "1234"), "CertValidation"),
        ("sign_expired", {}, MEMBER, "CertValidation.CertificateExpired"),
        ("sign_a", None, MEMBER, "CertValidation"),
        ("sign_a", REVOKED, MEMBER, "CertValidation"),
        ("sign_a", {"status": "unknown"}, MEMBER, "CertValidation"),
        (
            "sign_a",
            {"this_update": NOW - timedelta(seconds=FRESHNESS + 1)},
            MEMBER,
            "IncorrectValidationInfo",
        ),
        (
            "sign_a",
            {
                "this_update": NOW - timedelta(seconds=60),
                "next_update": NOW - timedelta(seconds=1),
            },
            MEMBER,
            "IncorrectValidationInfo",
        ),
        ("sign_a", {"responder": "b"}, MEMBER, "IncorrectValidationInfo"),
        ("sign_a", {"responder": "b-ca"}, MEMBER, "IncorrectValidationInfo"),
        ("sign_a", {"responder": "a-auth-cert"}, MEMBER, "IncorrectValidationInfo"),
    ],
    ids=[
        "signer-is-another-member",
        "auth-cert-used-to-sign",
        "unknown-ca",
        "unknown-ca-copying-approved-ca-name",
        "authentication-only-ca",
        "signer-instance-has-no-such-ca",
        "cert-expired",
        "no-ocsp-response",
        "ocsp-revoked",
        "ocsp-unknown",
        "ocsp-stale",
        "ocsp-next-update-passed",
        "ocsp-by-ca-b-responder-for-ca-a-cert",
        "ocsp-by-ca-b-itself-for-ca-a-cert",
        "ocsp-by-ca-a-cert-without-ocsp-signing",
    ],
)
def test_signature_refused(
    test_pki: Pki,
    credential: str,
    spec: dict[str, object] | None,
    signer: ClientId,
    code: str,
) -> None:
    parts = _signed(test_pki, credential, spec)

    with pytest.raises(SignatureVerificationError) as info:
        verify_message_signature(
            parts, signer=signer, global_conf=test_pki.global_conf, at=NOW
        )

    assert info.value.full_code == f"SignatureVerification.{code}"


def test_signature_over_other_content_is_refused(test_pki: Pki) -> None:
    signed = _signed(test_pki, "sign_a", {})
    tampered = SignedParts(
        signed.signature, {"/message.xml": digest(MESSAGE + b"<!-- -->")}
    )

    with pytest.raises(SignatureVerificationError) as info:
        verify_message_signature(
            tampered, signer=MEMBER, global_conf=test_pki.global_conf, at=NOW
        )

    assert info.value.full_code == "SignatureVerification.InvalidSignatureValue"


def test_revoked_signing_cert_keeps_the_revocation(test_pki: Pki) -> None:
    parts = _signed(test_pki, "sign_a", REVOKED)

    with pytest.raises(SignatureVerificationError) as info:
        verify_message_signature(
            parts, signer=MEMBER, global_conf=test_pki.global_conf, at=NOW
        )

    cause = info.value.__cause__
    assert isinstance(cause, ocsp.CertValidationError)
    assert cause.status is ocsp.OCSPCertStatus.REVOKED
    assert cause.revoked_at == REVOKED["revoked_at"]


# -- TLS authentication certificates (transport.md §3, certificates-ocsp.md §2) --


@pytest.mark.parametrize(
    ("credential", "spec"),
    [
        ("auth_a", {}),
        ("auth_b", {}),
        ("auth_auth_only", {}),
        ("auth_a", {"responder": "a-ca"}),
    ],
    ids=[
        "ca-a",
        "ca-b",
        "authentication-only-ca",
        "ocsp-by-issuing-ca-itself",
    ],
)
def test_auth_certificate_accepted(
    test_pki: Pki, credential: str, spec: dict[str, object]
) -> None:
    cert = test_pki.credentials[credential].cert

    server = check_auth_certificate(
        cert,
        ocsp_responses=_ocsp_responses(test_pki, credential, spec),
        global_conf=test_pki.global_conf,
        instance=INSTANCE,
        at=NOW,
    )

    assert server == test_pki.server


@pytest.mark.parametrize(
    ("credential", "spec", "instance", "code"),
    [
        ("auth_unregistered", {}, INSTANCE, ""),
        ("sign_a", {}, INSTANCE, ""),
        ("auth_a", REVOKED, INSTANCE, ".CertValidation"),
        ("auth_a", {"status": "unknown"}, INSTANCE, ".CertValidation"),
        ("auth_a", None, INSTANCE, ".CertValidation"),
        (
            "auth_a",
            {"this_update": NOW - timedelta(seconds=FRESHNESS + 1)},
            INSTANCE,
            ".IncorrectValidationInfo",
        ),
        ("auth_a", {"responder": "b"}, INSTANCE, ".IncorrectValidationInfo"),
        ("auth_unknown", {}, INSTANCE, ".CertValidation"),
        ("auth_a", {}, "OTHER", ".CertValidation"),
        ("auth_expired", {}, INSTANCE, ".CertValidation.CertificateExpired"),
    ],
    ids=[
        "not-registered",
        "sign-cert-without-auth-usage",
        "ocsp-revoked",
        "ocsp-unknown",
        "no-ocsp-response",
        "ocsp-stale",
        "ocsp-by-ca-b-responder-for-ca-a-cert",
        "unknown-ca",
        "ca-not-approved-in-instance",
        "cert-expired",
    ],
)
def test_auth_certificate_refused(
    test_pki: Pki,
    credential: str,
    spec: dict[str, object] | None,
    instance: str,
    code: str,
) -> None:
    cert = test_pki.credentials[credential].cert

    with pytest.raises(SslAuthenticationFailed) as info:
        check_auth_certificate(
            cert,
            ocsp_responses=_ocsp_responses(test_pki, credential, spec),
            global_conf=test_pki.global_conf,
            instance=instance,
            at=NOW,
        )

    assert info.value.full_code == f"SslAuthenticationFailed{code}"
