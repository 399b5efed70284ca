"""Store: the central server registry, one SQLite file ``registry.db``.

Holds what the central server publishes in global configuration
(global-configuration.md §6, §7): member classes, members and subsystems,
security servers with their auth certificates and clients, approved CAs and
TSAs, global groups and the global settings. Every mutating method checks its
input, runs in one transaction and raises a coded :class:`RegistryError`.

The connection may be used from worker threads (``asyncio.to_thread``); one
lock serialises access.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import sqlite_utils
from cryptography import x509

from protocol import pki
from protocol.errors import InvalidRequest, XRoadError
from protocol.globalconf import (
    ApprovedCA,
    ApprovedTSA,
    GlobalGroup,
    ManagementService,
    Member,
    OCSPInfo,
    PrivateParameters,
    SecurityServer,
    SharedParameters,
    auth_cert_hash,
)
from protocol.identifiers import ClientId, SecurityServerId, check_strict

DB_NAME = "registry.db"
SCHEMA_VERSION = 1

# Defaults from global-configuration.md §6, §7 and §9.
DEFAULT_OCSP_FRESHNESS = 3600
DEFAULT_TIMESTAMPING_INTERVAL = 60
DEFAULT_CONF_EXPIRE_INTERVAL = 600


class RegistryError(XRoadError):
    """A registry operation was refused."""

    code: ClassVar[str] = "RegistryError"


class InvalidRegistryInput(RegistryError, InvalidRequest):
    """Bad input; also an ``InvalidRequest`` like the identifier checks raise."""

    code: ClassVar[str] = "InvalidRequest"


class DuplicateEntry(RegistryError):
    code: ClassVar[str] = "DuplicateEntry"


class EntryNotFound(RegistryError):
    code: ClassVar[str] = "NotFound"


class UnknownRegistryMember(EntryNotFound):
    code: ClassVar[str] = "UnknownMember"


class UnknownSecurityServer(EntryNotFound):
    code: ClassVar[str] = "UnknownSecurityServer"


class UnknownGlobalGroup(EntryNotFound):
    code: ClassVar[str] = "UnknownGlobalGroup"


class IncompleteRegistry(RegistryError):
    code: ClassVar[str] = "IncompleteRegistry"


@dataclass(frozen=True, slots=True)
class MemberRecord:
    member_id: ClientId
    name: str
    subsystems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServerRecord:
    server_id: SecurityServerId
    address: str | None
    auth_certs: tuple[bytes, ...]  # DER, in registration order
    clients: tuple[ClientId, ...]


@dataclass(frozen=True, slots=True)
class IntermediateCA:
    """An intermediate CA certificate of an approved CA and its OCSP responder."""

    cert: bytes  # DER
    ocsp_url: str | None = None
    ocsp_cert: bytes | None = None  # DER of the responder certificate


@dataclass(frozen=True, slots=True)
class CARecord:
    name: str
    cert: bytes  # DER
    ocsp_url: str | None
    ocsp_cert: bytes | None  # DER of the responder certificate
    profile: str
    authentication_only: bool
    intermediates: tuple[IntermediateCA, ...] = ()


@dataclass(frozen=True, slots=True)
class TSARecord:
    name: str
    url: str
    cert: bytes  # DER


@dataclass(frozen=True, slots=True)
class GroupRecord:
    code: str
    description: str
    members: tuple[ClientId, ...]


@dataclass(frozen=True, slots=True)
class Settings:
    ocsp_freshness_seconds: int
    timestamping_interval_seconds: int
    conf_expire_interval_seconds: int
    management_service_address: str | None
    management_service_cert: bytes | None
    management_service_provider: ClientId | None
    central_server_address: str | None  # published as ``source/address``


# -- input checks --------------------------------------------------------------


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRegistryInput(f"{what} must be a non-empty string, got {value!r}")
    if any(ord(ch) < 0x20 for ch in value):
        raise InvalidRegistryInput(f"{what} contains control characters: {value!r}")
    return value


def _check_address(value: str) -> str:
    """A host name or IP address, as in ``securityServer/address``."""
    _check_text(value, "address")
    allowed = set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_"
    )
    if not set(value) <= allowed:
        raise InvalidRegistryInput(
            f"address must be a host name or IP address: {value!r}"
        )
    return value


def _check_url(value: str, what: str = "url") -> str:
    _check_text(value, what)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRegistryInput(f"{what} must be an http(s) URL, got {value!r}")
    if any(ch.isspace() for ch in value):
        raise InvalidRegistryInput(f"{what} must not contain white space: {value!r}")
    return value


def _check_cert(der: bytes, what: str) -> bytes:
    if not isinstance(der, bytes) or not der:
        raise InvalidRegistryInput(f"{what} must be DER bytes")
    try:
        x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InvalidRegistryInput(f"{what} is not a DER X.509 certificate") from exc
    return der


def _check_seconds(value: int, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRegistryInput(f"{what} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidRegistryInput(f"{what} must be in {low}..{high}, got {value!r}")
    return value


def _client_key(client_id: ClientId) -> tuple[str, str, str]:
    return (
        client_id.member_class,
        client_id.member_code,
        client_id.subsystem_code or "",
    )


# -- the store ------------------------------------------------------------------


class Registry:
    """The central server's database of members, servers, CAs and settings."""

    def __init__(self, db: sqlite_utils.Database, instance: str) -> None:
        self._db = db
        self._lock = threading.RLock()
        self.instance = instance

    # lifecycle

    @classmethod
    def create(cls, path: Path, instance: str) -> Registry:
        """Create ``registry.db`` in directory ``path`` for ``instance``."""
        check_strict(instance, "instance identifier")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        db_file = path / DB_NAME
        if db_file.exists():
            raise DuplicateEntry(f"a registry already exists at {str(db_file)!r}")
        db = _connect(db_file)
        with db.conn:
            _create_schema(db)
            meta = [
                ("schema_version", SCHEMA_VERSION),
                ("instance", instance),
                ("ocsp_freshness_seconds", DEFAULT_OCSP_FRESHNESS),
                ("timestamping_interval_seconds", DEFAULT_TIMESTAMPING_INTERVAL),
                ("conf_expire_interval_seconds", DEFAULT_CONF_EXPIRE_INTERVAL),
            ]
            for key, value in meta:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [key, json.dumps(value)],
                )
        return cls(db, instance)

    @classmethod
    def open(cls, path: Path) -> Registry:
        """Open the registry in directory ``path``."""
        db_file = Path(path) / DB_NAME
        if not db_file.is_file():
            raise EntryNotFound(f"no registry at {str(db_file)!r}")
        db = _connect(db_file)
        row = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        if row is None:
            raise IncompleteRegistry(f"registry {str(db_file)!r} has no instance")
        with db.conn:
            _create_intermediates_table(db)  # registries made before it existed
        return cls(db, json.loads(row[0]))

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction; integrity errors become DuplicateEntry."""
        with self._lock:
            conn = self._db.conn
            try:
                with conn:
                    yield conn
            except sqlite3.IntegrityError as exc:
                raise DuplicateEntry(f"entry already exists ({exc})") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction, for stores that keep tables in this database."""
        with self._tx() as conn:
            yield conn

    def query(self, sql: str, params: Any = ()) -> list[Any]:
        """Read rows, for stores that keep tables in this database."""
        return self._read(sql, params)

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # identifiers

    def _check_client(self, client_id: ClientId, *, create: bool) -> None:
        if not isinstance(client_id, ClientId):
            raise InvalidRegistryInput(f"expected a ClientId, got {client_id!r}")
        if client_id.instance != self.instance:
            raise InvalidRegistryInput(
                f"identifier {str(client_id)!r} is not in instance {self.instance!r}"
            )
        if create:
            for part in client_id.parts()[1:]:
                check_strict(part, "identifier component")

    def _member_row(self, conn: sqlite3.Connection, member_id: ClientId) -> int:
        row = conn.execute(
            "SELECT id FROM members WHERE member_class = ? AND member_code = ?",
            [member_id.member_class, member_id.member_code],
        ).fetchone()
        if row is None:
            raise UnknownRegistryMember(
                f"member {str(member_id.member)!r} is not registered"
            )
        return int(row[0])

    def _require_client(self, conn: sqlite3.Connection, client_id: ClientId) -> None:
        member_row = self._member_row(conn, client_id)
        if client_id.subsystem_code is None:
            return
        row = conn.execute(
            "SELECT 1 FROM subsystems WHERE member_id = ? AND subsystem_code = ?",
            [member_row, client_id.subsystem_code],
        ).fetchone()
        if row is None:
            raise UnknownRegistryMember(
                f"subsystem {str(client_id)!r} is not registered"
            )

    def _server_row(self, conn: sqlite3.Connection, server_id: SecurityServerId) -> int:
        self._check_client(server_id.owner.member, create=False)
        member_row = self._member_row(conn, server_id.owner)
        row = conn.execute(
            "SELECT id FROM servers WHERE owner_id = ? AND server_code = ?",
            [member_row, server_id.server_code],
        ).fetchone()
        if row is None:
            raise UnknownSecurityServer(
                f"security server {str(server_id)!r} is not registered"
            )
        return int(row[0])

    # member classes

    def add_member_class(self, code: str, description: str) -> None:
        check_strict(code, "member class")
        _check_text(description, "member class description")
        with self._tx() as conn:
            if conn.execute(
                "SELECT 1 FROM member_classes WHERE code = ?", [code]
            ).fetchone():
                raise DuplicateEntry(f"member class {code!r} already exists")
            conn.execute(
                "INSERT INTO member_classes (code, description) VALUES (?, ?)",
                [code, description],
            )

    def list_member_classes(self) -> list[tuple[str, str]]:
        rows = self._read("SELECT code, description FROM member_classes ORDER BY code")
        return [(row[0], row[1]) for row in rows]

    # members and subsystems

    def add_member(self, member_id: ClientId, name: str) -> None:
        """Register a member; its class must exist."""
        self._check_client(member_id, create=True)
        if member_id.subsystem_code is not None:
            raise InvalidRegistryInput(
                f"{str(member_id)!r} is a subsystem, not a member"
            )
        _check_text(name, "member name")
        with self._tx() as conn:
            known = conn.execute(
                "SELECT 1 FROM member_classes WHERE code = ?", [member_id.member_class]
            ).fetchone()
            if not known:
                raise EntryNotFound(
                    f"member class {member_id.member_class!r} does not exist"
                )
            exists = conn.execute(
                "SELECT 1 FROM members WHERE member_class = ? AND member_code = ?",
                [member_id.member_class, member_id.member_code],
            ).fetchone()
            if exists:
                raise DuplicateEntry(f"member {str(member_id)!r} already exists")
            conn.execute(
                "INSERT INTO members (member_class, member_code, name) VALUES (?, ?, ?)",
                [member_id.member_class, member_id.member_code, name],
            )

    def add_subsystem(self, subsystem_id: ClientId) -> None:
        """Register a subsystem under its (existing) member."""
        self._check_client(subsystem_id, create=True)
        if subsystem_id.subsystem_code is None:
            raise InvalidRegistryInput(f"{str(subsystem_id)!r} is not a subsystem")
        with self._tx() as conn:
            member_row = self._member_row(conn, subsystem_id)
            exists = conn.execute(
                "SELECT 1 FROM subsystems WHERE member_id = ? AND subsystem_code = ?",
                [member_row, subsystem_id.subsystem_code],
            ).fetchone()
            if exists:
                raise DuplicateEntry(f"subsystem {str(subsystem_id)!r} already exists")
            conn.execute(
                "INSERT INTO subsystems (member_id, subsystem_code) VALUES (?, ?)",
                [member_row, subsystem_id.subsystem_code],
            )

    def list_members(self) -> list[MemberRecord]:
        rows = self._read(
            "SELECT id, member_class, member_code, name FROM members ORDER BY id"
        )
        subsystems: dict[int, list[str]] = {}
        for member_row, code in self._read(
            "SELECT member_id, subsystem_code FROM subsystems ORDER BY id"
        ):
            subsystems.setdefault(member_row, []).append(code)
        return [
            MemberRecord(
                ClientId(self.instance, row[1], row[2]),
                row[3],
                tuple(subsystems.get(row[0], ())),
            )
            for row in rows
        ]

    def get_member(self, member_id: ClientId) -> MemberRecord:
        self._check_client(member_id, create=False)
        for record in self.list_members():
            if record.member_id == member_id.member:
                return record
        raise UnknownRegistryMember(
            f"member {str(member_id.member)!r} is not registered"
        )

    def list_subsystems(self, member_id: ClientId) -> list[ClientId]:
        record = self.get_member(member_id)
        return [
            ClientId(self.instance, member_id.member_class, member_id.member_code, code)
            for code in record.subsystems
        ]

    # security servers

    def add_security_server(self, server_id: SecurityServerId, address: str) -> None:
        """Register a server owned by an existing member."""
        self._check_client(server_id.owner.member, create=False)
        check_strict(server_id.server_code, "server code")
        _check_address(address)
        with self._tx() as conn:
            member_row = self._member_row(conn, server_id.owner)
            exists = conn.execute(
                "SELECT 1 FROM servers WHERE owner_id = ? AND server_code = ?",
                [member_row, server_id.server_code],
            ).fetchone()
            if exists:
                raise DuplicateEntry(
                    f"security server {str(server_id)!r} already exists"
                )
            conn.execute(
                "INSERT INTO servers (owner_id, server_code, address) VALUES (?, ?, ?)",
                [member_row, server_id.server_code, address],
            )

    def set_server_address(self, server_id: SecurityServerId, address: str) -> None:
        _check_address(address)
        with self._tx() as conn:
            server_row = self._server_row(conn, server_id)
            conn.execute(
                "UPDATE servers SET address = ? WHERE id = ?", [address, server_row]
            )

    def add_auth_cert(self, server_id: SecurityServerId, cert_der: bytes) -> None:
        """Attach an authentication certificate (DER); one server per cert."""
        _check_cert(cert_der, "authentication certificate")
        with self._tx() as conn:
            server_row = self._server_row(conn, server_id)
            if conn.execute(
                "SELECT 1 FROM auth_certs WHERE cert = ?", [cert_der]
            ).fetchone():
                raise DuplicateEntry(
                    "the authentication certificate is already registered"
                )
            conn.execute(
                "INSERT INTO auth_certs (server_id, cert) VALUES (?, ?)",
                [server_row, cert_der],
            )

    def remove_auth_cert(self, server_id: SecurityServerId, cert_der: bytes) -> None:
        with self._tx() as conn:
            server_row = self._server_row(conn, server_id)
            cursor = conn.execute(
                "DELETE FROM auth_certs WHERE server_id = ? AND cert = ?",
                [server_row, cert_der],
            )
            if cursor.rowcount == 0:
                raise EntryNotFound(
                    f"certificate is not registered for {str(server_id)!r}"
                )

    def register_client(self, server_id: SecurityServerId, client_id: ClientId) -> None:
        """Make a registered member or subsystem a client of a server."""
        self._check_client(client_id, create=False)
        with self._tx() as conn:
            server_row = self._server_row(conn, server_id)
            self._require_client(conn, client_id)
            key = _client_key(client_id)
            exists = conn.execute(
                "SELECT 1 FROM server_clients WHERE server_id = ? AND member_class = ?"
                " AND member_code = ? AND subsystem_code = ?",
                [server_row, *key],
            ).fetchone()
            if exists:
                raise DuplicateEntry(
                    f"{str(client_id)!r} is already a client of this server"
                )
            conn.execute(
                "INSERT INTO server_clients"
                " (server_id, member_class, member_code, subsystem_code) VALUES (?, ?, ?, ?)",
                [server_row, *key],
            )

    def unregister_client(
        self, server_id: SecurityServerId, client_id: ClientId
    ) -> None:
        self._check_client(client_id, create=False)
        with self._tx() as conn:
            server_row = self._server_row(conn, server_id)
            cursor = conn.execute(
                "DELETE FROM server_clients WHERE server_id = ? AND member_class = ?"
                " AND member_code = ? AND subsystem_code = ?",
                [server_row, *_client_key(client_id)],
            )
            if cursor.rowcount == 0:
                raise EntryNotFound(
                    f"{str(client_id)!r} is not a client of {str(server_id)!r}"
                )

    def list_security_servers(self) -> list[ServerRecord]:
        owners = {
            row[0]: ClientId(self.instance, row[1], row[2])
            for row in self._read("SELECT id, member_class, member_code FROM members")
        }
        certs: dict[int, list[bytes]] = {}
        for server_row, cert in self._read(
            "SELECT server_id, cert FROM auth_certs ORDER BY id"
        ):
            certs.setdefault(server_row, []).append(cert)
        clients: dict[int, list[ClientId]] = {}
        for row in self._read(
            "SELECT server_id, member_class, member_code, subsystem_code"
            " FROM server_clients ORDER BY id"
        ):
            client = ClientId(self.instance, row[1], row[2], row[3] or None)
            clients.setdefault(row[0], []).append(client)
        return [
            ServerRecord(
                SecurityServerId(owners[row[1]], row[2]),
                row[3],
                tuple(certs.get(row[0], ())),
                tuple(clients.get(row[0], ())),
            )
            for row in self._read(
                "SELECT id, owner_id, server_code, address FROM servers ORDER BY id"
            )
        ]

    def get_security_server(self, server_id: SecurityServerId) -> ServerRecord:
        for record in self.list_security_servers():
            if record.server_id == server_id:
                return record
        raise UnknownSecurityServer(
            f"security server {str(server_id)!r} is not registered"
        )

    # approved CAs and TSAs

    def add_approved_ca(
        self,
        name: str,
        cert_der: bytes,
        *,
        profile: str,
        ocsp_url: str | None = None,
        ocsp_cert_der: bytes | None = None,
        authentication_only: bool = False,
        intermediates: Sequence[IntermediateCA] = (),
    ) -> None:
        """Approve a CA: its top certificate and intermediates (global conf §7).

        Each certificate may name one OCSP responder. Every intermediate must
        chain up to the top CA through the others (certificates-ocsp.md §6).

        :raises CannotCreateCertPath: an intermediate does not chain to the top.
        """
        # TODO(#3): several OCSP responders per CA certificate.
        _check_text(name, "CA name")
        _check_cert(cert_der, "CA certificate")
        _check_text(profile, "certificate profile")
        _check_ocsp(ocsp_url, ocsp_cert_der)
        for intermediate in intermediates:
            _check_cert(intermediate.cert, "intermediate CA certificate")
            _check_ocsp(intermediate.ocsp_url, intermediate.ocsp_cert)
        _check_chains_to_top(cert_der, [i.cert for i in intermediates])
        with self._tx() as conn:
            if conn.execute(
                "SELECT 1 FROM approved_cas WHERE name = ?", [name]
            ).fetchone():
                raise DuplicateEntry(f"approved CA {name!r} already exists")
            if conn.execute(
                "SELECT 1 FROM approved_cas WHERE cert = ?", [cert_der]
            ).fetchone():
                raise DuplicateEntry("this CA certificate is already approved")
            known = {bytes(r[0]) for r in conn.execute("SELECT cert FROM approved_cas")}
            known |= {
                bytes(r[0])
                for r in conn.execute("SELECT cert FROM approved_ca_intermediates")
            }
            if any(i.cert in known for i in intermediates):
                raise DuplicateEntry(
                    "an intermediate CA certificate is already approved"
                )
            cursor = conn.execute(
                "INSERT INTO approved_cas"
                " (name, cert, ocsp_url, ocsp_cert, profile, authentication_only)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    name,
                    cert_der,
                    ocsp_url,
                    ocsp_cert_der,
                    profile,
                    int(authentication_only),
                ],
            )
            for intermediate in intermediates:
                conn.execute(
                    "INSERT INTO approved_ca_intermediates"
                    " (ca_id, cert, ocsp_url, ocsp_cert) VALUES (?, ?, ?, ?)",
                    [
                        cursor.lastrowid,
                        intermediate.cert,
                        intermediate.ocsp_url,
                        intermediate.ocsp_cert,
                    ],
                )

    def list_approved_cas(self) -> list[CARecord]:
        per_ca: dict[int, list[IntermediateCA]] = {}
        for row in self._read(
            "SELECT ca_id, cert, ocsp_url, ocsp_cert"
            " FROM approved_ca_intermediates ORDER BY id"
        ):
            per_ca.setdefault(row[0], []).append(IntermediateCA(*row[1:]))
        rows = self._read(
            "SELECT name, cert, ocsp_url, ocsp_cert, profile, authentication_only, id"
            " FROM approved_cas ORDER BY id"
        )
        return [
            CARecord(
                r[0], r[1], r[2], r[3], r[4], bool(r[5]), tuple(per_ca.get(r[6], ()))
            )
            for r in rows
        ]

    def add_approved_tsa(self, name: str, url: str, cert_der: bytes) -> None:
        _check_text(name, "TSA name")
        _check_url(url, "TSA URL")
        _check_cert(cert_der, "TSA certificate")
        with self._tx() as conn:
            if conn.execute(
                "SELECT 1 FROM approved_tsas WHERE name = ?", [name]
            ).fetchone():
                raise DuplicateEntry(f"approved TSA {name!r} already exists")
            conn.execute(
                "INSERT INTO approved_tsas (name, url, cert) VALUES (?, ?, ?)",
                [name, url, cert_der],
            )

    def list_approved_tsas(self) -> list[TSARecord]:
        rows = self._read("SELECT name, url, cert FROM approved_tsas ORDER BY id")
        return [TSARecord(r[0], r[1], r[2]) for r in rows]

    # global groups

    def add_global_group(self, code: str, description: str) -> None:
        check_strict(code, "group code")
        _check_text(description, "group description")
        with self._tx() as conn:
            if conn.execute(
                "SELECT 1 FROM global_groups WHERE code = ?", [code]
            ).fetchone():
                raise DuplicateEntry(f"global group {code!r} already exists")
            conn.execute(
                "INSERT INTO global_groups (code, description) VALUES (?, ?)",
                [code, description],
            )

    def add_group_member(self, code: str, client_id: ClientId) -> None:
        """Add a registered member or subsystem to a global group."""
        self._check_client(client_id, create=False)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id FROM global_groups WHERE code = ?", [code]
            ).fetchone()
            if row is None:
                raise UnknownGlobalGroup(f"global group {code!r} does not exist")
            self._require_client(conn, client_id)
            key = _client_key(client_id)
            exists = conn.execute(
                "SELECT 1 FROM group_members WHERE group_id = ? AND member_class = ?"
                " AND member_code = ? AND subsystem_code = ?",
                [row[0], *key],
            ).fetchone()
            if exists:
                raise DuplicateEntry(f"{str(client_id)!r} is already in group {code!r}")
            conn.execute(
                "INSERT INTO group_members"
                " (group_id, member_class, member_code, subsystem_code) VALUES (?, ?, ?, ?)",
                [row[0], *key],
            )

    def list_global_groups(self) -> list[GroupRecord]:
        members: dict[int, list[ClientId]] = {}
        for row in self._read(
            "SELECT group_id, member_class, member_code, subsystem_code"
            " FROM group_members ORDER BY id"
        ):
            client = ClientId(self.instance, row[1], row[2], row[3] or None)
            members.setdefault(row[0], []).append(client)
        rows = self._read("SELECT id, code, description FROM global_groups ORDER BY id")
        return [GroupRecord(r[1], r[2], tuple(members.get(r[0], ()))) for r in rows]

    # settings

    def _get_meta(self, key: str) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", [key])
        return json.loads(rows[0][0]) if rows else None

    def _set_meta(self, conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [key, json.dumps(value)],
        )

    def settings(self) -> Settings:
        provider = self._get_meta("management_provider")
        cert_hex = self._get_meta("management_cert")
        return Settings(
            ocsp_freshness_seconds=self._get_meta("ocsp_freshness_seconds"),
            timestamping_interval_seconds=self._get_meta(
                "timestamping_interval_seconds"
            ),
            conf_expire_interval_seconds=self._get_meta("conf_expire_interval_seconds"),
            management_service_address=self._get_meta("management_address"),
            management_service_cert=bytes.fromhex(cert_hex) if cert_hex else None,
            management_service_provider=(
                ClientId(self.instance, *provider) if provider else None
            ),
            central_server_address=self._get_meta("central_server_address"),
        )

    def set_ocsp_freshness(self, seconds: int) -> None:
        """Set ``ocspFreshnessSeconds``; must stay above the timestamping interval."""
        _check_seconds(seconds, "OCSP freshness", 60, 7 * 86400)
        with self._tx() as conn:
            if seconds <= self.settings().timestamping_interval_seconds:
                raise InvalidRegistryInput(
                    f"OCSP freshness {seconds} must exceed the timestamping interval"
                )
            self._set_meta(conn, "ocsp_freshness_seconds", seconds)

    def set_timestamping_interval(self, seconds: int) -> None:
        """Set ``timeStampingIntervalSeconds`` (global-configuration.md §6: 60..86400)."""
        _check_seconds(seconds, "timestamping interval", 60, 86400)
        with self._tx() as conn:
            if seconds >= self.settings().ocsp_freshness_seconds:
                raise InvalidRegistryInput(
                    f"timestamping interval {seconds} must be below the OCSP freshness"
                )
            self._set_meta(conn, "timestamping_interval_seconds", seconds)

    def set_conf_expire_interval(self, seconds: int) -> None:
        """Set how long a published directory stays valid (Expire-date = now + this)."""
        _check_seconds(seconds, "configuration expire interval", 60, 7 * 86400)
        with self._tx() as conn:
            self._set_meta(conn, "conf_expire_interval_seconds", seconds)

    def set_central_server_address(self, address: str) -> None:
        """Set the host name published as this central server's ``source/address``."""
        _check_address(address)
        with self._tx() as conn:
            self._set_meta(conn, "central_server_address", address)

    def set_management_service(
        self, address: str, provider: ClientId, cert_der: bytes | None = None
    ) -> None:
        """Set the authCertReg address and the management request provider."""
        _check_url(address, "management service address")
        self._check_client(provider, create=False)
        if cert_der is not None:
            _check_cert(cert_der, "management service TLS certificate")
        with self._tx() as conn:
            self._require_client(conn, provider)
            self._set_meta(conn, "management_address", address)
            self._set_meta(conn, "management_provider", list(provider.parts()[1:]))
            self._set_meta(
                conn, "management_cert", cert_der.hex() if cert_der else None
            )

    # publishing view

    def snapshot(self) -> tuple[SharedParameters, PrivateParameters]:
        """Read everything into the protocol's parameter objects.

        ``SharedParameters.sources`` and ``PrivateParameters.anchors`` are left
        empty: the publisher fills in the sources, federation the anchors.
        """
        with self._lock:
            settings = self.settings()
            shared = SharedParameters(
                instance=self.instance,
                sources=(),
                approved_cas=tuple(_approved_ca(r) for r in self.list_approved_cas()),
                approved_tsas=tuple(
                    ApprovedTSA(name=r.name, url=r.url, cert=_load(r.cert))
                    for r in self.list_approved_tsas()
                ),
                members=tuple(
                    Member(id=r.member_id, name=r.name, subsystems=r.subsystems)
                    for r in self.list_members()
                ),
                security_servers=tuple(
                    SecurityServer(
                        id=r.server_id,
                        address=r.address,
                        auth_cert_hashes=tuple(
                            auth_cert_hash(_load(c)) for c in r.auth_certs
                        ),
                        clients=r.clients,
                    )
                    for r in self.list_security_servers()
                ),
                global_groups=tuple(
                    GlobalGroup(
                        instance=self.instance,
                        code=g.code,
                        description=g.description,
                        members=g.members,
                    )
                    for g in self.list_global_groups()
                ),
                member_classes=tuple(self.list_member_classes()),
                ocsp_freshness_seconds=settings.ocsp_freshness_seconds,
            )
        if settings.management_service_address is None or (
            settings.management_service_provider is None
        ):
            raise IncompleteRegistry("the management service is not configured")
        private = PrivateParameters(
            instance=self.instance,
            anchors=(),
            management_service=ManagementService(
                auth_cert_reg_address=settings.management_service_address,
                auth_cert_reg_cert=(
                    _load(settings.management_service_cert)
                    if settings.management_service_cert
                    else None
                ),
                provider=settings.management_service_provider,
            ),
            timestamping_interval_seconds=settings.timestamping_interval_seconds,
        )
        return shared, private


def _load(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _ocsp_infos(url: str | None, cert_der: bytes | None) -> tuple[OCSPInfo, ...]:
    if not url:
        return ()
    return (OCSPInfo(url=url, cert=_load(cert_der) if cert_der else None),)


def _approved_ca(record: CARecord) -> ApprovedCA:
    return ApprovedCA(
        name=record.name,
        top_ca=_load(record.cert),
        intermediates=tuple(_load(i.cert) for i in record.intermediates),
        ocsp=_ocsp_infos(record.ocsp_url, record.ocsp_cert),
        profile=record.profile,
        authentication_only=record.authentication_only,
        intermediate_ocsp=tuple(
            _ocsp_infos(i.ocsp_url, i.ocsp_cert) for i in record.intermediates
        ),
    )


def _check_ocsp(url: str | None, cert_der: bytes | None) -> None:
    if url is not None:
        _check_url(url, "OCSP URL")
    if cert_der is not None:
        if url is None:
            raise InvalidRegistryInput(
                "an OCSP responder certificate needs an OCSP URL"
            )
        _check_cert(cert_der, "OCSP responder certificate")


def _check_chains_to_top(top_der: bytes, intermediates: list[bytes]) -> None:
    top = _load(top_der)
    certs = [_load(der) for der in intermediates]
    for cert in certs:
        pki.build_cert_path(cert, [c for c in certs if c is not cert], [top])


def _create_intermediates_table(db: sqlite_utils.Database) -> None:
    if "approved_ca_intermediates" in db.table_names():
        return
    db.table("approved_ca_intermediates").create(
        {"id": int, "ca_id": int, "cert": bytes, "ocsp_url": str, "ocsp_cert": bytes},
        pk="id",
        foreign_keys=[("ca_id", "approved_cas", "id")],
    )


def _connect(db_file: Path) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(db_file), check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    return db


def _create_schema(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("member_classes").create({"code": str, "description": str}, pk="code")
    db.table("members").create(
        {"id": int, "member_class": str, "member_code": str, "name": str},
        pk="id",
        foreign_keys=[("member_class", "member_classes", "code")],
    )
    db.table("members").create_index(["member_class", "member_code"], unique=True)
    db.table("subsystems").create(
        {"id": int, "member_id": int, "subsystem_code": str},
        pk="id",
        foreign_keys=[("member_id", "members", "id")],
    )
    db.table("subsystems").create_index(["member_id", "subsystem_code"], unique=True)
    db.table("servers").create(
        {"id": int, "owner_id": int, "server_code": str, "address": str},
        pk="id",
        foreign_keys=[("owner_id", "members", "id")],
    )
    db.table("servers").create_index(["owner_id", "server_code"], unique=True)
    db.table("auth_certs").create(
        {"id": int, "server_id": int, "cert": bytes},
        pk="id",
        foreign_keys=[("server_id", "servers", "id")],
    )
    db.table("auth_certs").create_index(["cert"], unique=True)
    client_cols = {"member_class": str, "member_code": str, "subsystem_code": str}
    db.table("server_clients").create(
        {"id": int, "server_id": int, **client_cols},
        pk="id",
        foreign_keys=[("server_id", "servers", "id")],
    )
    db.table("server_clients").create_index(
        ["server_id", "member_class", "member_code", "subsystem_code"], unique=True
    )
    db.table("approved_cas").create(
        {
            "id": int,
            "name": str,
            "cert": bytes,
            "ocsp_url": str,
            "ocsp_cert": bytes,
            "profile": str,
            "authentication_only": int,
        },
        pk="id",
    )
    db.table("approved_cas").create_index(["name"], unique=True)
    _create_intermediates_table(db)
    db.table("approved_tsas").create(
        {"id": int, "name": str, "url": str, "cert": bytes}, pk="id"
    )
    db.table("approved_tsas").create_index(["name"], unique=True)
    db.table("global_groups").create(
        {"id": int, "code": str, "description": str}, pk="id"
    )
    db.table("global_groups").create_index(["code"], unique=True)
    db.table("group_members").create(
        {"id": int, "group_id": int, **client_cols},
        pk="id",
        foreign_keys=[("group_id", "global_groups", "id")],
    )
    db.table("group_members").create_index(
        ["group_id", "member_class", "member_code", "subsystem_code"], unique=True
    )
