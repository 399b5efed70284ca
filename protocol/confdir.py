"""Core: the signed configuration directory (global-configuration.md §3).

A directory is a complete MIME entity: an outer ``multipart/related`` with
two parts, the directory itself (a nested ``multipart/mixed``) and the
signature over that part's exact body bytes. The parser works on raw bytes,
never re-serialises, and accepts the LF-only and configuration-proxy forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .anchor import parse_time
from .digests import SHA512_URI, b64, digest, unb64
from .errors import GlobalConfError, InvalidSignatureOnConf, XRoadError

PRIVATE_PARAMETERS = "PRIVATE-PARAMETERS"
SHARED_PARAMETERS = "SHARED-PARAMETERS"

RSA_SHA256_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA384_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
RSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
ECDSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"

# Signature algorithm URI -> (kind, hash). SHA-1 is left out on purpose.
_SIGNATURE_ALGORITHMS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    RSA_SHA256_URI: ("rsa", hashes.SHA256),
    RSA_SHA384_URI: ("rsa", hashes.SHA384),
    RSA_SHA512_URI: ("rsa", hashes.SHA512),
    "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1": ("pss", hashes.SHA256),
    "http://www.w3.org/2007/05/xmldsig-more#sha384-rsa-MGF1": ("pss", hashes.SHA384),
    "http://www.w3.org/2007/05/xmldsig-more#sha512-rsa-MGF1": ("pss", hashes.SHA512),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ecdsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ecdsa", hashes.SHA384),
    ECDSA_SHA512_URI: ("ecdsa", hashes.SHA512),
}


class MalformedDirectory(GlobalConfError):
    """The MIME structure or a required directory header is broken."""

    code = "MalformedGlobalConf"


class MissingExpirationDate(GlobalConfError):
    """The signed part is incomplete or has no ``Expire-date``."""

    code = "GlobalConfMissingSignedDataExpirationDate"


class MissingVerificationCert(GlobalConfError):
    """No trusted certificate matches ``Verification-certificate-hash``."""

    code = "GlobalConfMissingVerificationCert"


class DirectorySignatureInvalid(InvalidSignatureOnConf):
    """The signature is absent, unsupported or does not verify."""

    code = "GlobalConfSignatureVerificationFailure"


class ConfFileHashMismatch(GlobalConfError):
    """A downloaded file does not match the digest listed in the directory."""

    code = "GlobalConfInvalidFileHash"


@dataclass(frozen=True, slots=True)
class ConfFile:
    """One file to list in a directory being built."""

    content_identifier: str
    instance: str
    location: str
    data: bytes
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class DirectoryPart:
    content_identifier: str | None
    instance: str | None
    location: str
    hash_algorithm_uri: str
    digest: bytes
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class SignedDirectory:
    expire_at: datetime
    version: int | None
    parts: tuple[DirectoryPart, ...]
    signer_cert: x509.Certificate


# -- building ----------------------------------------------------------------


def build_signed_directory(
    files: list[ConfFile],
    *,
    expire_at: datetime,
    version: int,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    boundaries: tuple[str, str],
) -> bytes:
    """Build and sign a directory listing ``files`` (§3), CRLF line ends.

    ``boundaries`` is (outer, inner); the caller picks them, so the core stays
    free of randomness.
    """
    outer, inner = boundaries
    expire = expire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"--{inner}", f"Expire-date: {expire}", f"Version: {version}", ""]
    for conf_file in files:
        lines += [
            f"--{inner}",
            "Content-type: application/octet-stream",
            "Content-transfer-encoding: base64",
            f"Content-identifier: {conf_file.content_identifier}; "
            f"instance='{conf_file.instance}'",
            f"Content-location: {conf_file.location}",
        ]
        if conf_file.file_name:
            lines.append(f"Content-file-name: {conf_file.file_name}")
        lines += [f"Hash-algorithm-id: {SHA512_URI}", "", b64(digest(conf_file.data))]
    lines.append(f"--{inner}--")
    signed = _crlf(lines).encode("utf-8")

    algorithm_uri, signature = _sign(key, signed)
    cert_hash = b64(digest(cert.public_bytes(serialization.Encoding.DER), SHA512_URI))
    head = _crlf(
        [
            f"Content-Type: multipart/related; charset=UTF-8; boundary={outer}",
            "",
            f"--{outer}",
            f"Content-Type: multipart/mixed; charset=UTF-8; boundary={inner}",
            "",
        ]
    )
    hash_param = f'hash-algorithm-id="{SHA512_URI}"'
    tail = "\r\n" + _crlf(
        [
            f"--{outer}",
            "Content-Type: application/octet-stream",
            "Content-Transfer-Encoding: base64",
            f"Signature-Algorithm-Id: {algorithm_uri}",
            f"Verification-certificate-hash: {cert_hash}; {hash_param}",
            "",
            b64(signature),
            f"--{outer}--",
        ]
    )
    return head.encode("utf-8") + signed + tail.encode("utf-8")


def _crlf(lines: list[str]) -> str:
    return "".join(line + "\r\n" for line in lines)


def _sign(key: PrivateKeyTypes, data: bytes) -> tuple[str, bytes]:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSA_SHA512_URI, key.sign(data, padding.PKCS1v15(), hashes.SHA512())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECDSA_SHA512_URI, key.sign(data, ec.ECDSA(hashes.SHA512()))
    raise GlobalConfError(f"signing with a {type(key).__name__} key is not supported")


# -- MIME scanning -----------------------------------------------------------

_LINE_BREAK = re.compile(rb"\r?\n")


@dataclass(frozen=True, slots=True)
class _Entity:
    headers: dict[str, str]  # lower-case names
    body: bytes


def _split_entity(raw: bytes) -> _Entity:
    """Split a MIME entity into headers and body at the first empty line."""
    headers: dict[str, str] = {}
    position = 0
    last: str | None = None
    while position < len(raw):
        match = _LINE_BREAK.search(raw, position)
        end = match.start() if match else len(raw)
        after = match.end() if match else len(raw)
        line = raw[position:end].decode("utf-8", "replace")
        position = after
        if not line.strip():
            return _Entity(headers, raw[position:])
        if line[0] in " \t" and last is not None:  # folded header line
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedDirectory(f"invalid MIME header line {line!r}")
        last = name.strip().lower()
        headers[last] = value.strip()
    return _Entity(headers, b"")


def _params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``main; a=1; b="2"; c='3'`` into the main value and parameters."""
    pieces = [p.strip() for p in value.split(";")]
    params = {}
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        if sep:
            raw = raw.strip()
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
                raw = raw[1:-1]
            params[name.strip().lower()] = raw
    return pieces[0], params


def _boundary(entity: _Entity, what: str) -> bytes:
    _, params = _params(entity.headers.get("content-type", ""))
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedDirectory(f"{what} has no multipart boundary")
    return boundary.encode("utf-8")


def _split_multipart(body: bytes, boundary: bytes) -> tuple[list[bytes], bool]:
    """Cut a multipart body into raw parts; also say whether it was closed.

    A part ends before the line break that precedes the next delimiter (RFC
    2046 5.1.1); without a closing delimiter the last part runs to the end.
    """
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)"
    )
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            return parts, True
        start = match.end()
    if start is not None:
        parts.append(body[start:])
    return parts, False


# -- parsing -----------------------------------------------------------------


def parse_signed_directory(
    data: bytes, verification_certs: list[x509.Certificate]
) -> SignedDirectory:
    """Verify and parse a signed directory; expiry is left to the caller.

    The signature is checked over the raw signed bytes before any directory
    header is interpreted.

    :raises MissingExpirationDate: the signed part is cut off or has no date.
    :raises MissingVerificationCert: no given cert matches the header hash.
    :raises DirectorySignatureInvalid: signature missing or not valid.
    :raises MalformedDirectory: broken MIME structure or part headers.
    """
    outer = _split_entity(data) if not data.startswith(b"--") else _bare(data)
    parts, _ = _split_multipart(outer.body, _boundary(outer, "directory entity"))
    if len(parts) < 2:
        raise MissingExpirationDate(
            "the signed part is incomplete: no signature part follows"
        )
    if len(parts) > 2:
        raise MalformedDirectory(f"expected 2 outer parts, found {len(parts)}")

    directory = _split_entity(parts[0])
    signed_bytes = directory.body
    signer = _verify(_split_entity(parts[1]), signed_bytes, verification_certs)

    inner, _ = _split_multipart(signed_bytes, _boundary(directory, "directory part"))
    if not inner:
        raise MissingExpirationDate("the signed directory has no header part")
    header = _split_entity(inner[0]).headers
    if "expire-date" not in header:
        raise MissingExpirationDate("the signed directory has no Expire-date")
    try:
        expire_at = parse_time(header["expire-date"])
        version = int(header["version"]) if "version" in header else None
    except (GlobalConfError, ValueError) as exc:
        raise MalformedDirectory(f"bad directory header: {exc}") from exc
    files = tuple(_parse_part(_split_entity(raw)) for raw in inner[1:])
    return SignedDirectory(expire_at, version, files, signer)


def _bare(data: bytes) -> _Entity:
    """An entity given without its header block: take the boundary from line 1."""
    first = _LINE_BREAK.split(data, 1)[0]
    boundary = first[2:].strip().decode("utf-8", "replace")
    return _Entity({"content-type": f'multipart/related; boundary="{boundary}"'}, data)


def _verify(
    signature_part: _Entity, signed: bytes, certs: list[x509.Certificate]
) -> x509.Certificate:
    headers = signature_part.headers
    hash_header = headers.get("verification-certificate-hash")
    algorithm_uri = headers.get("signature-algorithm-id")
    if not hash_header or not algorithm_uri:
        raise DirectorySignatureInvalid(
            "signature part lacks its algorithm or cert hash"
        )
    value, params = _params(hash_header)
    hash_uri = params.get("hash-algorithm-id", SHA512_URI)
    try:
        wanted = unb64(value)
        signer = next(
            (
                c
                for c in certs
                if digest(c.public_bytes(serialization.Encoding.DER), hash_uri)
                == wanted
            ),
            None,
        )
    except XRoadError as exc:
        raise MissingVerificationCert(
            f"unusable verification cert hash: {exc}"
        ) from exc
    if signer is None:
        raise MissingVerificationCert(f"no verification certificate has hash {value!r}")

    body = signature_part.body.strip()
    if not body:
        raise DirectorySignatureInvalid("the signature part has no signature value")
    try:
        signature = unb64(body)
    except XRoadError as exc:
        raise DirectorySignatureInvalid("the signature value is not base64") from exc
    check_signature(signer, algorithm_uri, signature, signed)
    return signer


def check_signature(
    cert: x509.Certificate, algorithm_uri: str, signature: bytes, data: bytes
) -> None:
    """Verify ``signature`` over ``data`` with the certificate's public key.

    :raises DirectorySignatureInvalid: unsupported algorithm or bad signature.
    """
    try:
        kind, hash_type = _SIGNATURE_ALGORITHMS[algorithm_uri]
    except KeyError:
        raise DirectorySignatureInvalid(
            f"signature algorithm {algorithm_uri!r} is not supported"
        ) from None
    key = cert.public_key()
    try:
        if kind in ("rsa", "pss") and isinstance(key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if kind == "pss":
                pad = padding.PSS(padding.MGF1(hash_type()), hash_type().digest_size)
            key.verify(signature, data, pad, hash_type())
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_type()))
        else:
            raise DirectorySignatureInvalid(
                f"key type {type(key).__name__} does not fit {algorithm_uri!r}"
            )
    except InvalidSignature as exc:
        raise DirectorySignatureInvalid(
            "the directory signature does not verify"
        ) from exc


def _parse_part(entity: _Entity) -> DirectoryPart:
    headers, body = entity.headers, entity.body
    location = headers.get("content-location")
    hash_uri = headers.get("hash-algorithm-id")
    if not location or not hash_uri:
        raise MalformedDirectory(
            "a directory part lacks Content-location or Hash-algorithm-id"
        )
    identifier, instance = None, None
    if "content-identifier" in headers:
        identifier, params = _params(headers["content-identifier"])
        instance = params.get("instance")
    if identifier in (PRIVATE_PARAMETERS, SHARED_PARAMETERS) and not instance:
        raise MalformedDirectory(f"{identifier} part has no instance parameter")
    try:
        value = unb64(body.strip())
    except XRoadError as exc:
        raise MalformedDirectory(f"digest of {location!r} is not base64") from exc
    return DirectoryPart(
        identifier,
        instance,
        location,
        hash_uri,
        value,
        headers.get("content-file-name"),
    )


def check_part_digest(part: DirectoryPart, data: bytes) -> None:
    """Raise :class:`ConfFileHashMismatch` unless ``data`` has the listed digest."""
    try:
        actual = digest(data, part.hash_algorithm_uri)
    except XRoadError as exc:
        raise ConfFileHashMismatch(f"cannot hash {part.location!r}: {exc}") from exc
    if actual != part.digest:
        raise ConfFileHashMismatch(
            f"content of {part.location!r} does not match its digest"
        )
