"""Store: the central server's configuration signing keys and the publisher.

Generates version 6 of the internal configuration source the way
global-configuration.md §10 describes: parameter files under
``V6/<stamp>/``, a signed directory ``V6/internalconf`` replaced atomically,
old stamp directories removed after 600 s. Also exports the anchor (§5).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from localio.files import write_atomic, write_private
from protocol.anchor import AnchorSource, ConfigurationAnchor, build_anchor
from protocol.confdir import ConfFile, build_signed_directory
from protocol.errors import XRoadError
from protocol.globalconf import (
    ConfSource,
    build_private_params,
    build_shared_params,
    parse_private_params,
    parse_shared_params,
)

from .registry import IncompleteRegistry, Registry

CONF_VERSION = 6
KEYS_DIR = "confkeys"
KEEP_OLD_SECONDS = 600  # §10: clients may still hold the previous directory
PRIVATE_PARAMS = "private-params.xml"
SHARED_PARAMS = "shared-params.xml"
PUBLISHED_FILES = frozenset({PRIVATE_PARAMS, SHARED_PARAMS})
STAMP_PATTERN = re.compile(r"^[0-9]{23}$")  # yyyyMMddHHmmss + 9 digits of nanoseconds

_BOUNDARY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_KEY_SIZE = 2048
_CERT_YEARS = 20


class PublisherError(XRoadError):
    code: ClassVar[str] = "ConfGenerationFailed"


class SigningKeyMissing(PublisherError):
    code: ClassVar[str] = "SigningKeyMissing"


class UnknownSigningKey(PublisherError, ValueError):
    code: ClassVar[str] = "UnknownSigningKey"


class SigningKeyInUse(PublisherError, ValueError):
    code: ClassVar[str] = "SigningKeyInUse"  # the active key cannot be retired


class SigningKeyStatus(enum.Enum):
    ACTIVE = "active"  # signs every directory published now
    STANDBY = "standby"  # published for verification, not signing yet
    RETIRED = "retired"  # no longer published anywhere


@dataclass(frozen=True, slots=True)
class ConfSigningKey:
    key_id: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    """One line of the key listing: the key's id, status and certificate."""

    key_id: str
    status: SigningKeyStatus
    cert: x509.Certificate


class ConfSigningKeys:
    """The configuration signing keys of the internal source in ``<dir>/confkeys/``.

    Layout: ``<key_id>.key.pem`` (mode 0600), ``<key_id>.cert.pem`` and
    ``keys.json`` listing the published key ids, the active one and the
    retired ones.

    Rotation (global-configuration.md §10): :meth:`add` a standby key, whose
    certificate is published at once (anchor and shared parameters); once the
    security servers have downloaded it, :meth:`activate` it; later
    :meth:`retire` the old key. Each change rewrites ``keys.json`` atomically,
    and :func:`generate` re-reads it, so a running central server follows
    changes made from the command line.
    """

    # TODO(#4): keys are stored unencrypted; encrypt them with the token PIN.

    def __init__(
        self,
        path: Path,
        keys: tuple[ConfSigningKey, ...],
        active_id: str,
        retired: tuple[str, ...] = (),
    ):
        self.path = path
        self._keys = keys
        self._active_id = active_id
        self._retired = retired
        self._index_bytes: bytes | None = None

    @classmethod
    def create(cls, dir: Path, instance: str, now: dt.datetime) -> ConfSigningKeys:
        """Make the first signing key and its self-signed certificate."""
        path = Path(dir) / KEYS_DIR
        if (path / "keys.json").exists():
            raise PublisherError(f"signing keys already exist in {str(path)!r}")
        path.mkdir(parents=True, exist_ok=True)
        first = _new_key(path, instance, now)
        keys = cls(path, (first,), first.key_id)
        keys._save()
        return keys

    @classmethod
    def open(cls, dir: Path) -> ConfSigningKeys:
        keys = cls(Path(dir) / KEYS_DIR, (), "")
        keys.reload()
        return keys

    def reload(self) -> None:
        """Re-read ``keys.json`` (and new key files) if it changed on disk.

        :raises SigningKeyMissing: the index or a key file is unreadable.
        """
        try:
            raw = (self.path / "keys.json").read_bytes()
        except OSError as exc:
            raise SigningKeyMissing(
                f"cannot read signing keys in {str(self.path)!r}"
            ) from exc
        if raw == self._index_bytes:
            return
        try:
            index = json.loads(raw)
            loaded = {k.key_id: k for k in self._keys}
            keys = tuple(
                loaded.get(key_id) or _load_key(self.path, key_id)
                for key_id in index["keys"]
            )
            active_id = str(index["active"])
            retired = tuple(str(r) for r in index.get("retired", ()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SigningKeyMissing(
                f"cannot read signing keys in {str(self.path)!r}"
            ) from exc
        if active_id not in {k.key_id for k in keys}:
            raise SigningKeyMissing(f"active signing key {active_id!r} is missing")
        self._keys, self._active_id, self._retired = keys, active_id, retired
        self._index_bytes = raw

    def active(self) -> ConfSigningKey:
        """The key that signs directories now."""
        return next(k for k in self._keys if k.key_id == self._active_id)

    def verification_certs(self) -> tuple[x509.Certificate, ...]:
        """Certificates of all keys, active and standby (they all go in the anchor)."""
        return tuple(k.cert for k in self._keys)

    def listing(self) -> tuple[SigningKeyInfo, ...]:
        """Every key ever made here, published ones first."""
        infos = [
            SigningKeyInfo(
                k.key_id,
                SigningKeyStatus.ACTIVE
                if k.key_id == self._active_id
                else SigningKeyStatus.STANDBY,
                k.cert,
            )
            for k in self._keys
        ]
        for key_id in self._retired:
            cert = _load_cert(self.path, key_id)
            infos.append(SigningKeyInfo(key_id, SigningKeyStatus.RETIRED, cert))
        return tuple(infos)

    def add(self, instance: str, now: dt.datetime) -> ConfSigningKey:
        """Make a standby key; its certificate is published from now on."""
        self.reload()
        key = _new_key(self.path, instance, now)
        self._keys = (*self._keys, key)
        self._save()
        return key

    def activate(self, key_id: str) -> ConfSigningKey:
        """Sign with ``key_id`` from the next publication on.

        Activate only once the security servers have downloaded a
        configuration listing the key (§10); until then they cannot verify.
        """
        self.reload()
        key = self._published(key_id)
        self._active_id = key.key_id
        self._save()
        return key

    def retire(self, key_id: str) -> None:
        """Stop publishing a standby key's certificate; its files stay on disk."""
        self.reload()
        key = self._published(key_id)
        if key.key_id == self._active_id:
            raise SigningKeyInUse(
                f"signing key {key_id!r} is active; activate another one first"
            )
        self._keys = tuple(k for k in self._keys if k.key_id != key.key_id)
        self._retired = (*self._retired, key.key_id)
        self._save()

    def _published(self, key_id: str) -> ConfSigningKey:
        for key in self._keys:
            if key.key_id == key_id:
                return key
        state = "retired" if key_id in self._retired else "unknown"
        raise UnknownSigningKey(f"signing key {key_id!r} is {state}")

    def _save(self) -> None:
        index = {
            "keys": [k.key_id for k in self._keys],
            "active": self._active_id,
            "retired": list(self._retired),
        }
        raw = json.dumps(index).encode()
        write_atomic(self.path / "keys.json", raw)
        self._index_bytes = raw


def _new_key(path: Path, instance: str, now: dt.datetime) -> ConfSigningKey:
    """Generate a key pair and its certificate and write both under ``path``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
    cert = _self_signed(key, instance, now)
    key_id = cert.fingerprint(hashes.SHA256()).hex()[:16]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path / f"{key_id}.key.pem", key_pem, exclusive=True)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (path / f"{key_id}.cert.pem").write_bytes(cert_pem)
    return ConfSigningKey(key_id, key, cert)


def _self_signed(
    key: rsa.RSAPrivateKey, instance: str, now: dt.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, instance),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"{instance} configuration signing"
            ),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def _load_key(path: Path, key_id: str) -> ConfSigningKey:
    key = serialization.load_pem_private_key(
        (path / f"{key_id}.key.pem").read_bytes(), password=None
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningKeyMissing(f"signing key {key_id!r} is not an RSA key")
    return ConfSigningKey(key_id, key, _load_cert(path, key_id))


def _load_cert(path: Path, key_id: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((path / f"{key_id}.cert.pem").read_bytes())


# -- files --------------------------------------------------------------------


def stamp_of(now: dt.datetime) -> str:
    """``yyyyMMddHHmmss`` in UTC plus nine digits of nanoseconds (§2)."""
    now = now.astimezone(dt.UTC)
    return now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond * 1000:09d}"


def _stamp_time(stamp: str) -> dt.datetime:
    base = dt.datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    return base + dt.timedelta(microseconds=int(stamp[14:]) // 1000)


def _boundaries(rand: Callable[[int], bytes]) -> tuple[str, str]:
    """Two distinct 20-character boundaries (outer, inner) from 40 random bytes."""
    raw = rand(40)
    size = len(_BOUNDARY_ALPHABET)
    outer = "".join(_BOUNDARY_ALPHABET[b % size] for b in raw[:20])
    inner = "".join(_BOUNDARY_ALPHABET[b % size] for b in raw[20:40])
    if len(raw) != 40 or outer == inner:
        raise PublisherError("the random source gave unusable MIME boundaries")
    return outer, inner


def _new_stamp_dir(version_dir: Path, now: dt.datetime) -> tuple[str, Path]:
    """Create a fresh stamp directory; two runs in one microsecond get distinct ones."""
    stamp = stamp_of(now)
    while True:
        path = version_dir / stamp
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            stamp = f"{int(stamp) + 1:023d}"
            continue
        return stamp, path


def _remove_old(version_dir: Path, keep: str, now: dt.datetime) -> None:
    limit = now - dt.timedelta(seconds=KEEP_OLD_SECONDS)
    for entry in version_dir.iterdir():
        if entry.name == keep or not STAMP_PATTERN.match(entry.name):
            continue
        if entry.is_dir() and _stamp_time(entry.name) < limit:
            shutil.rmtree(entry, ignore_errors=True)


# -- generation ---------------------------------------------------------------


def generate(
    registry: Registry,
    keys: ConfSigningKeys,
    out_dir: Path,
    now: dt.datetime,
    rand: Callable[[int], bytes] = os.urandom,
) -> Path:
    """Publish one version 6 internal configuration; return the directory file.

    Blocking (database and files): adapters run it in a worker thread.
    """
    keys.reload()  # follow a rotation made by another process (the CLI)
    settings = registry.settings()
    if settings.central_server_address is None:
        raise IncompleteRegistry("the central server address is not configured")
    shared, private = registry.snapshot()
    source = ConfSource(
        address=settings.central_server_address,
        internal_verification_certs=keys.verification_certs(),
        external_verification_certs=(),  # TODO(#7): external source for federation
    )
    shared = dataclasses.replace(shared, sources=(source,))
    shared_xml = build_shared_params(shared)
    private_xml = build_private_params(private)
    # §10 step 1: what we publish must read back; catch a bad build here.
    parse_shared_params(shared_xml)
    parse_private_params(private_xml)

    version_dir = Path(out_dir) / f"V{CONF_VERSION}"
    stamp, stamp_dir = _new_stamp_dir(version_dir, now)
    (stamp_dir / PRIVATE_PARAMS).write_bytes(private_xml)
    (stamp_dir / SHARED_PARAMS).write_bytes(shared_xml)
    prefix = f"/V{CONF_VERSION}/{stamp}"
    files = [
        ConfFile(
            "PRIVATE-PARAMETERS",
            registry.instance,
            f"{prefix}/{PRIVATE_PARAMS}",
            private_xml,
        ),
        ConfFile(
            "SHARED-PARAMETERS",
            registry.instance,
            f"{prefix}/{SHARED_PARAMS}",
            shared_xml,
        ),
    ]

    active = keys.active()
    expire_at = now + dt.timedelta(seconds=settings.conf_expire_interval_seconds)
    signed = build_signed_directory(
        files,
        expire_at=expire_at,
        version=CONF_VERSION,
        key=active.key,
        cert=active.cert,
        boundaries=_boundaries(rand),
    )
    target = version_dir / "internalconf"
    write_atomic(target, signed)
    _remove_old(version_dir, stamp, now)
    return target


def export_anchor(
    registry: Registry, keys: ConfSigningKeys, base_url: str, now: dt.datetime
) -> bytes:
    """Build the anchor for the internal source at ``<base_url>/internalconf``.

    The URL must be ``http://``: the reference client ignores https anchor
    entries (§5).
    """
    if not base_url.startswith("http://"):
        raise PublisherError(
            f"anchor base URL must start with http://, got {base_url!r}"
        )
    keys.reload()
    url = base_url.rstrip("/") + "/internalconf"
    anchor = ConfigurationAnchor(
        instance=registry.instance,
        generated_at=now,
        sources=(AnchorSource(url, keys.verification_certs()),),
    )
    return build_anchor(anchor)
