"""Net: talking to other security servers' server proxies (transport.md §2-§4, §10).

Routing picks the provider's security servers from the global configuration;
every connection is checked before a byte is sent: the peer's authentication
certificate must be approved, fresh and good by OCSP, and registered for a
server that hosts the provider.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from localio.http import read_at_most
from protocol import mime, ocsp, pki, transport
from protocol.errors import (
    CLIENT_PROXY,
    HttpError,
    InvalidContentType,
    InvalidSecurityServer,
    NetworkError,
    ServiceFailed,
    SslAuthenticationFailed,
    UnknownMember,
    XRoadError,
    XRoadIOError,
)
from protocol.globalconf import GlobalConf, SecurityServer
from protocol.identifiers import ClientId
from protocol.transport import ProxyMessage
from protocol.trust import check_auth_certificate

from . import tls
from .ocsp import fetch_peer_ocsp
from .spool import (
    CHUNK,
    BodySource,
    Spool,
    SpooledPart,
    close_parts,
    receive_proxy_message,
)

log = logging.getLogger(__name__)

DEFAULT_SERVER_PROXY_PORT = 5500
DEFAULT_OCSP_PORT = 5577
MAX_OCSP_BYTES = 64 * 1024
PEER_OCSP_REUSE = timedelta(seconds=300)


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer: either a fault document or a decoded multipart message."""

    fault: bytes | None
    message: ProxyMessage
    original_content_type: str | None = None
    body: Spool | None = None  # a streamed REST body, not yet verified
    attachments: list[SpooledPart] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        """Drop the spooled body and attachments."""
        if self.body is not None:
            self.body.close()
        close_parts(self.attachments)


@dataclass(frozen=True, slots=True)
class _Expected:
    conf: GlobalConf
    provider: ClientId
    server: SecurityServer
    now: datetime


_expected: contextvars.ContextVar[_Expected] = contextvars.ContextVar("expected_peer")


@dataclass(frozen=True, slots=True)
class _Pool:
    opened: datetime
    conf: GlobalConf
    session: aiohttp.ClientSession


def split_address(address: str) -> tuple[str, int | None]:
    """``host`` or ``host:port`` (an xgate extension for several servers on one host)."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host, int(port)
    return address, None


class PeerClient:
    def __init__(
        self,
        *,
        auth_key: PrivateKeyTypes,
        auth_chain: list[x509.Certificate],
        timeout_seconds: float,
        plain_session: aiohttp.ClientSession,
        max_reply_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._max_reply = max_reply_bytes
        # Peer certificate (SHA-256 hex) -> when its OCSP response was fetched, and it.
        self._ocsp_cache: dict[str, tuple[datetime, bytes]] = {}
        self._plain = plain_session
        self._context = tls.client_context(auth_key, auth_chain)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        # One connection pool per provider security server. A connection is
        # checked once, when it opens, against the server it was opened for,
        # so a pooled connection only ever carries messages for that server.
        # A pool is replaced when the configuration changes or after
        # PEER_OCSP_REUSE, so revocations and new configurations take hold.
        self._pools: dict[str, _Pool] = {}
        self._retired: list[aiohttp.ClientSession] = []

    async def close(self) -> None:
        sessions = [pool.session for pool in self._pools.values()] + self._retired
        self._pools.clear()
        self._retired.clear()
        for session in sessions:
            await session.close()

    def _session_for(
        self, server: SecurityServer, conf: GlobalConf, now: datetime
    ) -> aiohttp.ClientSession:
        key = server.id.slash()
        pool = self._pools.get(key)
        if (
            pool is not None
            and pool.conf is conf
            and now - pool.opened < PEER_OCSP_REUSE
        ):
            return pool.session
        if pool is not None:
            # Requests may still be running on it: close it on the next turn.
            self._retire(pool.session)
        connector = tls.CheckingConnector(
            check=self._check_peer, ssl=self._context, keepalive_timeout=30
        )
        session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )
        self._pools[key] = _Pool(opened=now, conf=conf, session=session)
        return session

    def _retire(self, session: aiohttp.ClientSession) -> None:
        """Close a replaced pool once any request still on it has had its time."""
        self._retired.append(session)
        loop = asyncio.get_running_loop()

        def close() -> None:
            if session in self._retired:
                self._retired.remove(session)
                loop.create_task(session.close())

        loop.call_later(self._timeout.total or 60, close)

    async def send(
        self,
        conf: GlobalConf,
        provider: ClientId,
        target: str | None,
        headers: dict[str, str],
        body: bytes | BodySource,
        *,
        now: datetime,
        spool: tuple[Path | None, int] | None = None,
    ) -> Reply:
        """Post a message to one of the provider's servers; decode its answer.

        :param body: the framed message, or a function streaming it anew.
        :param spool: (directory, size limit) to stream the answer's REST body
            or SOAP attachments to disk; without it the answer is read whole.
        """
        candidates = self._candidates(conf, provider, target)
        last_error: XRoadError | None = None
        for server in candidates:
            host, port = split_address(server.address or "")
            url = f"https://{host}:{port or DEFAULT_SERVER_PROXY_PORT}/"
            token = _expected.set(_Expected(conf, provider, server, now))
            try:
                session = self._session_for(server, conf, now)
                return await self._post(session, url, headers, body, spool)
            except (NetworkError, SslAuthenticationFailed) as err:
                log.warning(
                    "provider server unusable url=%s code=%s", url, err.full_code
                )
                last_error = err
            finally:
                _expected.reset(token)
        assert last_error is not None
        raise last_error

    def _candidates(
        self, conf: GlobalConf, provider: ClientId, target: str | None
    ) -> list[SecurityServer]:
        hosting = [s for s in conf.servers_hosting(provider) if s.address]
        if not hosting:
            raise UnknownMember(f"no security server hosts {provider}")
        if target is not None:
            hosting = [s for s in hosting if s.id.slash() == target]
            if not hosting:
                raise InvalidSecurityServer(
                    f"security server {target} does not host {provider}"
                )
        random.shuffle(hosting)
        return hosting

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        body: bytes | BodySource,
        spool: tuple[Path | None, int] | None,
    ) -> Reply:
        data = body if isinstance(body, bytes) else body()
        try:
            async with session.post(
                url, data=data, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                original_type = response.headers.get("x-original-content-type")
                if spool is not None and status in (200, 500):
                    reply = await _receive_reply(response, content_type, spool)
                    return dataclasses.replace(
                        reply, original_content_type=original_type
                    )
                payload = await read_at_most(response.content, self._max_reply)
                if len(payload) > self._max_reply:
                    raise XRoadIOError(
                        f"answer from {url} exceeds {self._max_reply} bytes"
                    )
        except XRoadError:
            raise
        except aiohttp.ClientConnectorError as exc:
            raise NetworkError(f"cannot connect to {url}: {exc.os_error}") from exc
        except TimeoutError as exc:
            raise XRoadIOError(f"timed out talking to {url}") from exc
        except aiohttp.ClientError as exc:
            # The connector wraps errors our check raised.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, XRoadError):
                raise cause from exc
            raise XRoadIOError(f"error talking to {url}: {exc}") from exc
        reply = decode_reply(status, content_type, payload)
        return dataclasses.replace(reply, original_content_type=original_type)

    async def _check_peer(self, leaf_der: bytes, chain: list[bytes]) -> None:
        expected = _expected.get()
        cert = x509.load_der_x509_certificate(leaf_der)
        key = pki.cert_sha256_hex(cert)
        cached = None
        if key in self._ocsp_cache:
            fetched_at, response = self._ocsp_cache[key]
            # Re-fetch now and then, so that a revocation is noticed well
            # before the cached answer's freshness runs out.
            if expected.now - fetched_at < PEER_OCSP_REUSE:
                cached = response
        try:
            server = await self._judge_peer(cert, cached, expected)
        except SslAuthenticationFailed:
            if cached is None:
                raise
            # The cached response may have gone stale: fetch once more.
            self._ocsp_cache.pop(key, None)
            server = await self._judge_peer(cert, None, expected)
        if server.id != expected.server.id or not expected.conf.is_client_of(
            server.id, expected.provider
        ):
            raise SslAuthenticationFailed(
                f"peer {server.id} is not a security server of {expected.provider}"
            )

    async def _judge_peer(
        self, cert: x509.Certificate, response: bytes | None, expected: _Expected
    ) -> SecurityServer:
        """Check the peer's certificate with a cached or a freshly fetched OCSP response."""
        if response is None:
            response = await self._fetch_peer_ocsp(cert, expected)
            self._ocsp_cache[pki.cert_sha256_hex(cert)] = (expected.now, response)
        return check_auth_certificate(
            cert,
            ocsp_responses=[response],
            global_conf=expected.conf,
            instance=expected.provider.instance,
            at=expected.now,
        )

    async def _fetch_peer_ocsp(
        self, cert: x509.Certificate, expected: _Expected
    ) -> bytes:
        host, port = split_address(expected.server.address or "")
        try:
            if port is None:
                fetched = await fetch_peer_ocsp(
                    self._plain, host, DEFAULT_OCSP_PORT, [cert]
                )
                return fetched[0]
            return await self._ocsp_from_ca(cert, expected)
        except XRoadError as err:
            raise SslAuthenticationFailed(
                f"no OCSP response for peer: {err.message}"
            ) from err
        except aiohttp.ClientError as exc:
            raise SslAuthenticationFailed(
                f"cannot fetch peer OCSP response: {exc}"
            ) from exc

    async def _ocsp_from_ca(self, cert: x509.Certificate, expected: _Expected) -> bytes:
        """Ask the issuing CA's responder; used when the peer runs on a non-standard port."""
        instance = expected.provider.instance
        approved = expected.conf.approved_ca_for(cert, instance)
        issuer = pki.find_issuer(cert, expected.conf.ca_certs(instance))
        if approved is None or issuer is None:
            raise SslAuthenticationFailed("peer certificate is not from an approved CA")
        request = ocsp.build_ocsp_request(cert, issuer)
        for responder in approved.ocsp_for(issuer) or approved.all_ocsp():
            try:
                async with self._plain.post(
                    responder.url,
                    data=request,
                    headers={"Content-Type": "application/ocsp-request"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    body = await read_at_most(response.content, MAX_OCSP_BYTES)
                    if response.status == 200 and len(body) <= MAX_OCSP_BYTES:
                        return body
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("ocsp responder failed url=%s error=%r", responder.url, exc)
        raise SslAuthenticationFailed(
            "no OCSP responder answered for the peer certificate"
        )


def decode_reply(status: int, content_type: str, payload: bytes) -> Reply:
    """Classify a provider's HTTP answer (transport.md §10 steps 0-2).

    A malformed answer is the provider side's failure: ``ServiceFailed.<code>``.
    """
    try:
        return _decode_reply(status, content_type, payload)
    except (HttpError, ServiceFailed):
        raise
    except XRoadError as err:
        raise ServiceFailed.wrap(err) from err


async def _receive_reply(
    response: aiohttp.ClientResponse,
    content_type: str,
    spool: tuple[Path | None, int],
) -> Reply:
    """Decode an answer as it streams in, its REST body going to a spool."""
    try:
        return await _receive_streamed(response, content_type, spool)
    except ServiceFailed:
        raise
    except XRoadError as err:
        raise ServiceFailed.wrap(err) from err


async def _receive_streamed(
    response: aiohttp.ClientResponse,
    content_type: str,
    spool: tuple[Path | None, int],
) -> Reply:
    mime_type, _ = mime.parse_content_type(content_type or "application/octet-stream")
    if mime_type not in ("text/xml", "multipart/mixed"):
        raise InvalidContentType(
            f"provider security server answered with content type {mime_type!r}",
        )
    directory, limit = spool
    received = await receive_proxy_message(
        response.content.iter_chunked(CHUNK),
        content_type,
        directory=directory,
        max_bytes=limit,
    )
    message = received.message
    if message.fault is not None:
        received.close()
        return Reply(fault=message.fault, message=message)
    return Reply(
        fault=None,
        message=message,
        body=received.body,
        attachments=received.attachments,
    )


def _decode_reply(status: int, content_type: str, payload: bytes) -> Reply:
    if status not in (200, 500):
        raise HttpError(f"provider security server answered HTTP {status}")
    mime_type, _ = mime.parse_content_type(content_type or "application/octet-stream")
    if mime_type == "text/xml":
        return Reply(fault=payload, message=ProxyMessage(ocsp_responses=[]))
    if mime_type != "multipart/mixed":
        raise InvalidContentType(
            f"provider security server answered with content type {mime_type!r}",
        )
    message = transport.decode_proxy_message(payload, content_type)
    if message.fault is not None:
        return Reply(fault=message.fault, message=message)
    return Reply(fault=None, message=message)


__all__ = ["CLIENT_PROXY", "PeerClient", "Reply", "split_address"]
