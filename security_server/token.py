"""Store: the software token holding the server's auth key and members' sign keys.

A directory with one PEM file per private key (mode 0600, encrypted with the
token PIN), the certificate chain PEM beside it, and ``token.json`` listing
keys and a PBKDF2 check value of the PIN (never the PIN itself).
Certificates are readable without logging in; private keys are not.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from localio.files import write_atomic, write_private
from protocol import pki
from protocol.digests import b64, unb64
from protocol.errors import XRoadError
from protocol.identifiers import ClientId, SecurityServerId

log = logging.getLogger(__name__)

META_FILE = "token.json"
PIN_ITERATIONS = 200_000
KeyUsage = Literal["auth", "sign"]


class TokenError(XRoadError):
    code = "TokenError"


class TokenNotInitialized(TokenError):
    code = "TokenNotInitialized"


class TokenAlreadyInitialized(TokenError):
    code = "TokenAlreadyInitialized"


class TokenNotActive(TokenError):
    code = "TokenNotActive"  # not logged in


class PinIncorrect(TokenError):
    code = "PinIncorrect"


class KeyNotFound(TokenError):
    code = "KeyNotFound"


class CertNotFound(TokenError):
    code = "CertNotFound"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key on the token; ``owner`` is the server (auth) or member (sign)."""

    key_id: str
    usage: KeyUsage
    owner: str
    has_cert: bool


def _pin_hash(pin: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)


def _key_id(key: PrivateKeyTypes | x509.Certificate) -> str:
    public = key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()[:40]


class SoftToken:
    """A software token in directory ``dir`` (blocking file I/O)."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self._lock = threading.RLock()
        self._pin: bytes | None = None
        self._keys: dict[str, PrivateKeyTypes] = {}
        # Parsed files, keyed by path and remembered with their modification
        # time: the proxies ask for keys and certificates on every message,
        # and another process (the CLI) may import a certificate meanwhile.
        self._parsed: dict[Path, tuple[int, Any]] = {}

    # -- lifecycle --------------------------------------------------------------

    @classmethod
    def initialize(cls, dir: Path, pin: str) -> SoftToken:
        """Create an empty token protected by ``pin``."""
        if not pin:
            raise PinIncorrect("the token PIN must not be empty")
        path = Path(dir)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if (path / META_FILE).exists():
            raise TokenAlreadyInitialized(f"token in {str(path)!r} already exists")
        salt = os.urandom(16)
        meta = {
            "version": 1,
            "pin": {
                "salt": b64(salt),
                "iterations": PIN_ITERATIONS,
                "hash": b64(_pin_hash(pin, salt, PIN_ITERATIONS)),
            },
            "keys": [],
        }
        token = cls(path)
        token._save(meta)
        return token

    def login(self, pin: str) -> None:
        """Activate the token; a wrong PIN raises :class:`PinIncorrect`."""
        check = self._meta()["pin"]
        expected = unb64(check["hash"])
        found = _pin_hash(pin, unb64(check["salt"]), int(check["iterations"]))
        if not hmac.compare_digest(expected, found):
            # TODO(#6): no lockout after repeated wrong PINs yet.
            log.warning("token login failed dir=%s", self.dir)
            raise PinIncorrect("the token PIN is incorrect")
        with self._lock:
            self._pin = pin.encode("utf-8")
            self._keys.clear()
        log.info("token logged in dir=%s", self.dir)

    def logout(self) -> None:
        with self._lock:
            self._pin = None
            self._keys.clear()

    @property
    def active(self) -> bool:
        return self._pin is not None

    # -- key generation -----------------------------------------------------------

    def generate_auth_key(self, server_id: SecurityServerId) -> bytes:
        """Make an authentication key for ``server_id``; return a DER CSR."""
        key = pki.generate_key()
        csr = pki.build_csr(key, pki.auth_subject(server_id))
        self._add_key(key, "auth", server_id.slash())
        return csr

    def generate_sign_key(self, member: ClientId) -> bytes:
        """Make a signing key for ``member`` (a subsystem's member); return a DER CSR."""
        key = pki.generate_key()
        csr = pki.build_csr(key, pki.sign_subject(member.member))
        self._add_key(key, "sign", member.member.slash())
        return csr

    def _add_key(self, key: PrivateKeyTypes, usage: KeyUsage, owner: str) -> None:
        pin = self._require_pin()
        key_id = _key_id(key)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(pin),
        )
        with self._lock:
            meta = self._meta()
            write_private(self.dir / f"{key_id}.key.pem", pem, exclusive=True)
            meta["keys"].append({"id": key_id, "usage": usage, "owner": owner})
            self._save(meta)
            self._keys[key_id] = key
        log.info("token key generated usage=%s owner=%s id=%s", usage, owner, key_id)

    # -- certificates -----------------------------------------------------------

    def import_certificate(
        self, cert_bytes: bytes, chain: list[bytes] | None = None
    ) -> KeyInfo:
        """Attach a certificate (PEM or DER) to the key holding its public key.

        ``chain`` are intermediate CA certificates sent after the leaf in TLS
        and embedded in signatures. The key's role decides which usage rule of
        certificates-ocsp.md §2 the certificate must satisfy.
        """
        cert = pki.load_certificate(cert_bytes)
        intermediates = [pki.load_certificate(c) for c in chain or []]
        key_id = _key_id(cert)
        with self._lock:
            meta = self._meta()
            entry = next((k for k in meta["keys"] if k["id"] == key_id), None)
            if entry is None:
                raise KeyNotFound(
                    f"no key on the token matches certificate serial {cert.serial_number:#x}"
                )
            if entry["usage"] == "auth":
                pki.check_auth_cert_usage(cert)
            else:
                pki.check_sign_cert_usage(cert)
            pem = b"".join(
                c.public_bytes(serialization.Encoding.PEM)
                for c in [cert, *intermediates]
            )
            write_atomic(self.dir / f"{key_id}.cert.pem", pem)
            # The latest import wins when several keys serve the same owner.
            meta["keys"].remove(entry)
            meta["keys"].append(entry)
            self._save(meta)
        log.info(
            "token certificate imported usage=%s serial=%x issuer=%s",
            entry["usage"],
            cert.serial_number,
            cert.issuer.rfc4514_string(),
        )
        return KeyInfo(key_id, entry["usage"], entry["owner"], True)

    def keys(self) -> list[KeyInfo]:
        return [
            KeyInfo(k["id"], k["usage"], k["owner"], self._cert_path(k["id"]).exists())
            for k in self._meta()["keys"]
        ]

    def _cert_path(self, key_id: str) -> Path:
        return self.dir / f"{key_id}.cert.pem"

    def _chain(self, key_id: str) -> list[x509.Certificate]:
        chain: list[x509.Certificate] = self._cached(
            self._cert_path(key_id), x509.load_pem_x509_certificates
        )
        return chain

    def _cached(self, path: Path, parse: Callable[[bytes], Any]) -> Any:
        """Parse a file once per version of it."""
        mtime = path.stat().st_mtime_ns
        with self._lock:
            known = self._parsed.get(path)
            if known is not None and known[0] == mtime:
                return known[1]
        value = parse(path.read_bytes())
        with self._lock:
            self._parsed[path] = (mtime, value)
        return value

    def _latest(self, usage: KeyUsage, owner: str | None = None) -> str | None:
        for info in reversed(self.keys()):
            if info.usage == usage and info.has_cert and owner in (None, info.owner):
                return info.key_id
        return None

    # -- the authentication key ---------------------------------------------------

    def _auth_id(self) -> str:
        key_id = self._latest("auth")
        if key_id is None:
            raise CertNotFound("the token has no authentication key with a certificate")
        return key_id

    @property
    def auth_key(self) -> PrivateKeyTypes:
        return self._private(self._auth_id())

    @property
    def auth_cert(self) -> x509.Certificate:
        return self._chain(self._auth_id())[0]

    @property
    def auth_chain(self) -> list[x509.Certificate]:
        """The auth certificate followed by the intermediates imported with it."""
        return self._chain(self._auth_id())

    # -- signing keys -------------------------------------------------------------

    def sign_key(self, member: ClientId) -> tuple[PrivateKeyTypes, x509.Certificate]:
        """Return the signing key and certificate of ``member`` (subsystem → member)."""
        key_id = self._sign_id(member)
        return self._private(key_id), self._chain(key_id)[0]

    def sign_chain(self, member: ClientId) -> list[x509.Certificate]:
        return self._chain(self._sign_id(member))

    def _sign_id(self, member: ClientId) -> str:
        key_id = self._latest("sign", member.member.slash())
        if key_id is None:
            raise KeyNotFound(f"no signing key with a certificate for {member.member}")
        return key_id

    def sign_members(self) -> list[ClientId]:
        """Members that have a signing key with a certificate."""
        owners = {i.owner for i in self.keys() if i.usage == "sign" and i.has_cert}
        return sorted((ClientId.parse_slash(o) for o in owners), key=str)

    def certificates(self) -> list[x509.Certificate]:
        """Our leaf certificates in use (auth first, then one per member)."""
        out: list[x509.Certificate] = []
        auth_id = self._latest("auth")
        if auth_id is not None:
            out.append(self._chain(auth_id)[0])
        for member in self.sign_members():
            out.append(self._chain(self._sign_id(member))[0])
        return out

    # -- internals ------------------------------------------------------------------

    def _require_pin(self) -> bytes:
        pin = self._pin
        if pin is None:
            raise TokenNotActive("the token is not logged in")
        return pin

    def _private(self, key_id: str) -> PrivateKeyTypes:
        pin = self._require_pin()
        with self._lock:
            cached = self._keys.get(key_id)
            if cached is not None:
                return cached
            data = (self.dir / f"{key_id}.key.pem").read_bytes()
            try:
                key = serialization.load_pem_private_key(data, password=pin)
            except (ValueError, TypeError) as exc:
                raise KeyNotFound(
                    f"key {key_id} cannot be opened with this PIN"
                ) from exc
            self._keys[key_id] = key
            return key

    def _meta(self) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = self._cached(self.dir / META_FILE, json.loads)
        except FileNotFoundError:
            raise TokenNotInitialized(f"no token in {str(self.dir)!r}") from None
        return copy.deepcopy(meta)  # callers may change and save their copy

    def _save(self, meta: dict[str, Any]) -> None:
        data = json.dumps(meta, indent=1, sort_keys=True).encode("utf-8")
        write_atomic(self.dir / META_FILE, data, mode=0o600)
