"""Store: the security server's own configuration in ``serverconf.db``.

Identity, clients, services with their REST endpoints, access rights and
local groups, plus a small key/value settings table. Access decisions follow
transport.md §9 step 4 and rest-message.md §7. SQLite-specific details stay
inside this module; calls block (run them with ``asyncio.to_thread``).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote_to_bytes

import sqlite_utils

from protocol.errors import InvalidRequest, UnknownMember, UnknownService
from protocol.identifiers import (
    ClientId,
    GlobalGroupId,
    LocalGroupId,
    SecurityServerId,
    ServiceId,
    check_strict,
    encode_component,
    split_encoded,
)

DB_NAME = "serverconf.db"
# settings key prefix of a client's body-logging switch, then its slash form
_BODY_LOGGING_KEY = "message_body_logging:"
ANY_METHOD = "*"
ANY_PATH = "**"
_MAX_DECODE_ROUNDS = 8

Subject = ClientId | GlobalGroupId | LocalGroupId
GlobalGroups = Callable[[GlobalGroupId], set[ClientId]]


# metaservices.md §1: a provider may not define services with these codes.
RESERVED_SERVICE_CODES = frozenset(
    {
        "listClients",
        "listMethods",
        "allowedMethods",
        "getWsdl",
        "getOpenAPI",
        "getSecurityServerMetrics",
        "getSecurityServerOperationalData",
        "getSecurityServerHealthData",
    }
)


class ClientStatus(StrEnum):
    SAVED = "saved"
    REGISTERED = "registered"


class ServiceKind(StrEnum):
    SOAP = "SOAP"
    REST = "REST"


class UnknownLocalGroup(InvalidRequest):
    code = "UnknownLocalGroup"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One configured service of a provider on this server."""

    service_id: ServiceId
    kind: ServiceKind
    url: str
    timeout: int = 60
    description_url: str | None = None
    disabled_notice: str | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_notice is not None


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str


@dataclass(frozen=True, slots=True)
class AccessRight:
    service_code: str
    subject: Subject
    method: str
    path: str


# -- keys: unambiguous text forms of identifiers ------------------------------


def _client_key(client_id: ClientId) -> str:
    return client_id.slash()


def _client_from_key(key: str) -> ClientId:
    return ClientId(*split_encoded(key))


def _subject_key(subject: Subject) -> tuple[str, str]:
    if isinstance(subject, ClientId):
        return subject.object_type.value, _client_key(subject)
    if isinstance(subject, GlobalGroupId):
        parts = (subject.instance, subject.group_code)
        return "GLOBALGROUP", "/".join(encode_component(p) for p in parts)
    return "LOCALGROUP", encode_component(subject.group_code)


def _subject_from_key(kind: str, key: str) -> Subject:
    if kind == "GLOBALGROUP":
        instance, code = split_encoded(key)
        return GlobalGroupId(instance, code)
    if kind == "LOCALGROUP":
        return LocalGroupId(split_encoded(key)[0])
    return _client_from_key(key)


def _version_key(version: str | None) -> str:
    return version or ""


# -- REST path matching (rest-message.md §7) ----------------------------------


def normalize_service_path(path: str) -> str | None:
    """Percent-decode ``path`` completely and remove dot segments.

    Returns None (refuse) when decoding does not settle, the bytes are not
    UTF-8, or ``..`` is still present afterwards.
    """
    current = path
    for _ in range(_MAX_DECODE_ROUNDS):
        try:
            decoded = unquote_to_bytes(current).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if decoded == current:
            break
        current = decoded
    else:
        return None

    normalized = _remove_dot_segments(current)
    if normalized is None or ".." in normalized:
        return None
    return normalized


def _remove_dot_segments(path: str) -> str | None:
    """RFC 3986, 5.2.4, on a path that may or may not start with ``/``.

    Unlike RFC 3986, a ``..`` that would climb above the root refuses the
    path (None): the raw path goes to the service, which would resolve it
    above the service's base address (rest-message.md §7).
    """
    absolute = path.startswith("/")
    output: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) <= (1 if absolute else 0):
                return None
            output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ACL path glob: ``**`` any text, ``*`` within a segment,
    ``\\*`` a literal star, everything else literal."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("\\*", i):
            out.append(re.escape("*"))
            i += 2
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def endpoint_matches(endpoint: Endpoint, method: str, normalized_path: str) -> bool:
    """True when ``method`` and an already normalised path fit ``endpoint``."""
    if endpoint.method != ANY_METHOD and endpoint.method.upper() != method.upper():
        return False
    return glob_regex(endpoint.path).fullmatch(normalized_path) is not None


# -- the store ----------------------------------------------------------------


class ServerConf:
    """Blocking store over ``serverconf.db`` in a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.RLock()
        # One connection shared by the worker threads of asyncio.to_thread;
        # the lock serialises its use.
        conn = sqlite3.connect(Path(data_dir) / DB_NAME, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self._create_tables()

    def close(self) -> None:
        self.db.close()

    def _create_tables(self) -> None:
        db = self.db
        with self._lock:
            db.table("settings").create(
                {"key": str, "value": str}, pk="key", if_not_exists=True
            )
            db.table("clients").create(
                {"client": str, "status": str}, pk="client", if_not_exists=True
            )
            db.table("services").create(
                {
                    "provider": str,
                    "code": str,
                    "version": str,
                    "kind": str,
                    "url": str,
                    "timeout": int,
                    "description_url": str,
                    "disabled_notice": str,
                },
                pk=("provider", "code", "version"),
                if_not_exists=True,
            )
            db.table("endpoints").create(
                {"provider": str, "code": str, "method": str, "path": str},
                pk=("provider", "code", "method", "path"),
                if_not_exists=True,
            )
            db.table("access_rights").create(
                {
                    "provider": str,
                    "code": str,
                    "subject_type": str,
                    "subject": str,
                    "method": str,
                    "path": str,
                },
                pk=("provider", "code", "subject_type", "subject", "method", "path"),
                if_not_exists=True,
            )
            db.table("local_groups").create(
                {"owner": str, "code": str, "description": str},
                pk=("owner", "code"),
                if_not_exists=True,
            )
            db.table("local_group_members").create(
                {"owner": str, "code": str, "member": str},
                pk=("owner", "code", "member"),
                if_not_exists=True,
            )

    # -- settings and identity ------------------------------------------------

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            rows = list(self.db.table("settings").rows_where("key = ?", [key]))
        return rows[0]["value"] if rows else default

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self.db.table("settings").upsert({"key": key, "value": value}, pk="key")

    def set_identity(self, server_id: SecurityServerId) -> None:
        """Record which security server this is (owner member + server code)."""
        self.set_setting("server_id", server_id.slash())

    @property
    def server_id(self) -> SecurityServerId | None:
        raw = self.get_setting("server_id")
        return SecurityServerId.parse_slash(raw) if raw else None

    @property
    def instance(self) -> str | None:
        server_id = self.server_id
        return server_id.owner.instance if server_id else None

    # -- clients --------------------------------------------------------------

    def add_client(
        self, client_id: ClientId, status: ClientStatus = ClientStatus.SAVED
    ) -> None:
        """Add a member or subsystem of our instance as a client."""
        instance = self.instance
        if instance is not None and client_id.instance != instance:
            raise InvalidRequest(
                f"client {client_id} is not in this server's instance {instance!r}"
            )
        with self._lock:
            self.db.table("clients").upsert(
                {
                    "client": _client_key(client_id),
                    "status": ClientStatus(status).value,
                },
                pk="client",
            )

    def clients(self) -> list[ClientId]:
        with self._lock:
            rows = list(self.db.table("clients").rows_where(order_by="client"))
        return [_client_from_key(r["client"]) for r in rows]

    def client_status(self, client_id: ClientId) -> ClientStatus | None:
        with self._lock:
            rows = list(
                self.db.table("clients").rows_where(
                    "client = ?", [_client_key(client_id)]
                )
            )
        return ClientStatus(rows[0]["status"]) if rows else None

    def set_client_status(self, client_id: ClientId, status: ClientStatus) -> None:
        if self.client_status(client_id) is None:
            raise UnknownMember(f"client {client_id} is not on this security server")
        self.add_client(client_id, status)

    def remove_client(self, client_id: ClientId) -> None:
        key = _client_key(client_id)
        with self._lock, self.db.conn:
            self.db.table("clients").delete_where("client = ?", [key])
            for table in ("services", "endpoints", "access_rights"):
                self.db.table(table).delete_where("provider = ?", [key])
            self.db.table("local_groups").delete_where("owner = ?", [key])
            self.db.table("local_group_members").delete_where("owner = ?", [key])
            self.db.table("settings").delete_where("key = ?", [_BODY_LOGGING_KEY + key])

    # -- message body logging (message-log.md §1) --------------------------

    def set_message_body_logging(self, client_id: ClientId, enabled: bool) -> None:
        """Switch body logging on or off for one of our clients.

        The per-client choice overrides ``ServerSettings.log_bodies``.

        :raises UnknownMember: ``client_id`` is not a client of this server.
        """
        if self.client_status(client_id) is None:
            raise UnknownMember(f"client {client_id} is not on this security server")
        key = _BODY_LOGGING_KEY + _client_key(client_id)
        self.set_setting(key, "on" if enabled else "off")

    def message_body_logging(self, client_id: ClientId) -> bool | None:
        """The client's own body-logging switch, or None when it has none."""
        value = self.get_setting(_BODY_LOGGING_KEY + _client_key(client_id))
        return None if value is None else value == "on"

    # -- services -------------------------------------------------------------

    def add_service(
        self,
        service_id: ServiceId,
        *,
        kind: ServiceKind | str,
        url: str,
        timeout: int = 60,
        description_url: str | None = None,
        disabled_notice: str | None = None,
    ) -> None:
        """Add or replace a service; its provider must be one of our clients.

        Service codes and versions follow the strict character rule of
        identifiers.md §6, and metaservice codes are reserved.
        """
        check_strict(service_id.service_code, "service code")
        if service_id.service_version is not None:
            check_strict(service_id.service_version, "service version")
        if service_id.service_code in RESERVED_SERVICE_CODES:
            raise InvalidRequest(
                f"service code {service_id.service_code!r} is reserved for a metaservice"
            )
        if self.client_status(service_id.provider) is None:
            raise UnknownMember(f"provider {service_id.provider} is not a client here")
        row = {
            "provider": _client_key(service_id.provider),
            "code": service_id.service_code,
            "version": _version_key(service_id.service_version),
            "kind": ServiceKind(kind).value,
            "url": url,
            "timeout": int(timeout),
            "description_url": description_url,
            "disabled_notice": disabled_notice,
        }
        with self._lock:
            self.db.table("services").upsert(row, pk=("provider", "code", "version"))

    def set_service_disabled(self, service_id: ServiceId, notice: str | None) -> None:
        """Disable a service with an admin notice, or enable it with None."""
        config = self.get_service(service_id)
        if config is None:
            raise UnknownService(f"service {service_id} is not configured")
        with self._lock:
            self.db.table("services").update(
                self._service_pk(config.service_id), {"disabled_notice": notice}
            )

    def remove_service(self, service_id: ServiceId) -> None:
        with self._lock:
            self.db.table("services").delete_where(
                "provider = ? and code = ? and version = ?",
                list(self._service_pk(service_id)),
            )

    def get_service(self, service_id: ServiceId) -> ServiceConfig | None:
        """Find a service by exact code and version (versionless if none given)."""
        with self._lock:
            rows = list(
                self.db.table("services").rows_where(
                    "provider = ? and code = ? and version = ?",
                    list(self._service_pk(service_id)),
                )
            )
        return self._service_from_row(rows[0]) if rows else None

    def services_of(self, provider: ClientId) -> list[ServiceConfig]:
        with self._lock:
            rows = list(
                self.db.table("services").rows_where(
                    "provider = ?", [_client_key(provider)], order_by="code, version"
                )
            )
        return [self._service_from_row(r) for r in rows]

    @staticmethod
    def _service_pk(service_id: ServiceId) -> tuple[str, str, str]:
        return (
            _client_key(service_id.provider),
            service_id.service_code,
            _version_key(service_id.service_version),
        )

    @staticmethod
    def _service_from_row(row: dict[str, object]) -> ServiceConfig:
        service_id = ServiceId(
            _client_from_key(str(row["provider"])),
            str(row["code"]),
            str(row["version"]) or None,
        )
        return ServiceConfig(
            service_id=service_id,
            kind=ServiceKind(str(row["kind"])),
            url=str(row["url"]),
            timeout=int(row["timeout"]),  # type: ignore[call-overload]
            description_url=row["description_url"],  # type: ignore[arg-type]
            disabled_notice=row["disabled_notice"],  # type: ignore[arg-type]
        )

    # -- REST endpoints ---------------------------------------------------------

    def add_endpoint(
        self, service_id: ServiceId, method: str = ANY_METHOD, path: str = ANY_PATH
    ) -> None:
        """Declare a REST endpoint (method + path glob) of a service code."""
        row = {
            "provider": _client_key(service_id.provider),
            "code": service_id.service_code,
            "method": _method(method),
            "path": path,
        }
        with self._lock:
            self.db.table("endpoints").upsert(
                row, pk=("provider", "code", "method", "path")
            )

    def endpoints(self, service_id: ServiceId) -> list[Endpoint]:
        with self._lock:
            rows = list(
                self.db.table("endpoints").rows_where(
                    "provider = ? and code = ?",
                    [_client_key(service_id.provider), service_id.service_code],
                    order_by="method, path",
                )
            )
        return [Endpoint(r["method"], r["path"]) for r in rows]

    # -- local groups -----------------------------------------------------------

    def create_local_group(
        self, owner: ClientId, group_code: str, description: str = ""
    ) -> LocalGroupId:
        """Create a local group of client ``owner`` (groups are per client)."""
        row = {
            "owner": _client_key(owner),
            "code": group_code,
            "description": description,
        }
        with self._lock:
            self.db.table("local_groups").upsert(row, pk=("owner", "code"))
        return LocalGroupId(group_code)

    def add_local_group_member(
        self, owner: ClientId, group_code: str, member: ClientId
    ) -> None:
        key = _client_key(owner)
        with self._lock:
            found = list(
                self.db.table("local_groups").rows_where(
                    "owner = ? and code = ?", [key, group_code]
                )
            )
            if not found:
                raise UnknownLocalGroup(
                    f"local group {group_code!r} of {owner} not found"
                )
            self.db.table("local_group_members").upsert(
                {"owner": key, "code": group_code, "member": _client_key(member)},
                pk=("owner", "code", "member"),
            )

    def local_group_members(self, owner: ClientId, group_code: str) -> set[ClientId]:
        with self._lock:
            rows = list(
                self.db.table("local_group_members").rows_where(
                    "owner = ? and code = ?", [_client_key(owner), group_code]
                )
            )
        return {_client_from_key(r["member"]) for r in rows}

    # -- access rights ------------------------------------------------------------

    def grant(
        self,
        service: ServiceId,
        subject: Subject,
        method: str = ANY_METHOD,
        path: str = ANY_PATH,
    ) -> None:
        """Allow ``subject`` to call ``service`` (its code; the version is ignored)."""
        if isinstance(subject, LocalGroupId):
            self._require_local_group(service.provider, subject.group_code)
        with self._lock:
            self.db.table("access_rights").upsert(
                self._right_row(service, subject, method, path),
                pk=("provider", "code", "subject_type", "subject", "method", "path"),
            )

    def revoke(
        self,
        service: ServiceId,
        subject: Subject,
        method: str = ANY_METHOD,
        path: str = ANY_PATH,
    ) -> None:
        row = self._right_row(service, subject, method, path)
        with self._lock:
            self.db.table("access_rights").delete_where(
                "provider = ? and code = ? and subject_type = ? and subject = ?"
                " and method = ? and path = ?",
                list(row.values()),
            )

    def access_rights(self, service: ServiceId) -> list[AccessRight]:
        with self._lock:
            rows = list(
                self.db.table("access_rights").rows_where(
                    "provider = ? and code = ?",
                    [_client_key(service.provider), service.service_code],
                )
            )
        return [
            AccessRight(
                r["code"],
                _subject_from_key(r["subject_type"], r["subject"]),
                r["method"],
                r["path"],
            )
            for r in rows
        ]

    def is_allowed(
        self,
        client: ClientId,
        service: ServiceId,
        *,
        method: str | None = None,
        path: str | None = None,
        global_groups: GlobalGroups | None = None,
    ) -> bool:
        """Decide whether ``client`` may call ``service``.

        SOAP (no ``method``): any right on the service code will do. REST:
        a right must also match the method and the normalised service path
        (rest-message.md §7); a path with ``..`` left after normalisation is
        always refused.
        """
        rights = [
            r
            for r in self.access_rights(service)
            if self._subject_holds(r.subject, client, service.provider, global_groups)
        ]
        if method is None and path is None:
            return bool(rights)

        normalized = normalize_service_path(path or "")
        if normalized is None:
            return False
        return any(
            endpoint_matches(Endpoint(r.method, r.path), method or "", normalized)
            for r in rights
        )

    def _subject_holds(
        self,
        subject: Subject,
        client: ClientId,
        provider: ClientId,
        global_groups: GlobalGroups | None,
    ) -> bool:
        if isinstance(subject, ClientId):
            return subject == client
        if isinstance(subject, GlobalGroupId):
            return global_groups is not None and client in global_groups(subject)
        return client in self.local_group_members(provider, subject.group_code)

    def _require_local_group(self, owner: ClientId, group_code: str) -> None:
        with self._lock:
            found = list(
                self.db.table("local_groups").rows_where(
                    "owner = ? and code = ?", [_client_key(owner), group_code]
                )
            )
        if not found:
            raise UnknownLocalGroup(f"local group {group_code!r} of {owner} not found")

    @staticmethod
    def _right_row(
        service: ServiceId, subject: Subject, method: str, path: str
    ) -> dict[str, str]:
        subject_type, subject_key = _subject_key(subject)
        return {
            "provider": _client_key(service.provider),
            "code": service.service_code,
            "subject_type": subject_type,
            "subject": subject_key,
            "method": _method(method),
            "path": path,
        }


def _method(method: str) -> str:
    method = method.strip()
    if not method:
        raise InvalidRequest("an endpoint method must be '*' or an HTTP method")
    return method if method == ANY_METHOD else method.upper()
