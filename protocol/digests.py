"""Core: digest algorithms by their XML-DSig URIs, and base64 helpers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from .errors import InvalidRequest

SHA1_URI = "http://www.w3.org/2000/09/xmldsig#sha1"
SHA224_URI = "http://www.w3.org/2001/04/xmldsig-more#sha224"
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA384_URI = "http://www.w3.org/2001/04/xmldsig-more#sha384"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"

DIGEST_URIS = {
    SHA1_URI: "sha1",
    SHA224_URI: "sha224",
    SHA256_URI: "sha256",
    SHA384_URI: "sha384",
    SHA512_URI: "sha512",
}

# Names used in the x-hash-algorithm header and message-log linkinginfo.
DIGEST_NAMES = {
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}

_WHITESPACE = re.compile(rb"\s+")


def digest(data: bytes, uri: str = SHA512_URI) -> bytes:
    """Hash ``data`` with the algorithm named by an XML-DSig URI."""
    try:
        name = DIGEST_URIS[uri]
    except KeyError:
        raise InvalidRequest(f"unsupported digest algorithm {uri!r}") from None
    return hashlib.new(name, data).digest()


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def b64(data: bytes) -> str:
    """Standard base64 with padding, no line breaks."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | bytes) -> bytes:
    """Decode base64 that may be wrapped with CR/LF or spaces (transport.md §7.4)."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    try:
        return base64.b64decode(_WHITESPACE.sub(b"", raw), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"invalid base64: {exc}") from exc
