"""Store + net: a small certificate authority with an OCSP responder.

Keys and certificates live as PEM files in one directory (keys mode 0600,
encrypted when a passphrase is given); issued certificates are recorded in an
SQLite table. The aiohttp app answers RFC 6960 requests (POST and GET, A.1).
The certificate profile and OCSP rules are in protocol/pki.py and
protocol/ocsp.py (certificates-ocsp.md §2-§5).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import sqlite_utils
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from localio.files import write_private
from localio.http import read_at_most
from protocol import ocsp, pki
from protocol.errors import DatabaseError, InvalidRequest, XRoadError
from protocol.identifiers import ClientId, SecurityServerId

log = logging.getLogger(__name__)

CA_KEY = "ca.key.pem"
CA_CERT = "ca.cert.pem"
OCSP_KEY = "ocsp.key.pem"
OCSP_CERT = "ocsp.cert.pem"
SETTINGS = "ca.json"
DATABASE = "certs.db"
TABLE = "certificates"

MAX_REQUEST_BYTES = 16 * 1024
CA_DAYS = 20 * 365
OCSP_SIGNER_DAYS = 2 * 365
CERT_DAYS = 2 * 365
NEXT_UPDATE_SECONDS = 0  # no nextUpdate: X-Road measures freshness by thisUpdate


class UnknownCertificate(InvalidRequest):
    code = "UnknownCertificate"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One row of the issued-certificates table."""

    serial: int
    kind: str
    subject: str
    not_before: datetime
    not_after: datetime
    status: ocsp.OCSPCertStatus
    revoked_at: datetime | None
    reason: str | None
    der: bytes


def _key_pem(key: object, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_key(path: Path, passphrase: bytes | None) -> object:
    return serialization.load_pem_private_key(path.read_bytes(), passphrase or None)


class CertificateAuthority:
    """A root CA with a delegated OCSP signer and a table of issued certs."""

    def __init__(
        self,
        directory: Path,
        *,
        instance: str,
        ca_key: object,
        ca_cert: x509.Certificate,
        ocsp_key: object,
        ocsp_cert: x509.Certificate,
        ocsp_url: str | None,
        cert_days: int = CERT_DAYS,
        next_update_seconds: int = NEXT_UPDATE_SECONDS,
    ) -> None:
        self.directory = directory
        self.instance = instance
        self.ca_key = ca_key
        self.ca_cert = ca_cert
        self.ocsp_key = ocsp_key
        self.ocsp_cert = ocsp_cert
        self.ocsp_url = ocsp_url
        self.cert_days = cert_days
        self.next_update_seconds = next_update_seconds

    # -- lifecycle ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | Path,
        instance: str,
        now: datetime,
        *,
        passphrase: bytes | None = None,
        name: str | None = None,
        ocsp_url: str | None = None,
        days: int = CA_DAYS,
        cert_days: int = CERT_DAYS,
        issuer: CertificateAuthority | None = None,
    ) -> CertificateAuthority:
        """Create keys, the CA certificate and the OCSP signer in an empty directory.

        Without ``issuer`` the CA is a self-signed root; with one it is an
        intermediate CA that ``issuer`` certifies and records, so the
        issuer's OCSP responder vouches for it (certificates-ocsp.md §6).
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        if (path / CA_KEY).exists():
            raise FileExistsError(f"a CA already exists in {path}")

        ca_key = pki.generate_key()
        ca_name = name or f"{instance} xgate CA"
        if issuer is None:
            ca_cert = pki.build_ca(ca_name, ca_key, now, days)
        else:
            ca_cert = pki.build_intermediate_ca(
                ca_name, ca_key, issuer.ca_key, issuer.ca_cert, now, days
            )
            issuer._record(ca_cert, "ca")
        ocsp_key = pki.generate_key()
        ocsp_cert = pki.build_ocsp_signer_cert(
            ca_key, ca_cert, ocsp_key, now, min(days, OCSP_SIGNER_DAYS)
        )

        write_private(path / CA_KEY, _key_pem(ca_key, passphrase))
        write_private(path / OCSP_KEY, _key_pem(ocsp_key, passphrase))
        (path / CA_CERT).write_bytes(_cert_pem(ca_cert))
        (path / OCSP_CERT).write_bytes(_cert_pem(ocsp_cert))
        settings = {"instance": instance, "ocsp_url": ocsp_url, "cert_days": cert_days}
        (path / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")

        ca = cls(
            path,
            instance=instance,
            ca_key=ca_key,
            ca_cert=ca_cert,
            ocsp_key=ocsp_key,
            ocsp_cert=ocsp_cert,
            ocsp_url=ocsp_url,
            cert_days=cert_days,
        )
        ca._ensure_table()
        ca._record(ocsp_cert, "ocsp")
        log.info("ca created dir=%s instance=%s", path, instance)
        return ca

    @classmethod
    def open(
        cls, directory: str | Path, *, passphrase: bytes | None = None
    ) -> CertificateAuthority:
        """Load an existing CA directory made by :meth:`create`."""
        path = Path(directory)
        settings = json.loads((path / SETTINGS).read_text())
        ca = cls(
            path,
            instance=settings["instance"],
            ca_key=_load_key(path / CA_KEY, passphrase),
            ca_cert=x509.load_pem_x509_certificate((path / CA_CERT).read_bytes()),
            ocsp_key=_load_key(path / OCSP_KEY, passphrase),
            ocsp_cert=x509.load_pem_x509_certificate((path / OCSP_CERT).read_bytes()),
            ocsp_url=settings.get("ocsp_url"),
            cert_days=int(settings.get("cert_days", CERT_DAYS)),
        )
        ca._ensure_table()
        return ca

    # -- the table ---------------------------------------------------------------

    def _db(self) -> sqlite_utils.Database:
        # One connection per call: the methods run in worker threads.
        return sqlite_utils.Database(self.directory / DATABASE)

    def _ensure_table(self) -> None:
        db = self._db()
        if TABLE not in db.table_names():
            db[TABLE].create(  # type: ignore[union-attr]
                {
                    "serial": str,
                    "kind": str,
                    "subject": str,
                    "not_before": str,
                    "not_after": str,
                    "der": bytes,
                    "status": str,
                    "revoked_at": str,
                    "reason": str,
                },
                pk="serial",
                not_null={
                    "kind",
                    "subject",
                    "not_before",
                    "not_after",
                    "der",
                    "status",
                },
            )
        db.conn.close()

    def _record(self, cert: x509.Certificate, kind: str) -> None:
        row = {
            # Stored as text: SQLite integers are signed 64-bit.
            "serial": str(cert.serial_number),
            "kind": kind,
            "subject": cert.subject.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "der": pki.cert_der(cert),
            "status": ocsp.OCSPCertStatus.GOOD.value,
            "revoked_at": None,
            "reason": None,
        }
        db = self._db()
        try:
            db[TABLE].insert(row)  # type: ignore[union-attr]
        except Exception as exc:  # sqlite3.IntegrityError and friends
            raise DatabaseError(f"cannot record certificate: {exc}") from exc
        finally:
            db.conn.close()

    def _row(self, serial: int) -> dict[str, object] | None:
        db = self._db()
        try:
            rows = list(db[TABLE].rows_where("serial = ?", [str(serial)]))
        finally:
            db.conn.close()
        return rows[0] if rows else None

    def _new_serial(self) -> int:
        while True:
            serial = secrets.randbits(63)
            if serial > 0 and self._row(serial) is None:
                return serial

    # -- operations --------------------------------------------------------------

    def issue(
        self,
        csr: bytes,
        kind: pki.CertKind,
        now: datetime,
        expected_member: ClientId | SecurityServerId | None = None,
    ) -> x509.Certificate:
        """Issue an auth or sign certificate for a DER or PEM CSR and record it.

        A signing certificate names a member, so the member it is meant for
        must be given and must match the CSR's subject.
        """
        if kind == "sign" and expected_member is None:
            raise pki.InvalidCsr(
                "a signing certificate needs the member it is issued for"
            )
        cert = pki.issue_certificate(
            csr,
            kind,
            self.ca_key,
            self.ca_cert,
            self._new_serial(),
            now,
            self.cert_days,
            self.ocsp_url,
            expected_member=expected_member,
        )
        self._record(cert, kind)
        log.info(
            "certificate issued serial=%x kind=%s subject=%s",
            cert.serial_number,
            kind,
            cert.subject.rfc4514_string(),
        )
        return cert

    def revoke(
        self,
        serial: int,
        now: datetime,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    ) -> None:
        """Mark a certificate revoked at ``now``; revoking twice keeps the first time."""
        record = self.status(serial)
        if record is None:
            raise UnknownCertificate(
                f"no certificate with serial {serial:#x} was issued"
            )
        if record.status is ocsp.OCSPCertStatus.REVOKED:
            return
        db = self._db()
        try:
            db[TABLE].update(  # type: ignore[union-attr]
                str(serial),
                {
                    "status": ocsp.OCSPCertStatus.REVOKED.value,
                    "revoked_at": now.isoformat(),
                    "reason": reason.value,
                },
            )
        finally:
            db.conn.close()
        log.info("certificate revoked serial=%x reason=%s", serial, reason.value)

    def status(self, serial: int) -> IssuedCertificate | None:
        """Return the record of an issued certificate, or None if unknown."""
        row = self._row(serial)
        if row is None:
            return None
        revoked_at = row["revoked_at"]
        return IssuedCertificate(
            serial=int(str(row["serial"])),
            kind=str(row["kind"]),
            subject=str(row["subject"]),
            not_before=datetime.fromisoformat(str(row["not_before"])),
            not_after=datetime.fromisoformat(str(row["not_after"])),
            status=ocsp.OCSPCertStatus(str(row["status"])),
            revoked_at=datetime.fromisoformat(str(revoked_at)) if revoked_at else None,
            reason=str(row["reason"]) if row["reason"] else None,
            der=_blob(row["der"]),
        )

    def ocsp_response(self, request_der: bytes, now: datetime) -> bytes:
        """Answer one DER OCSP request; never raises for bad input.

        Serials we never issued get ``unknown``; CertIDs naming another CA get
        an ``unauthorized`` response (RFC 6960, 2.3).
        """
        try:
            cert_id = ocsp.parse_ocsp_request(request_der)
        except XRoadError:
            return ocsp.build_ocsp_error("malformed_request")
        ours = ocsp.cert_id_for(cert_id.serial, self.ca_cert)
        if cert_id[:2] != ours[:2]:
            return ocsp.build_ocsp_error("unauthorized")

        record = self.status(cert_id.serial)
        status = record.status if record else ocsp.OCSPCertStatus.UNKNOWN
        reason = None
        if record and record.reason:
            reason = x509.ReasonFlags(record.reason)
        next_update = None
        if self.next_update_seconds:
            next_update = now + timedelta(seconds=self.next_update_seconds)
        return ocsp.build_ocsp_response(
            issuer=self.ca_cert,
            cert_serial=cert_id.serial,
            status=status,
            this_update=now,
            next_update=next_update,
            revoked_at=record.revoked_at if record else None,
            revocation_reason=reason,
            responder_key=self.ocsp_key,
            responder_cert=self.ocsp_cert,
        )


# -- aiohttp adapter -------------------------------------------------------------


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected a blob, got {type(value).__name__}")
    return bytes(value)


CA_KEY_APP = web.AppKey("ca", CertificateAuthority)
CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")


def _reply(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=ocsp.OCSP_RESPONSE_TYPE)


async def _answer(request: web.Request, der: bytes) -> web.Response:
    ca = request.app[CA_KEY_APP]
    now = request.app[CLOCK_KEY]()
    try:
        body = await asyncio.to_thread(ca.ocsp_response, der, now)
    except Exception:
        log.exception("ocsp responder failed")
        body = ocsp.build_ocsp_error("internal_error")
    return _reply(body)


async def on_ocsp_post(request: web.Request) -> web.Response:
    """RFC 6960 A.1.1 POST: the body is a DER OCSPRequest."""
    if request.content_type != ocsp.OCSP_REQUEST_TYPE:
        return _reply(ocsp.build_ocsp_error("malformed_request"))
    if request.content_length and request.content_length > MAX_REQUEST_BYTES:
        return _reply(ocsp.build_ocsp_error("malformed_request"))
    der = await read_at_most(request.content, MAX_REQUEST_BYTES)
    if len(der) > MAX_REQUEST_BYTES:
        return _reply(ocsp.build_ocsp_error("malformed_request"))
    return await _answer(request, der)


async def on_ocsp_get(request: web.Request) -> web.Response:
    """RFC 6960 A.1.1 GET: the path is the URL-encoded base64 of the request."""
    encoded = unquote(request.match_info["encoded"])
    try:
        der = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return _reply(ocsp.build_ocsp_error("malformed_request"))
    return await _answer(request, der)


def ocsp_app(
    ca: CertificateAuthority, clock: Callable[[], datetime]
) -> web.Application:
    """Build the OCSP responder application; ``clock`` returns an aware UTC time."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[CA_KEY_APP] = ca
    app[CLOCK_KEY] = clock
    app.router.add_post("/", on_ocsp_post)
    app.router.add_get("/{encoded:.+}", on_ocsp_get)
    return app
