"""Store: the central server's configuration signing keys and the publisher.

Generates version 6 of the internal configuration source the way
global-configuration.md §10 describes: parameter files under
``V6/<stamp>/``, a signed directory ``V6/internalconf`` replaced atomically,
old stamp directories removed after 600 s. Also exports the anchor (§5).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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


@dataclass(frozen=True, slots=True)
class ConfSigningKey:
    key_id: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


class ConfSigningKeys:
    """The configuration signing keys of the internal source in ``<dir>/confkeys/``.

    Layout: ``<key_id>.key.pem`` (mode 0600), ``<key_id>.cert.pem`` and
    ``keys.json`` listing the key ids and the active one.
    """

    # TODO(#4): rotation -- add a standby key, publish its certificate, then activate.
    # TODO(#4): keys are stored unencrypted; encrypt them with the token PIN.

    def __init__(self, path: Path, keys: tuple[ConfSigningKey, ...], active_id: str):
        self.path = path
        self._keys = keys
        self._active_id = active_id

    @classmethod
    def create(cls, dir: Path, instance: str, now: dt.datetime) -> ConfSigningKeys:
        """Make the first signing key and its self-signed certificate."""
        path = Path(dir) / KEYS_DIR
        if (path / "keys.json").exists():
            raise PublisherError(f"signing keys already exist in {str(path)!r}")
        path.mkdir(parents=True, exist_ok=True)
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
        index = {"keys": [key_id], "active": key_id}
        write_atomic(path / "keys.json", json.dumps(index).encode())
        return cls(path, (ConfSigningKey(key_id, key, cert),), key_id)

    @classmethod
    def open(cls, dir: Path) -> ConfSigningKeys:
        path = Path(dir) / KEYS_DIR
        try:
            index = json.loads((path / "keys.json").read_text())
            keys = tuple(_load_key(path, key_id) for key_id in index["keys"])
            active_id = index["active"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SigningKeyMissing(
                f"cannot read signing keys in {str(path)!r}"
            ) from exc
        if active_id not in {k.key_id for k in keys}:
            raise SigningKeyMissing(f"active signing key {active_id!r} is missing")
        return cls(path, keys, active_id)

    def active(self) -> ConfSigningKey:
        """The key that signs directories now."""
        return next(k for k in self._keys if k.key_id == self._active_id)

    def verification_certs(self) -> tuple[x509.Certificate, ...]:
        """Certificates of all keys, active and standby (they all go in the anchor)."""
        return tuple(k.cert for k in self._keys)


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
    cert = x509.load_pem_x509_certificate((path / f"{key_id}.cert.pem").read_bytes())
    return ConfSigningKey(key_id, key, cert)


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
    url = base_url.rstrip("/") + "/internalconf"
    anchor = ConfigurationAnchor(
        instance=registry.instance,
        generated_at=now,
        sources=(AnchorSource(url, keys.verification_certs()),),
    )
    return build_anchor(anchor)
