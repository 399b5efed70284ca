"""Core: OCSP requests, responses and their verification (RFC 6960).

Follows certificates-ocsp.md §4 (SHA-1 CertID, no nonce) and §5 (the seven
verification steps at a given time *T*). Bytes in, value objects out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import CertificateError, IncorrectValidationInfo, InvalidRequest

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
DEFAULT_FRESHNESS_SECONDS = 3600  # certificates-ocsp.md §8


class OCSPCertStatus(StrEnum):
    """The certStatus of a SingleResponse, spelled as RFC 6960 does."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


_TO_X509_STATUS = {
    OCSPCertStatus.GOOD: x509_ocsp.OCSPCertStatus.GOOD,
    OCSPCertStatus.REVOKED: x509_ocsp.OCSPCertStatus.REVOKED,
    OCSPCertStatus.UNKNOWN: x509_ocsp.OCSPCertStatus.UNKNOWN,
}
_FROM_X509_STATUS = {v: k for k, v in _TO_X509_STATUS.items()}

# responseStatus values other than successful (RFC 6960, 4.2.1).
_ERROR_STATUSES = {
    "malformed_request": x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "internal_error": x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "try_later": x509_ocsp.OCSPResponseStatus.TRY_LATER,
    "sig_required": x509_ocsp.OCSPResponseStatus.SIG_REQUIRED,
    "unauthorized": x509_ocsp.OCSPResponseStatus.UNAUTHORIZED,
}


class MalformedOCSPRequest(InvalidRequest):
    code = "MalformedOCSPRequest"


class CertValidationError(CertificateError):
    """The OCSP response is valid but does not say ``good`` (§5 step 7).

    ``status`` is the reported status; ``revoked_at`` and ``reason`` are set
    for a revoked certificate.
    """

    code = "CertValidation"

    def __init__(
        self,
        message: str,
        *,
        status: OCSPCertStatus,
        revoked_at: datetime | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.status = status
        self.revoked_at = revoked_at
        self.reason = reason


class CertID(NamedTuple):
    """The SHA-1 CertID of RFC 6960, 4.1.1 (hash algorithm fixed to SHA-1)."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class OCSPStatus:
    """Our verdict on one verified OCSP response."""

    status: OCSPCertStatus
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    responder_cert: x509.Certificate


# -- small helpers -------------------------------------------------------------


def public_key_sha1(cert: x509.Certificate) -> bytes:
    """SHA-1 over the subjectPublicKey BIT STRING contents (byKey ResponderID)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def cert_id_for(cert_serial: int, issuer: x509.Certificate) -> CertID:
    """Compute the SHA-1 CertID of a serial issued by ``issuer``."""
    name_hash = hashlib.sha1(issuer.subject.public_bytes()).digest()
    return CertID(name_hash, public_key_sha1(issuer), cert_serial)


def verify_signature(
    public_key: object,
    signature: bytes,
    data: bytes,
    hash_algorithm: hashes.HashAlgorithm | None,
    rsa_padding: padding.AsymmetricPadding | None = None,
) -> bool:
    """Check a raw X.509-style signature; True when it verifies.

    RSA defaults to PKCS#1 v1.5 and accepts SHA-1 (LIBRARIES.md, "Note on
    path validation"); ECDSA and EdDSA keys are handled too.
    """
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if hash_algorithm is None:
                return False
            public_key.verify(
                signature, data, rsa_padding or padding.PKCS1v15(), hash_algorithm
            )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if hash_algorithm is None:
                return False
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes passed to protocol.ocsp must be timezone-aware")
    return value


# -- requests ------------------------------------------------------------------


def build_ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """Build an unsigned DER OCSPRequest with a SHA-1 CertID and no nonce (§4)."""
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(
        cert, issuer, hashes.SHA1()
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


def parse_ocsp_request(der: bytes) -> CertID:
    """Parse a DER OCSPRequest with exactly one SHA-1 CertID.

    :raises MalformedOCSPRequest: not DER, several requests, or another hash.
    """
    try:
        request = x509_ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm
        cert_id = CertID(
            request.issuer_name_hash, request.issuer_key_hash, request.serial_number
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedOCSPRequest(f"unreadable OCSP request: {exc}") from exc
    if not isinstance(algorithm, hashes.SHA1):
        raise MalformedOCSPRequest(
            f"CertID hash {algorithm.name!r} is not supported, only SHA-1"
        )
    return cert_id


# -- responses (responder side) ------------------------------------------------


def build_ocsp_response(
    *,
    issuer: x509.Certificate,
    status: OCSPCertStatus | str,
    this_update: datetime,
    responder_key: object,
    responder_cert: x509.Certificate,
    cert: x509.Certificate | None = None,
    cert_serial: int | None = None,
    next_update: datetime | None = None,
    revoked_at: datetime | None = None,
    revocation_reason: x509.ReasonFlags | None = None,
) -> bytes:
    """Build a signed, successful DER OCSPResponse for one certificate.

    The CertID uses SHA-1; pass ``cert`` or just ``cert_serial``. The responder
    is named by key hash, its certificate is embedded, and the response is
    signed with SHA-256 (Ed25519/Ed448 keys sign without a separate hash).
    """
    status = OCSPCertStatus(status)
    if (cert is None) == (cert_serial is None):
        raise ValueError("give exactly one of cert and cert_serial")
    if status is OCSPCertStatus.REVOKED and revoked_at is None:
        raise ValueError("a revoked status needs revoked_at")
    if status is not OCSPCertStatus.REVOKED:
        revoked_at, revocation_reason = None, None

    serial = cert.serial_number if cert is not None else cert_serial
    assert serial is not None
    cert_id = cert_id_for(serial, issuer)
    builder = x509_ocsp.OCSPResponseBuilder().add_response_by_hash(
        cert_id.issuer_name_hash,
        cert_id.issuer_key_hash,
        serial,
        hashes.SHA1(),
        _TO_X509_STATUS[status],
        _utc(this_update),
        _utc(next_update) if next_update is not None else None,
        _utc(revoked_at) if revoked_at is not None else None,
        revocation_reason,
    )
    builder = builder.responder_id(x509_ocsp.OCSPResponderEncoding.HASH, responder_cert)
    builder = builder.certificates([responder_cert])
    algorithm = _signing_hash(responder_key)
    response = builder.sign(responder_key, algorithm)  # type: ignore[arg-type]
    return response.public_bytes(serialization.Encoding.DER)


def _signing_hash(key: object) -> hashes.SHA256 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def build_ocsp_error(status: str) -> bytes:
    """Build an unsuccessful OCSPResponse, e.g. ``malformed_request``.

    Accepted names: malformed_request, internal_error, try_later, sig_required,
    unauthorized (camelCase spellings such as ``malformedRequest`` work too).
    """
    key = "".join("_" + c.lower() if c.isupper() else c for c in status).lstrip("_")
    try:
        response_status = _ERROR_STATUSES[key]
    except KeyError:
        raise ValueError(f"not an OCSP error status: {status!r}") from None
    response = x509_ocsp.OCSPResponseBuilder.build_unsuccessful(response_status)
    return response.public_bytes(serialization.Encoding.DER)


# -- responses (verifier side) -------------------------------------------------


def _load_single(
    der: bytes,
) -> tuple[x509_ocsp.OCSPResponse, x509_ocsp.OCSPSingleResponse]:
    """Return the response and its first SingleResponse (§5 step 1)."""
    try:
        response = x509_ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise IncorrectValidationInfo(f"unreadable OCSP response: {exc}") from exc
    if response.response_status is not x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise IncorrectValidationInfo(
            f"OCSP response status is {response.response_status.name}, not SUCCESSFUL"
        )
    try:
        single = next(iter(response.responses))
    except (StopIteration, ValueError) as exc:
        raise IncorrectValidationInfo("OCSP response holds no SingleResponse") from exc
    return response, single


def _matches(
    single: x509_ocsp.OCSPSingleResponse,
    cert: x509.Certificate,
    issuer: x509.Certificate,
) -> bool:
    try:
        algorithm = single.hash_algorithm
    except UnsupportedAlgorithm:
        return False
    if not isinstance(algorithm, hashes.SHA1):
        return False
    expected = cert_id_for(cert.serial_number, issuer)
    found = CertID(
        single.issuer_name_hash, single.issuer_key_hash, single.serial_number
    )
    return found == expected


def ocsp_response_matches(
    der: bytes, cert: x509.Certificate, issuer: x509.Certificate
) -> bool:
    """True when the response's first CertID is the SHA-1 CertID of ``cert``."""
    try:
        _, single = _load_single(der)
    except IncorrectValidationInfo:
        return False
    return _matches(single, cert, issuer)


def _responder_candidates(
    response: x509_ocsp.OCSPResponse,
    issuer: x509.Certificate,
    responder_certs: list[x509.Certificate] | tuple[x509.Certificate, ...],
) -> list[x509.Certificate]:
    """Certificates that the ResponderID names (§5 step 3)."""
    pool = [*responder_certs, issuer, *response.certificates]
    name = response.responder_name
    key_hash = response.responder_key_hash
    if name is not None:
        return [c for c in pool if c.subject == name]
    return [c for c in pool if key_hash is not None and public_key_sha1(c) == key_hash]


def _is_authorised(
    candidate: x509.Certificate,
    issuer: x509.Certificate,
    responder_certs: list[x509.Certificate] | tuple[x509.Certificate, ...],
) -> bool:
    """§5 step 4: configured responder, the issuing CA, or its OCSPSigning delegate."""
    if candidate in responder_certs or candidate == issuer:
        return True
    if candidate.issuer != issuer.subject:
        return False
    try:
        eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return False
    return verify_signature(
        issuer.public_key(),
        candidate.signature,
        candidate.tbs_certificate_bytes,
        candidate.signature_hash_algorithm,
        _cert_padding(candidate),
    )


def _cert_padding(cert: x509.Certificate) -> padding.AsymmetricPadding | None:
    try:
        params = cert.signature_algorithm_parameters
    except (UnsupportedAlgorithm, ValueError):
        return None
    return params if isinstance(params, padding.AsymmetricPadding) else None


def _find_signer(
    response: x509_ocsp.OCSPResponse,
    issuer: x509.Certificate,
    responder_certs: list[x509.Certificate] | tuple[x509.Certificate, ...],
) -> x509.Certificate:
    candidates = _responder_candidates(response, issuer, responder_certs)
    if not candidates:
        raise IncorrectValidationInfo("OCSP responder certificate not found")
    try:
        algorithm = response.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise IncorrectValidationInfo(f"OCSP signature algorithm: {exc}") from exc
    authorised = [c for c in candidates if _is_authorised(c, issuer, responder_certs)]
    if not authorised:
        raise IncorrectValidationInfo("OCSP responder is not authorised for this CA")
    for candidate in authorised:
        if verify_signature(
            candidate.public_key(),
            response.signature,
            response.tbs_response_bytes,
            algorithm,
        ):
            return candidate
    raise IncorrectValidationInfo("OCSP response signature does not verify")


def verify_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    freshness_seconds: int = DEFAULT_FRESHNESS_SECONDS,
    responder_certs: list[x509.Certificate] | tuple[x509.Certificate, ...] = (),
    verify_next_update: bool = True,
    require_good: bool = True,
) -> OCSPStatus:
    """Verify an OCSP response for ``cert`` at time ``at`` (certificates-ocsp.md §5).

    :param responder_certs: the configured ``ocsp/cert`` entries for the CA.
    :param require_good: raise for revoked/unknown (step 7); if False, return
        the verdict instead.
    :raises IncorrectValidationInfo: steps 1-6 failed.
    :raises CertValidationError: step 7, the status is not good.
    """
    _utc(at)
    response, single = _load_single(der)
    if not _matches(single, cert, issuer):
        raise IncorrectValidationInfo(
            f"OCSP response is not for certificate serial {cert.serial_number:#x}"
        )

    signer = _find_signer(response, issuer, responder_certs)

    this_update = single.this_update_utc
    if this_update < at - timedelta(seconds=freshness_seconds):
        # No upper bound: a thisUpdate later than `at` is accepted (§5 step 5).
        raise IncorrectValidationInfo(
            f"OCSP response is stale: thisUpdate {this_update.isoformat()} is older "
            f"than {freshness_seconds} s before {at.isoformat()}"
        )
    next_update = single.next_update_utc
    if verify_next_update and next_update is not None and next_update < at:
        raise IncorrectValidationInfo(
            f"OCSP response expired: nextUpdate {next_update.isoformat()}"
        )

    verdict = OCSPStatus(
        status=_FROM_X509_STATUS[single.certificate_status],
        this_update=this_update,
        next_update=next_update,
        produced_at=response.produced_at_utc,
        revoked_at=single.revocation_time_utc,
        revocation_reason=(
            single.revocation_reason.value if single.revocation_reason else None
        ),
        responder_cert=signer,
    )
    if require_good:
        check_ocsp_good(verdict, cert)
    return verdict


def check_ocsp_good(verdict: OCSPStatus, cert: x509.Certificate) -> None:
    """Raise :class:`CertValidationError` unless the verdict is ``good``."""
    if verdict.status is OCSPCertStatus.GOOD:
        return
    if verdict.status is OCSPCertStatus.REVOKED:
        when = verdict.revoked_at.isoformat() if verdict.revoked_at else "?"
        message = f"certificate serial {cert.serial_number:#x} was revoked at {when}"
    else:
        message = (
            f"OCSP responder does not know certificate serial {cert.serial_number:#x}"
        )
    raise CertValidationError(
        message,
        status=verdict.status,
        revoked_at=verdict.revoked_at,
        reason=verdict.revocation_reason,
    )
