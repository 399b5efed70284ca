"""Core: the trust decisions on the message path.

Specs: transport.md §3 and §7.4, certificates-ocsp.md §6-§7. Each function
takes a verified global configuration snapshot and the time of judgement, and
either returns what it established or raises a coded error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from . import pki
from .errors import (
    CertificateError,
    SignatureVerificationError,
    SslAuthenticationFailed,
    XRoadError,
)
from .globalconf import GlobalConf, SecurityServer
from .identifiers import ClientId
from .signature import VerifiedSignature, verify_signature


@dataclass(frozen=True, slots=True)
class SignedParts:
    """What a message carries for its signature check."""

    signature: bytes
    part_digests: Mapping[str, bytes]
    hash_chain_result: bytes | None = None
    hash_chain: bytes | None = None


def verify_message_signature(
    parts: SignedParts, *, signer: ClientId, global_conf: GlobalConf, at: datetime
) -> VerifiedSignature:
    """Check a message signature and that it was made by ``signer``'s member.

    The signing certificate must come from an approved CA of the signer's
    instance, decode to the signer's member under that CA's profile, and be
    valid at ``at`` with a fresh, good OCSP response from the signature.

    :raises SignatureVerificationError: with ``detail`` naming the failed check.
    """
    try:
        verified = verify_signature(
            parts.signature,
            dict(parts.part_digests),
            hash_chain_result=parts.hash_chain_result,
            hash_chain=parts.hash_chain,
        )
    except XRoadError as err:
        raise SignatureVerificationError(err.message, detail=err.full_code) from err

    cert = verified.signing_cert
    approved = global_conf.approved_ca_for(cert, signer.instance)
    if approved is None or approved.authentication_only:
        raise SignatureVerificationError(
            "Certificate is not issued by approved certification service provider.",
            detail="CertValidation",
        )
    try:
        pki.check_sign_cert_usage(cert)
        member = pki.decode_member(cert, approved.profile, signer.instance)
    except XRoadError as err:
        raise SignatureVerificationError(
            err.message, detail="IncorrectCertificate"
        ) from err
    if member != signer.member:
        raise SignatureVerificationError(
            f"signing certificate belongs to {member}, expected {signer.member}",
            detail="IncorrectCertificate",
        )

    _check_certificate(
        cert,
        global_conf=global_conf,
        instance=signer.instance,
        ocsp_responses=verified.ocsp_responses,
        at=at,
        error=SignatureVerificationError,
    )
    return verified


def check_auth_certificate(
    cert: x509.Certificate,
    *,
    ocsp_responses: list[bytes],
    global_conf: GlobalConf,
    instance: str,
    at: datetime,
) -> SecurityServer:
    """Check a peer's TLS authentication certificate; return the server it belongs to.

    :raises SslAuthenticationFailed: the certificate is not an approved,
        registered and currently valid authentication certificate.
    """
    try:
        pki.check_auth_cert_usage(cert)
    except XRoadError as err:
        raise SslAuthenticationFailed(err.message) from err
    server = global_conf.server_for_auth_cert(cert)
    if server is None:
        raise SslAuthenticationFailed(
            "authentication certificate is not registered for any security server"
        )
    _check_certificate(
        cert,
        global_conf=global_conf,
        instance=instance,
        ocsp_responses=ocsp_responses,
        at=at,
        error=SslAuthenticationFailed,
    )
    return server


def _check_certificate(
    cert: x509.Certificate,
    *,
    global_conf: GlobalConf,
    instance: str,
    ocsp_responses: list[bytes],
    at: datetime,
    error: type[XRoadError],
) -> None:
    try:
        pki.verify_certificate(
            cert,
            ca_certs=global_conf.ca_certs(instance),
            ocsp_responses=ocsp_responses,
            at=at,
            freshness_seconds=global_conf.ocsp_freshness_seconds,
            ocsp_responder_certs=_responders_for(cert, global_conf, instance),
        )
    except CertificateError as err:
        raise error(err.message, detail=_detail(err)) from err
    except XRoadError as err:
        raise error(err.message, detail="CertValidation") from err


def _responders_for(
    cert: x509.Certificate, global_conf: GlobalConf, instance: str
) -> list[x509.Certificate]:
    """The OCSP responders configured for the CA that issued ``cert``.

    certificates-ocsp.md §5 step 4(a): another CA's responder may not vouch
    for this CA's certificates (the CA itself and its delegates still may).
    """
    approved = global_conf.approved_ca_for(cert, instance)
    if approved is None:
        return []
    issuers = [ca for ca in approved.certs if ca.subject == cert.issuer]
    infos = approved.ocsp_for(issuers[0]) if issuers else approved.all_ocsp()
    return [info.cert for info in infos if info.cert is not None]


def _detail(err: XRoadError) -> str:
    return "CertValidation" if err.code == "InternalError" else err.full_code
