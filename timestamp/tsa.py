"""Net + store: a small RFC 3161 time-stamping authority (message-log.md §5).

The TSA keeps its RSA key, its self-signed certificate and a serial counter
in one directory; replies are built by :mod:`protocol.timestamp`. The HTTP
side is one aiohttp handler: ``POST /`` with ``application/timestamp-query``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import sqlite_utils
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localio.clock import utc_now
from protocol.errors import InternalError
from protocol.timestamp import build_timestamp_response

log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
MAX_QUERY_BYTES = 64 * 1024
CERT_VALIDITY = timedelta(days=3653)

KEY_FILE = "tsa-key.pem"
CERT_FILE = "tsa-cert.pem"
STATE_FILE = "tsa.db"


class TSAStoreError(InternalError):
    """The TSA directory is missing, incomplete or unreadable."""

    code = "InternalError"


class TimestampAuthority:
    """A TSA backed by a directory: key (mode 0600), certificate, serial counter."""

    def __init__(
        self,
        directory: Path,
        key: rsa.RSAPrivateKey,
        cert: x509.Certificate,
        db: sqlite_utils.Database,
        policy_oid: str,
    ) -> None:
        self.directory = directory
        self.key = key
        self.cert = cert
        self.policy_oid = policy_oid
        self._db = db
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, dir: Path, name: str, now: datetime, *, key_size: int = 3072
    ) -> TimestampAuthority:
        """Make a new TSA in ``dir``: key, certificate valid ~10 years, counter."""
        dir.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # O_EXCL: never overwrite the key of an existing TSA.
        fd = os.open(dir / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)

        cert = _self_signed(key, name, now)
        (dir / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

        db = _open_db(dir / STATE_FILE)
        # A private policy OID under the UUID arc (ITU-T X.667), no registry needed.
        policy_oid = f"2.25.{uuid.uuid4().int}"
        with db.conn:
            db.table("tsa_state").insert(
                {"id": 1, "next_serial": 1, "policy_oid": policy_oid, "name": name},
                pk="id",
            )
        log.info("tsa created dir=%s name=%s", dir, name)
        return cls(dir, key, cert, db, policy_oid)

    @classmethod
    def open(cls, dir: Path) -> TimestampAuthority:
        """Open an existing TSA directory."""
        try:
            key = serialization.load_pem_private_key(
                (dir / KEY_FILE).read_bytes(), password=None
            )
            cert = x509.load_pem_x509_certificate((dir / CERT_FILE).read_bytes())
            db = _open_db(dir / STATE_FILE)
            row = db.execute("SELECT policy_oid FROM tsa_state WHERE id = 1").fetchone()
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise TSAStoreError(
                f"cannot open TSA directory {str(dir)!r}: {exc}"
            ) from exc
        if row is None or not isinstance(key, rsa.RSAPrivateKey):
            raise TSAStoreError(f"TSA directory {str(dir)!r} is incomplete")
        return cls(dir, key, cert, db, row[0])

    @property
    def cert_pem(self) -> bytes:
        """The TSA certificate in PEM, for an approvedTSA entry."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_FILE

    def respond(self, request_der: bytes, now: datetime) -> bytes:
        """Answer one DER TimeStampReq (blocking: SQLite and RSA)."""
        serial = self._next_serial()
        return build_timestamp_response(
            request_der,
            key=self.key,
            cert=self.cert,
            serial=serial,
            gen_time=now,
            policy_oid=self.policy_oid,
        )

    def _next_serial(self) -> int:
        # The counter is committed before the token exists, so a crash can
        # skip a serial but never hand one out twice (RFC 3161 §2.4.2).
        with self._lock, self._db.conn:
            conn = self._db.conn
            (serial,) = conn.execute(
                "SELECT next_serial FROM tsa_state WHERE id = 1"
            ).fetchone()
            conn.execute(
                "UPDATE tsa_state SET next_serial = ? WHERE id = 1", (serial + 1,)
            )
        return int(serial)

    def close(self) -> None:
        self._db.close()


def _open_db(path: Path) -> sqlite_utils.Database:
    conn = sqlite3.connect(path, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _self_signed(key: rsa.RSAPrivateKey, name: str, now: datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
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
        # openssl ts -verify insists on a critical timeStamping EKU (RFC 3161 §2.3).
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
        .sign(key, hashes.SHA256())
    )


# -- HTTP -------------------------------------------------------------------

TSA_KEY = web.AppKey("tsa", TimestampAuthority)
CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")


async def on_query(request: web.Request) -> web.Response:
    if request.content_type != QUERY_TYPE:
        return web.Response(status=415, text="expected application/timestamp-query\n")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text="time-stamp query too large\n")
    if not body:
        return web.Response(status=400, text="empty time-stamp query\n")

    tsa = request.app[TSA_KEY]
    now = request.app[CLOCK_KEY]()
    try:
        reply = await asyncio.to_thread(tsa.respond, body, now)
    except Exception:
        log.exception("tsa failed to answer peer=%s", request.remote)
        return web.Response(status=500, text="time-stamping failed\n")
    log.info("tsa answered peer=%s bytes=%d", request.remote, len(reply))
    return web.Response(body=reply, content_type=REPLY_TYPE)


def tsa_app(
    tsa: TimestampAuthority, clock: Callable[[], datetime] = utc_now
) -> web.Application:
    """The aiohttp application: ``POST /`` only, 64 KiB body limit."""
    app = web.Application(client_max_size=MAX_QUERY_BYTES)
    app[TSA_KEY] = tsa
    app[CLOCK_KEY] = clock
    app.router.add_post("/", on_query)
    return app


async def serve_tsa(
    dir: Path,
    host: str,
    port: int,
    clock: Callable[[], datetime] = utc_now,
) -> web.AppRunner:
    """Open the TSA in ``dir`` and serve it; stop it with ``runner.cleanup()``."""
    tsa = TimestampAuthority.open(dir)
    app = tsa_app(tsa, clock)

    async def close_tsa(_: web.Application) -> None:
        tsa.close()

    app.on_cleanup.append(close_tsa)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("tsa listening host=%s port=%d", host, port)
    return runner
