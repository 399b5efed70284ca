"""Core: certificates, certificate profiles and path checks (certificates-ocsp.md).

Covers key usage (§2), subject DN profiles (§3), issuing (the CA side of our
test and central-server PKI) and verification of a certificate with its OCSP
evidence at a time *T* (§5, §6). Pure: no clock, no disk, no randomness
except key generation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)

from .errors import (
    CertificateError,
    CertNotApproved,
    IncorrectCertificate,
    IncorrectValidationInfo,
    InternalError,
    InvalidRequest,
)
from .identifiers import ClientId, SecurityServerId
from .ocsp import CertValidationError as CertValidationError
from .ocsp import OCSPCertStatus as OCSPCertStatus
from .ocsp import (
    OCSPStatus,
    ocsp_response_matches,
    verify_ocsp_response,
    verify_signature,
)

_IMPL = "ee.ria.xroad.common.certificateprofile.impl."
EJBCA_PROFILE = _IMPL + "EjbcaCertificateProfileInfoProvider"
BASIC_PROFILE = _IMPL + "BasicCertificateProfileInfoProvider"
BASIC_ACME_PROFILE = _IMPL + "BasicACMECertificateProfileInfoProvider"
FIVRK_PROFILE = _IMPL + "FiVRKCertificateProfileInfoProvider"
FO_PROFILE = _IMPL + "FoCertificateProfileInfoProvider"
IS_PROFILE = _IMPL + "IsCertificateProfileInfoProvider"
SK_KLASS3_PROFILE = _IMPL + "SkKlass3CertificateProfileInfoProvider"
SK_ESTEID_PROFILE = _IMPL + "SkEsteIdCertificateProfileInfoProvider"
TEST_PROFILE = _IMPL + "TestCertificateProfileInfoProvider"

DEFAULT_PROFILE = EJBCA_PROFILE
RSA_KEY_SIZE = 2048
MIN_RSA_KEY_SIZE = 2048
ORGANIZATION_IDENTIFIER = ObjectIdentifier("2.5.4.97")

CertKind = Literal["auth", "sign"]

# X-Road subjects carry the instance code in C (DEV, INST, ...), which
# cryptography flags with a UserWarning whenever such a name is built or read.
warnings.filterwarnings(
    "ignore", message="Attribute's length must be >= 2 and <= 2", category=UserWarning
)


# -- errors --------------------------------------------------------------------


class WrongCertUsage(CertificateError):
    code = "WrongCertUsage"  # key usage does not fit the role (§2)


class CannotCreateCertPath(CertificateError):
    code = "CannotCreateCertPath"  # no issuer chain to a trust anchor (§6)


class InvalidCertPath(CertificateError):
    code = "InvalidCertPath"  # the path builds but fails validation (§6)


class UnsupportedProfile(InternalError):
    code = "InternalError"


class InvalidCsr(InvalidRequest):
    code = "InvalidCsr"


# -- loading and hashing -------------------------------------------------------

_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----(.+?)-----END (?:TRUSTED |X509 )?"
    rb"CERTIFICATE-----",
    re.DOTALL,
)


def _first_der_element(data: bytes) -> bytes:
    """Cut the first DER TLV off ``data`` (TRUSTED CERTIFICATE adds aux data)."""
    if len(data) < 2 or data[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        raise ValueError("bad DER length")
    length = int.from_bytes(data[2 : 2 + count], "big")
    return data[: 2 + count + length]


def load_certificate(data: bytes) -> x509.Certificate:
    """Load a certificate from DER, PEM, base64 of DER or base64 of PEM.

    ``BEGIN TRUSTED CERTIFICATE`` armour (OpenSSL) is accepted; its trailing
    trust settings are ignored.

    :raises IncorrectCertificate: none of these forms parses.
    """
    try:
        return _load(data.strip(), depth=0)
    except (ValueError, binascii.Error) as exc:
        raise IncorrectCertificate(f"cannot read certificate: {exc}") from exc


def _load(data: bytes, depth: int) -> x509.Certificate:
    match = _PEM_BLOCK.search(data)
    if match:
        der = base64.b64decode(re.sub(rb"\s+", b"", match.group(1)), validate=True)
        return x509.load_der_x509_certificate(_first_der_element(der))
    if data[:1] == b"\x30":
        # Decoded base64 may carry padding after the certificate (the
        # test-esteid fixture has zero bytes); raw DER input must be exact.
        der = _first_der_element(data) if depth else data
        return x509.load_der_x509_certificate(der)
    if depth > 0:
        raise ValueError("neither PEM nor DER")
    decoded = base64.b64decode(re.sub(rb"\s+", b"", data), validate=True)
    return _load(decoded, depth=1)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def cert_sha256_b64(cert: x509.Certificate) -> str:
    """base64(SHA-256(DER)): the ``authCertHash`` form (§7, §9)."""
    return base64.b64encode(hashlib.sha256(cert_der(cert)).digest()).decode("ascii")


def cert_sha1_hex(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-1 of the DER (OCSP download ``cert`` parameter)."""
    return hashlib.sha1(cert_der(cert)).hexdigest()


def cert_sha256_hex(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER (OCSP download ``cert_hash``)."""
    return hashlib.sha256(cert_der(cert)).hexdigest()


# -- keys, CSRs and subjects ---------------------------------------------------


def generate_key() -> rsa.RSAPrivateKey:
    """Generate an RSA 2048 key, the X-Road default (§2)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)


def build_csr(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, subject: x509.Name
) -> bytes:
    """Build a PKCS#10 CSR for ``subject``, signed with SHA-256; returns DER."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
    signed = csr.sign(key, hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.DER)


def _country(instance: str) -> x509.NameAttribute[str]:
    """C=instance, skipping cryptography's two-letter check for other lengths."""
    if len(instance) == 2:
        return x509.NameAttribute(NameOID.COUNTRY_NAME, instance)
    return x509.NameAttribute(NameOID.COUNTRY_NAME, instance, _validate=False)


def sign_subject(member: ClientId) -> x509.Name:
    """EJBCA-style sign cert subject: C=instance, O=memberClass, CN=memberCode."""
    return x509.Name(
        [
            _country(member.instance),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, member.member_class),
            x509.NameAttribute(NameOID.COMMON_NAME, member.member_code),
        ]
    )


def auth_subject(server: SecurityServerId) -> x509.Name:
    """EJBCA-style auth cert subject: C=instance, CN=serverCode.

    Nothing else is added: auth certs are bound to servers by hash only, and a
    member-like O/CN pair would let an auth subject decode as a member.
    """
    return x509.Name(
        [
            _country(server.owner.instance),
            x509.NameAttribute(NameOID.COMMON_NAME, server.server_code),
        ]
    )


# -- the CA side ---------------------------------------------------------------


def _ski(key: object) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)  # type: ignore[arg-type]


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(
        ca_cert.public_key()  # type: ignore[arg-type]
    )


def _key_usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    )
    flags = {name: bits.get(name, False) for name in names}
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


def build_ca(
    name: str | x509.Name,
    key: object,
    now: datetime,
    days: int,
    serial: int | None = None,
) -> x509.Certificate:
    """Build a self-signed root CA certificate valid ``days`` from ``now``."""
    subject = name if isinstance(name, x509.Name) else _cn(name)
    public_key = key.public_key()  # type: ignore[attr-defined]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(_ski(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def build_intermediate_ca(
    name: str | x509.Name,
    key: object,
    issuer_key: object,
    issuer_cert: x509.Certificate,
    now: datetime,
    days: int,
    serial: int | None = None,
) -> x509.Certificate:
    """Issue an intermediate CA certificate below ``issuer_cert`` (§1, §6)."""
    subject = name if isinstance(name, x509.Name) else _cn(name)
    public_key = key.public_key()  # type: ignore[attr-defined]
    not_after = min(now + timedelta(days=days), issuer_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(issuer_cert), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def build_ocsp_signer_cert(
    ca_key: object,
    ca_cert: x509.Certificate,
    key: object,
    now: datetime,
    days: int,
    name: str | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Issue a delegated OCSP responder certificate (EKU OCSPSigning, §2)."""
    subject = _cn(name or _common_name(ca_cert) + " OCSP")
    public_key = key.public_key()  # type: ignore[attr-defined]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load a PKCS#10 CSR from DER or PEM and check its self-signature.

    :raises InvalidCsr: unreadable or badly signed.
    """
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        valid = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise InvalidCsr(f"cannot read certificate request: {exc}") from exc
    if not valid:
        raise InvalidCsr("certificate request signature does not verify")
    return csr


def _check_csr_key(csr: x509.CertificateSigningRequest) -> None:
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_KEY_SIZE:
            raise InvalidCsr(f"RSA key of {key.key_size} bits is too short")
    elif not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidCsr(f"key type {type(key).__name__} is not supported")


def _check_expected(
    subject: x509.Name, kind: CertKind, expected: ClientId | SecurityServerId
) -> None:
    if kind == "sign":
        if not isinstance(expected, ClientId):
            raise InvalidCsr("a sign certificate is checked against a member id")
        try:
            member = decode_subject(subject, EJBCA_PROFILE, expected.instance)
        except CertificateError as exc:
            raise InvalidCsr(f"request subject: {exc.message}") from exc
        if member != expected.member:
            raise InvalidCsr(
                f"request subject names {member}, expected {expected.member}"
            )
        return
    if not isinstance(expected, SecurityServerId):
        raise InvalidCsr("an auth certificate is checked against a security server id")
    fields = _subject_fields(subject)
    found = (fields.get("C"), fields.get("CN"))
    wanted = (expected.owner.instance, expected.server_code)
    if found != wanted:
        raise InvalidCsr(
            f"request subject {subject.rfc4514_string()!r} is not {expected}"
        )


def issue_certificate(
    csr_der_or_pem: bytes,
    kind: CertKind,
    ca_key: object,
    ca_cert: x509.Certificate,
    serial: int,
    now: datetime,
    days: int,
    ocsp_url: str | None = None,
    *,
    expected_member: ClientId | SecurityServerId | None = None,
) -> x509.Certificate:
    """Issue an auth or sign certificate for a CSR, applying our profile.

    Sign certs get keyUsage nonRepudiation only. Auth certs get keyUsage
    digitalSignature + keyEncipherment and EKU clientAuth + serverAuth, so
    they pass OpenSSL's ssl_client and ssl_server purpose checks too.

    :raises InvalidCsr: bad CSR, weak key, or subject not ``expected_member``.
    """
    if kind not in ("auth", "sign"):
        raise InvalidCsr(f"certificate kind {kind!r} is not supported")
    if serial <= 0:
        raise ValueError("serial numbers must be positive")
    csr = load_csr(csr_der_or_pem)
    _check_csr_key(csr)
    if expected_member is not None:
        _check_expected(csr.subject, kind, expected_member)

    public_key = csr.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )
    if kind == "sign":
        builder = builder.add_extension(
            _key_usage(content_commitment=True), critical=True
        )
    else:
        usage = _key_usage(digital_signature=True, key_encipherment=True)
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if ocsp_url:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        builder = builder.add_extension(
            x509.AuthorityInformationAccess([access]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]


# -- profiles: subject DN -> member id (§3) ------------------------------------

_SHORT_NAMES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.BUSINESS_CATEGORY: "BUSINESSCATEGORY",
    NameOID.SURNAME: "SN",
    ORGANIZATION_IDENTIFIER: "ORGANIZATIONIDENTIFIER",
}


def _escape(value: str) -> str:
    """RFC 2253 escaping, as the reference sees values (§3)."""
    out = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _subject_fields(name: x509.Name) -> dict[str, str]:
    """Map short names to values; the first in RFC 2253 order wins (§3)."""
    fields: dict[str, str] = {}
    for rdn in reversed(list(name.rdns)):  # RFC 2253 prints the last RDN first
        for attr in rdn:
            key = _SHORT_NAMES.get(attr.oid)
            if key is not None and key not in fields:
                fields[key] = _escape(str(attr.value))
    return fields


def _need(fields: dict[str, str], key: str, profile: str) -> str:
    value = fields.get(key)
    if not value:
        short = profile.rsplit(".", 1)[-1]
        raise IncorrectCertificate(f"subject has no {key} field required by {short}")
    return value


def _ejbca(fields: dict[str, str], profile: str) -> ClientId:
    return ClientId(
        _need(fields, "C", profile),
        _need(fields, "O", profile),
        _need(fields, "CN", profile),
    )


def _require_country(fields: dict[str, str], country: str, profile: str) -> None:
    found = _need(fields, "C", profile)
    if found != country:
        raise IncorrectCertificate(
            f"subject C is {found!r}, the profile requires {country!r}"
        )


def _fivrk(fields: dict[str, str], profile: str, instance: str) -> ClientId:
    if "SERIALNUMBER" in fields:
        _require_country(fields, "FI", profile)
        _need(fields, "O", profile)
        parts = fields["SERIALNUMBER"].split("/")
        if len(parts) != 3 or not all(parts):
            raise IncorrectCertificate(
                f"serialNumber {fields['SERIALNUMBER']!r} is not INSTANCE/server/class"
            )
        return ClientId(parts[0], parts[2], _need(fields, "CN", profile))
    if "OU" in fields:
        _require_country(fields, "FI", profile)
        return ClientId(
            _need(fields, "O", profile), fields["OU"], _need(fields, "CN", profile)
        )
    return _ejbca(fields, profile)


def _faroese_like(fields: dict[str, str], profile: str, country: str) -> ClientId:
    _require_country(fields, country, profile)
    _need(fields, "SERIALNUMBER", profile)
    return ClientId(
        _need(fields, "O", profile),
        _need(fields, "OU", profile),
        _need(fields, "CN", profile),
    )


def _icelandic(fields: dict[str, str], profile: str, instance: str) -> ClientId:
    if "SERIALNUMBER" not in fields and "OU" not in fields:
        return _ejbca(fields, profile)
    return _faroese_like(fields, profile, "IS")


_SK_PREFIXES = (("NTREE-", "COM"), ("GO:EE-", "GOV"), ("NP:EE-", "NGO"))


def _sk_klass3(fields: dict[str, str], profile: str, instance: str) -> ClientId:
    org_id = fields.get("ORGANIZATIONIDENTIFIER")
    if org_id:
        for prefix, member_class in _SK_PREFIXES:
            if org_id.startswith(prefix) and len(org_id) > len(prefix):
                return ClientId(instance, member_class, org_id[len(prefix) :])
        return ClientId(instance, "NEE", org_id)
    serial = _need(fields, "SERIALNUMBER", profile)
    if not re.fullmatch(r"[0-9]{8}", serial):
        raise IncorrectCertificate(
            f"serialNumber {serial!r} is not an 8-digit registry code"
        )
    member_class = (
        "COM" if serial[0] in "123456" else "GOV" if serial[0] == "7" else "NGO"
    )
    if serial[0] == "0":
        raise IncorrectCertificate(f"serialNumber {serial!r} has no member class")
    return ClientId(instance, member_class, serial)


def decode_subject(name: x509.Name, profile: str, instance: str) -> ClientId:
    """Decode a sign certificate subject into a member id under ``profile``.

    ``instance`` is the instance "from context" (the expected signer's); it
    is used only by profiles whose subjects do not carry one.

    :raises IncorrectCertificate: the subject lacks what the profile needs.
    :raises UnsupportedProfile: an unknown profile class name.
    """
    fields = _subject_fields(name)
    if profile == EJBCA_PROFILE:
        return _ejbca(fields, profile)
    if profile in (BASIC_PROFILE, BASIC_ACME_PROFILE):
        return ClientId(
            instance,
            _need(fields, "BUSINESSCATEGORY", profile),
            _need(fields, "SERIALNUMBER", profile),
        )
    if profile == FIVRK_PROFILE:
        return _fivrk(fields, profile, instance)
    if profile == FO_PROFILE:
        return _faroese_like(fields, profile, "FO")
    if profile == IS_PROFILE:
        return _icelandic(fields, profile, instance)
    if profile == SK_KLASS3_PROFILE:
        return _sk_klass3(fields, profile, instance)
    if profile == SK_ESTEID_PROFILE:
        return ClientId(instance, "PERSON", _need(fields, "SERIALNUMBER", profile))
    if profile == TEST_PROFILE:
        return ClientId(instance, "BUSINESS", _need(fields, "CN", profile))
    raise UnsupportedProfile(f"certificate profile {profile!r} is not supported")


def decode_member(cert: x509.Certificate, profile: str, instance: str) -> ClientId:
    """Decode the member id a sign certificate stands for (§3)."""
    return decode_subject(cert.subject, profile, instance)


# -- usage and validity checks -------------------------------------------------


def _extension(cert: x509.Certificate, kind: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def check_sign_cert_usage(cert: x509.Certificate) -> None:
    """Require keyUsage nonRepudiation (contentCommitment) (§2)."""
    usage = _extension(cert, x509.KeyUsage)
    if not isinstance(usage, x509.KeyUsage) or not usage.content_commitment:
        raise WrongCertUsage(
            f"certificate serial {cert.serial_number:#x} is not a signing certificate"
        )


def check_auth_cert_usage(cert: x509.Certificate) -> None:
    """Require EKU clientAuth or keyUsage digitalSignature/keyEnc/dataEnc (§2)."""
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if (
        isinstance(eku, x509.ExtendedKeyUsage)
        and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ):
        return
    usage = _extension(cert, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and (
        usage.digital_signature or usage.key_encipherment or usage.data_encipherment
    ):
        return
    raise WrongCertUsage(
        f"certificate serial {cert.serial_number:#x} is not an authentication certificate"
    )


def check_validity(cert: x509.Certificate, at: datetime) -> None:
    """Require notBefore <= at <= notAfter.

    :raises CertificateError: detail ``CertificateNotYetValid`` or ``CertificateExpired``.
    """
    if at < cert.not_valid_before_utc:
        raise CertificateError(
            f"certificate serial {cert.serial_number:#x} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()}",
            detail="CertificateNotYetValid",
        )
    if at > cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate serial {cert.serial_number:#x} expired at "
            f"{cert.not_valid_after_utc.isoformat()}",
            detail="CertificateExpired",
        )


def is_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key verifies ``cert``'s signature (SHA-1 included)."""
    try:
        params = cert.signature_algorithm_parameters
        algorithm = cert.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError):
        return False  # an algorithm we cannot check never verifies
    rsa_padding = params if isinstance(params, padding.AsymmetricPadding) else None
    return verify_signature(
        issuer.public_key(),
        cert.signature,
        cert.tbs_certificate_bytes,
        algorithm,
        rsa_padding,
    )


def find_issuer(
    cert: x509.Certificate, ca_certs: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """Find the CA whose subject equals ``cert``'s issuer and whose key signed it."""
    for candidate in ca_certs:
        if candidate.subject == cert.issuer and is_signed_by(cert, candidate):
            return candidate
    return None


# -- verification with OCSP (§5, §6) -------------------------------------------


@dataclass(frozen=True, slots=True)
class CertVerification:
    """What :func:`verify_certificate` established."""

    cert: x509.Certificate
    issuer: x509.Certificate
    ocsp: OCSPStatus
    ocsp_response: bytes


def _check_ocsp(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    ocsp_responses: Sequence[bytes],
    *,
    at: datetime,
    freshness_seconds: int,
    responder_certs: Sequence[x509.Certificate],
    verify_next_update: bool,
) -> tuple[OCSPStatus, bytes]:
    matching = [r for r in ocsp_responses if ocsp_response_matches(r, cert, issuer)]
    if not matching:
        raise CertificateError(
            f"no OCSP response for certificate serial {cert.serial_number:#x}"
        )
    error: CertificateError | None = None
    for response in matching:
        try:
            verdict = verify_ocsp_response(
                response,
                cert,
                issuer,
                at=at,
                freshness_seconds=freshness_seconds,
                responder_certs=tuple(responder_certs),
                verify_next_update=verify_next_update,
            )
        except IncorrectValidationInfo as exc:
            error = exc
            continue
        return verdict, response
    assert error is not None
    raise error


def verify_certificate(
    cert: x509.Certificate,
    *,
    ca_certs: Sequence[x509.Certificate],
    ocsp_responses: Sequence[bytes],
    at: datetime,
    freshness_seconds: int,
    ocsp_responder_certs: Sequence[x509.Certificate] = (),
    verify_next_update: bool = True,
) -> CertVerification:
    """Verify someone else's certificate at ``at`` (§6, "someone else's cert").

    The trust anchor is the known CA whose subject equals the cert's issuer;
    the cert must be in its validity period and one OCSP response with its
    CertID must pass §5 and say good.

    :raises CertNotApproved: no known CA issued it.
    :raises CertificateError: expired/not yet valid (with ``detail``), or no
        OCSP response for the cert.
    :raises IncorrectValidationInfo: the OCSP responses are unusable.
    :raises CertValidationError: revoked or unknown (``revoked_at`` set).
    """
    if not any(ca.subject == cert.issuer for ca in ca_certs):
        raise CertNotApproved(
            "Certificate is not issued by approved certification service provider."
        )
    issuer = find_issuer(cert, ca_certs)
    if issuer is None:
        raise CertificateError(
            f"signature of certificate serial {cert.serial_number:#x} does not verify "
            "with the issuing CA key",
            detail="InvalidSignature",
        )
    check_validity(cert, at)

    verdict, response = _check_ocsp(
        cert,
        issuer,
        ocsp_responses,
        at=at,
        freshness_seconds=freshness_seconds,
        responder_certs=ocsp_responder_certs,
        verify_next_update=verify_next_update,
    )
    return CertVerification(cert, issuer, verdict, response)


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _extension(cert, x509.BasicConstraints)
    return isinstance(constraints, x509.BasicConstraints) and constraints.ca


def build_cert_path(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """Build [cert, intermediates..., anchor] by issuer-DN lookups and signatures.

    Every issuer in the path must be a CA (basicConstraints cA=true).

    :raises CannotCreateCertPath: no chain reaches one of ``anchors``.
    """
    path = [cert]
    current = cert
    for _ in range(len(intermediates) + 1):
        anchor = find_issuer(current, anchors)
        if anchor is not None:
            return path + [anchor]
        issuer = find_issuer(current, [c for c in intermediates if c not in path])
        if issuer is None:
            break
        if not _is_ca(issuer):
            raise CannotCreateCertPath(
                f"issuer {_common_name(issuer)!r} has no CA basicConstraints"
            )
        path.append(issuer)
        current = issuer
    raise CannotCreateCertPath(
        f"no path from {cert.subject.rfc4514_string()!r} to a trusted CA"
    )


def verify_cert_path(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    *,
    anchors: Sequence[x509.Certificate],
    ocsp_responses: Sequence[bytes],
    at: datetime,
    freshness_seconds: int,
    ocsp_responder_certs: Sequence[x509.Certificate] = (),
    verify_next_update: bool = True,
) -> list[CertVerification]:
    """Validate a full path at ``at`` with OCSP for every non-anchor cert (§6).

    Used for an own chain (anchor = top CA) and for a consumer's TLS chain.
    Returns one verification per non-anchor cert, end-entity first.

    :raises CannotCreateCertPath: the path cannot be built.
    :raises InvalidCertPath: a date or OCSP check failed; ``detail`` is the
        cause's code (e.g. ``CertValidation``).
    """
    path = build_cert_path(cert, intermediates, anchors)
    results = []
    for subject, issuer in zip(path, path[1:], strict=False):
        try:
            check_validity(subject, at)
            verdict, response = _check_ocsp(
                subject,
                issuer,
                ocsp_responses,
                at=at,
                freshness_seconds=freshness_seconds,
                responder_certs=ocsp_responder_certs,
                verify_next_update=verify_next_update,
            )
        except CertificateError as exc:
            raise InvalidCertPath(exc.message, detail=exc.full_code) from exc
        results.append(CertVerification(subject, issuer, verdict, response))
    return results
