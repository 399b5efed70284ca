"""Store: management requests received from security servers, and the audit log.

Spec: management-services.md §5 (verification) and §6 (lifecycle). Requests
are verified against the instance's approved CAs, kept with a state
(``submitted``, ``approved``, ``rejected``) in ``registry.db`` and applied to
the registry when approved. Registration requests (authCertReg, clientReg)
wait for the authority; clientDeletion and addressChange apply at once.

Every approval, rejection and registry change made by an administrator is
written to the ``audit_log`` table (who, what, when, result).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from protocol.errors import XRoadError
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId, SecurityServerId
from protocol.management import (
    ManagementRequest,
    ManagementService,
    UnsupportedManagementService,
    build_management_response,
    parse_signed_request,
    verify_management_request,
)

from .registry import DuplicateEntry, EntryNotFound, Registry

log = logging.getLogger(__name__)

SERVER_OWNERS_GROUP = "security-server-owners"
IMMEDIATE = frozenset(
    {ManagementService.CLIENT_DELETION, ManagementService.ADDRESS_CHANGE}
)


class ManagementError(XRoadError):
    code: ClassVar[str] = "ManagementRequestRefused"


class UnknownRequest(ManagementError):
    code: ClassVar[str] = "UnknownRequest"


class RequestNotPending(ManagementError):
    code: ClassVar[str] = "RequestNotPending"


class DuplicateRequest(ManagementError):
    code: ClassVar[str] = "DuplicateRequest"


class RequestState(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class StoredRequest:
    id: int
    request: ManagementRequest
    state: RequestState
    sender: str
    received_at: str
    decided_at: str | None
    decided_by: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    target: str
    result: str


def _create_tables(registry: Registry) -> None:
    with registry.transaction() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS management_requests ("
            " id INTEGER PRIMARY KEY, service TEXT NOT NULL, server TEXT NOT NULL,"
            " client TEXT, subsystem_name TEXT, address TEXT, auth_cert BLOB,"
            " state TEXT NOT NULL, sender TEXT NOT NULL, received_at TEXT NOT NULL,"
            " decided_at TEXT, decided_by TEXT)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS audit_log ("
            " id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,"
            " action TEXT NOT NULL, target TEXT NOT NULL, result TEXT NOT NULL)"
        )


def record_audit(
    registry: Registry,
    *,
    actor: str,
    action: str,
    target: str,
    result: str,
    now: dt.datetime,
) -> None:
    """Append one line to the audit log; ``result`` is ``ok`` or an error code."""
    _create_tables(registry)
    with registry.transaction() as conn:
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, result)"
            " VALUES (?, ?, ?, ?, ?)",
            [now.isoformat(), actor, action, target, result],
        )


def list_audit_log(registry: Registry) -> list[AuditEntry]:
    _create_tables(registry)
    rows = registry.query(
        "SELECT id, at, actor, action, target, result FROM audit_log ORDER BY id"
    )
    return [AuditEntry(*row) for row in rows]


class ManagementCenter:
    """Receive, keep, approve and reject management requests."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        _create_tables(registry)

    # -- receiving ------------------------------------------------------------

    def receive(self, raw: bytes, content_type: str, now: dt.datetime) -> bytes:
        """Verify and store one multipart request; return the SOAP response.

        :raises ManagementRequestError: malformed, or a signature check failed.
        :raises ManagementError: a duplicate, or the change is refused.
        :raises RegistryError: an unknown member or server.
        """
        signed = parse_signed_request(raw, content_type)
        shared, private = self.registry.snapshot()
        conf = GlobalConf(
            self.registry.instance, private, {shared.instance: shared}, None
        )
        verify_management_request(
            signed,
            global_conf=conf,
            provider=private.management_service.provider,
            at=now,
        )
        request = signed.request
        self._check_acceptable(request)

        sender = str(signed.header.client)
        request_id = self._store(request, sender, now)
        log.info(
            "management request stored id=%d service=%s server=%s",
            request_id,
            request.service,
            request.server,
        )
        if request.service in IMMEDIATE:
            self._decide(request_id, RequestState.APPROVED, sender, now)
        return build_management_response(signed.soap, request_id)

    def _check_acceptable(self, request: ManagementRequest) -> None:
        service = request.service
        if service is ManagementService.OWNER_CHANGE:
            # TODO(#6): owner change needs a registry operation that moves the owner.
            raise UnsupportedManagementService(
                "ownerChange is not supported by this central server yet"
            )
        self.registry.get_member(request.server.owner)
        if request.client is not None:
            self.registry.get_member(request.client.member)
        if service is ManagementService.AUTH_CERT_REG:
            assert request.auth_cert is not None
            if self._cert_registered(request.auth_cert):
                raise DuplicateRequest("the authentication certificate is registered")
        if service is ManagementService.CLIENT_REG:
            assert request.client is not None
            if request.client == request.server.owner:
                raise ManagementError("the server owner cannot register itself")
            if request.client in self._clients_of(request.server):
                raise DuplicateRequest(
                    f"{request.client} is already a client of {request.server}"
                )
        if service in (ManagementService.AUTH_CERT_REG, ManagementService.CLIENT_REG):
            for pending in self.list_requests(RequestState.SUBMITTED):
                if _same_subject(pending.request, request):
                    raise DuplicateRequest(
                        f"request {pending.id} for the same {service} is pending"
                    )

    def _cert_registered(self, der: bytes) -> bool:
        rows = self.registry.query("SELECT 1 FROM auth_certs WHERE cert = ?", [der])
        return bool(rows)

    def _clients_of(self, server: SecurityServerId) -> tuple[ClientId, ...]:
        try:
            return self.registry.get_security_server(server).clients
        except EntryNotFound:
            return ()

    def _store(self, request: ManagementRequest, sender: str, now: dt.datetime) -> int:
        with self.registry.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO management_requests (service, server, client,"
                " subsystem_name, address, auth_cert, state, sender, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    request.service.value,
                    request.server.slash(),
                    request.client.slash() if request.client else None,
                    request.subsystem_name,
                    request.address,
                    request.auth_cert,
                    RequestState.SUBMITTED.value,
                    sender,
                    now.isoformat(),
                ],
            )
            return int(cursor.lastrowid or 0)

    # -- listing --------------------------------------------------------------

    def list_requests(self, state: RequestState | None = None) -> list[StoredRequest]:
        sql = (
            "SELECT id, service, server, client, subsystem_name, address, auth_cert,"
            " state, sender, received_at, decided_at, decided_by"
            " FROM management_requests"
        )
        params: list[str] = []
        if state is not None:
            sql += " WHERE state = ?"
            params.append(RequestState(state).value)
        rows = self.registry.query(sql + " ORDER BY id", params)
        return [self._row(row) for row in rows]

    def get_request(self, request_id: int) -> StoredRequest:
        for stored in self.list_requests():
            if stored.id == request_id:
                return stored
        raise UnknownRequest(f"there is no management request {request_id}")

    def _row(self, row: tuple[object, ...]) -> StoredRequest:
        client = row[3]
        request = ManagementRequest(
            service=ManagementService(str(row[1])),
            server=SecurityServerId.parse_slash(str(row[2])),
            client=ClientId.parse_slash(str(client)) if client else None,
            subsystem_name=row[4] if isinstance(row[4], str) else None,
            address=row[5] if isinstance(row[5], str) else None,
            auth_cert=row[6] if isinstance(row[6], bytes) else None,
        )
        return StoredRequest(
            id=int(str(row[0])),
            request=request,
            state=RequestState(str(row[7])),
            sender=str(row[8]),
            received_at=str(row[9]),
            decided_at=row[10] if isinstance(row[10], str) else None,
            decided_by=row[11] if isinstance(row[11], str) else None,
        )

    # -- deciding -------------------------------------------------------------

    def approve(self, request_id: int, *, actor: str, now: dt.datetime) -> None:
        """Apply a submitted request to the registry and mark it approved."""
        self._audited("request-approve", request_id, actor, now, RequestState.APPROVED)

    def reject(self, request_id: int, *, actor: str, now: dt.datetime) -> None:
        """Mark a submitted request rejected; the registry is not changed."""
        self._audited("request-reject", request_id, actor, now, RequestState.REJECTED)

    def _audited(
        self,
        action: str,
        request_id: int,
        actor: str,
        now: dt.datetime,
        state: RequestState,
    ) -> None:
        result = "ok"
        try:
            self._decide(request_id, state, actor, now)
        except XRoadError as err:
            result = err.full_code
            raise
        finally:
            record_audit(
                self.registry,
                actor=actor,
                action=action,
                target=f"request {request_id}",
                result=result,
                now=now,
            )

    def _decide(
        self, request_id: int, state: RequestState, actor: str, now: dt.datetime
    ) -> None:
        stored = self.get_request(request_id)
        if stored.state is not RequestState.SUBMITTED:
            raise RequestNotPending(
                f"request {request_id} is {stored.state.value}, not submitted"
            )
        if state is RequestState.APPROVED:
            self._apply(stored.request)
        with self.registry.transaction() as conn:
            conn.execute(
                "UPDATE management_requests SET state = ?, decided_at = ?,"
                " decided_by = ? WHERE id = ?",
                [state.value, now.isoformat(), actor, request_id],
            )
        log.info("management request %s id=%d by=%s", state.value, request_id, actor)

    def _apply(self, request: ManagementRequest) -> None:
        """Change the registry (§6 effects); checks run before the first write."""
        registry, server = self.registry, request.server
        service = request.service
        if service is ManagementService.AUTH_CERT_REG:
            assert request.auth_cert is not None and request.address is not None
            if self._cert_registered(request.auth_cert):
                raise DuplicateRequest("the authentication certificate is registered")
            try:
                registry.get_security_server(server)
                registry.set_server_address(server, request.address)
            except EntryNotFound:
                registry.add_security_server(server, request.address)
            registry.add_auth_cert(server, request.auth_cert)
            self._add_owner_to_group(server.owner)
        elif service is ManagementService.CLIENT_REG:
            assert request.client is not None
            registry.get_security_server(server)
            client = request.client
            if client.subsystem_code is not None:
                known = registry.list_subsystems(client.member)
                if client not in known:
                    registry.add_subsystem(client)
            registry.register_client(server, client)
        elif service is ManagementService.CLIENT_DELETION:
            assert request.client is not None
            registry.unregister_client(server, request.client)
        elif service is ManagementService.ADDRESS_CHANGE:
            assert request.address is not None
            registry.set_server_address(server, request.address)
        else:
            raise UnsupportedManagementService(f"{service} cannot be applied")

    def _add_owner_to_group(self, owner: ClientId) -> None:
        groups = {g.code: g for g in self.registry.list_global_groups()}
        group = groups.get(SERVER_OWNERS_GROUP)
        if group is None or owner in group.members:
            return
        try:
            self.registry.add_group_member(SERVER_OWNERS_GROUP, owner)
        except DuplicateEntry:
            pass


def _same_subject(pending: ManagementRequest, new: ManagementRequest) -> bool:
    if pending.service is not new.service or pending.server != new.server:
        return False
    if new.service is ManagementService.AUTH_CERT_REG:
        return pending.auth_cert == new.auth_cert
    return pending.client == new.client


def request_summary(stored: StoredRequest) -> dict[str, object]:
    """A JSON-friendly view of a stored request, for the CLI."""
    request = stored.request
    return {
        "id": stored.id,
        "service": request.service.value,
        "server": request.server.slash(),
        "client": request.client.slash() if request.client else None,
        "address": request.address,
        "state": stored.state.value,
        "received_at": stored.received_at,
        "decided_by": stored.decided_by,
    }


__all__ = [
    "AuditEntry",
    "ManagementCenter",
    "RequestState",
    "StoredRequest",
    "list_audit_log",
    "record_audit",
]
