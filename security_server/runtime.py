"""Net: what both proxies share at run time -- settings, stores, keys, caches.

A :class:`Runtime` is built by :mod:`security_server.server` once the token is
logged in and a verified global configuration is at hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from protocol.errors import LoggingFailed, UnknownMember, XRoadError
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId, GlobalGroupId, ServiceId
from protocol.signature import SignedMessage, sign_batch

from .messagelog import LogRecord, MessageLog, strip_body
from .serverconf import ServiceConfig
from .settings import ServerSettings
from .signbatch import SignBatcher

if TYPE_CHECKING:
    from .confclient import ConfClient
    from .ocsp import OCSPCache
    from .peers import PeerClient
    from .serverconf import ServerConf
    from .timestamper import Timestamper
    from .token import SoftToken

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class CannotCreateSignature(XRoadError):
    """Our signing certificate may not be used now: no fresh OCSP evidence."""

    code = "CannotCreateSignature"


@dataclass
class Runtime:
    settings: ServerSettings
    clock: Clock
    token: SoftToken
    serverconf: ServerConf
    conf_client: ConfClient
    ocsp: OCSPCache
    message_log: MessageLog
    timestamper: Timestamper
    peers: PeerClient | None = None
    spool_dir: Path | None = None  # where bodies wait while being verified
    _sign_batcher: SignBatcher | None = field(default=None, init=False, repr=False)

    # -- global configuration ------------------------------------------------

    def global_conf(self, now: datetime) -> GlobalConf:
        """The current verified configuration, refusing one that has expired."""
        conf = self.conf_client.current
        if conf is None:
            from protocol.errors import OutdatedGlobalConf

            raise OutdatedGlobalConf(
                "no valid global configuration has been downloaded"
            )
        conf.check_valid(now)
        return conf

    async def hosts(self, conf: GlobalConf, client: ClientId) -> bool:
        """True when ``client`` is ours locally and registered for us centrally."""
        if not conf.is_client_of(self.settings.server_id, client):
            return False
        status = await asyncio.to_thread(self.serverconf.client_status, client)
        return status is not None

    async def check_local_client(self, conf: GlobalConf, client: ClientId) -> None:
        if not await self.hosts(conf, client):
            raise UnknownMember(
                f"Client {client} is not registered on this security server"
            )

    # -- keys and evidence ---------------------------------------------------

    def signing_key(self, member: ClientId) -> tuple[Any, x509.Certificate]:
        try:
            return self.token.sign_key(member)
        except XRoadError as err:
            raise UnknownMember(f"no signing key for {member}: {err.message}") from err

    async def sign(
        self, signer: ClientId, digests: list[tuple[str, bytes]], now: datetime
    ) -> SignedMessage:
        """Sign message parts with the signer's member key (transport.md §7.4).

        With ``batch_signatures`` on, concurrent requests for the same member
        within the batch window share one signature over a hash tree, each
        message with its own chain (transport.md §7.2, :mod:`.signbatch`).

        :raises CannotCreateSignature: no signing key, or no fresh evidence.
        """
        if not self.settings.batch_signatures:
            return self.sign_many(signer.member, [digests], now)[0]
        if self._sign_batcher is None:
            self._sign_batcher = SignBatcher(self.sign_many)
        window = self.settings.batch_signature_window_ms / 1000
        return await self._sign_batcher.sign(signer.member, digests, now, window)

    def sign_many(
        self, member: ClientId, messages: list[list[tuple[str, bytes]]], now: datetime
    ) -> list[SignedMessage]:
        """Sign messages of one member together; one result per message.

        Fresh OCSP responses for the signing certificate and any intermediate
        CA above it go into the signature, with those intermediates; without
        them the certificate may not be used (certificates-ocsp.md §4, §6).

        :raises CannotCreateSignature: no signing key, or no fresh evidence.
        """
        key, cert = self.signing_key(member)
        try:
            responses, intermediates = self.ocsp.signing_evidence(cert)
        except XRoadError as err:
            raise CannotCreateSignature(
                f"the signing certificate of {member} has no fresh OCSP"
                f" response: {err.message}"
            ) from err
        return sign_batch(
            messages,
            key=key,
            cert=cert,
            ocsp_responses=responses,
            extra_certs=intermediates,
            signing_time=now,
        )

    async def close(self) -> None:
        """Stop what the runtime started itself (open signature batches)."""
        if self._sign_batcher is not None:
            await self._sign_batcher.close()

    def auth_ocsp_responses(self) -> list[bytes]:
        response = self.ocsp.get(self.token.auth_cert)
        return [response] if response is not None else []

    # -- services and access -------------------------------------------------

    async def find_service(self, service_id: ServiceId) -> ServiceConfig | None:
        return await asyncio.to_thread(self.serverconf.get_service, service_id)

    async def is_allowed(
        self,
        client: ClientId,
        service_id: ServiceId,
        method: str | None,
        path: str | None,
        conf: GlobalConf,
    ) -> bool:
        def group_members(group: GlobalGroupId) -> set[ClientId]:
            return set(conf.global_group_members(group.instance, group.group_code))

        return await asyncio.to_thread(
            self.serverconf.is_allowed,
            client,
            service_id,
            method=method,
            path=path,
            global_groups=group_members,
        )

    # -- message log ---------------------------------------------------------

    async def log_message(self, record: LogRecord) -> int:
        """Write a record durably; the exchange fails if this fails.

        Before writing, refuse when no TSA is approved, or when time-stamping
        has been failing for longer than the acceptable period: evidence could
        no longer be completed (message-log.md §1). With timestamp-immediately
        the record is stamped before this returns, and a failed stamp fails
        the exchange (the record stays logged, unstamped, for a later round).
        With body logging off for the record's client, the body is stripped
        first (:func:`~.messagelog.strip_body`).
        """
        self.check_timestamping()
        if not await self.logs_bodies(record.filed_under):
            # Parsing a large SOAP envelope is CPU work: keep it off the loop.
            record = await asyncio.to_thread(strip_body, record)
        try:
            record_id = await self.message_log.append(record, self.clock())
        except XRoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure fails the exchange
            raise LoggingFailed(f"message log write failed: {exc}") from exc
        if not self.settings.timestamp_immediately:
            self.timestamper.notify()
            return record_id

        try:
            await self.timestamper.stamp_now(record_id)
        except XRoadError as exc:
            raise LoggingFailed(
                f"record {record_id} could not be time-stamped: {exc.full_code}: {exc}",
                detail="TimestamperFailed",
            ) from exc
        return record_id

    async def logs_bodies(self, client_id: ClientId) -> bool:
        """Whether bodies filed under ``client_id`` are logged (message-log.md §1).

        The client's own switch wins; without one, the server-wide setting.
        """
        own = await asyncio.to_thread(self.serverconf.message_body_logging, client_id)
        return self.settings.log_bodies if own is None else own

    def check_timestamping(self) -> None:
        conf = self.conf_client.current
        if conf is not None and not conf.approved_tsas(self.settings.instance):
            raise LoggingFailed(
                "no timestamping authority is approved", detail="TimestamperFailed"
            )
        if self.settings.timestamp_immediately:
            return  # each call stamps or fails on its own (§1)
        period = self.settings.timestamp_failure_period_seconds
        failing = self.timestamper.failing_for(self.clock())
        if period > 0 and failing > period:
            raise LoggingFailed(
                f"time-stamping has failed for {int(failing)} s, longer than the "
                f"acceptable {int(period)} s",
                detail="TimestamperFailed",
            )


__all__ = ["Clock", "LogRecord", "Runtime"]
