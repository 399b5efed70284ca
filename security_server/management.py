"""Net: send management requests from this security server to the central server.

Spec: management-services.md §2-§4. Requests are signed with the member's
signing key (plus the authentication key for authCertReg) and posted to the
management service address in the downloaded private parameters.

TODO(#6): the spec posts every request but authCertReg through the own client
proxy as an X-Road message; this first slice posts all of them directly, so
clientDeletion carries the owner's signature too (§4 transport not built yet).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
from cryptography import x509

from localio.clock import utc_now
from localio.http import read_at_most
from protocol import pki
from protocol.errors import NetworkError, OutdatedGlobalConf, RemoteFault, XRoadError
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId
from protocol.management import (
    ManagementRequest,
    ManagementService,
    build_management_request,
    build_signed_request,
    parse_management_request,
    parse_management_response,
)
from protocol.ocsp import build_ocsp_request, verify_ocsp_response
from protocol.soap import parse_fault

from .confclient import ConfClient
from .server import ANCHOR_FILE
from .serverconf import ClientStatus, ServerConf
from .settings import ServerSettings
from .token import SoftToken

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 100_000
TIMEOUT = aiohttp.ClientTimeout(total=30)


class ManagementSendError(XRoadError):
    code = "ManagementRequestFailed"


async def register_server(
    directory: Path,
    pin: str,
    *,
    client: ClientId | None = None,
    address: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> int:
    """Send authCertReg for our auth cert, or clientReg for ``client``.

    Returns the central server's request id. The owner member is always a
    client of its own server, so it is never registered with clientReg (§6).
    ``address`` is where peers reach our server proxy (``host[:port]``); by
    default the bind host and server proxy port, unless we bind to all hosts.
    """
    settings = ServerSettings.load(directory)
    server_id = settings.server_id
    token = _token(directory, pin)
    if client is None:
        request = ManagementRequest(
            ManagementService.AUTH_CERT_REG,
            server_id,
            address=address or _default_address(settings),
            auth_cert=pki.cert_der(token.auth_cert),
        )
        return await _send(directory, token, request, server_id.owner, clock)

    request = ManagementRequest(ManagementService.CLIENT_REG, server_id, client=client)
    request_id = await _send(directory, token, request, client.member, clock)
    await asyncio.to_thread(_save_client, directory, client)
    return request_id


async def unregister_client(
    directory: Path,
    pin: str,
    client: ClientId,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> int:
    """Send clientDeletion for ``client``; the central server applies it at once."""
    settings = ServerSettings.load(directory)
    token = _token(directory, pin)
    request = ManagementRequest(
        ManagementService.CLIENT_DELETION, settings.server_id, client=client
    )
    return await _send(directory, token, request, settings.server_id.owner, clock)


def _default_address(settings: ServerSettings) -> str:
    if settings.bind_host in ("0.0.0.0", "::", ""):
        raise ManagementSendError(
            "the server binds to all addresses: give the address peers use"
        )
    return f"{settings.bind_host}:{settings.ports.server_proxy}"


def _token(directory: Path, pin: str) -> SoftToken:
    token = SoftToken(directory / "token")
    token.login(pin)
    return token


def _save_client(directory: Path, client: ClientId) -> None:
    serverconf = ServerConf(directory)
    try:
        if serverconf.client_status(client) is None:
            serverconf.add_client(client, ClientStatus.SAVED)
    finally:
        serverconf.close()


async def _send(
    directory: Path,
    token: SoftToken,
    request: ManagementRequest,
    signer: ClientId,
    clock: Callable[[], datetime],
) -> int:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        conf = await _global_conf(directory, session, clock)
        assert conf.private is not None  # own configuration has private params
        management = conf.private.management_service
        key, sign_cert = token.sign_key(signer)
        ocsp_response = await _fetch_ocsp(session, conf, sign_cert, clock())

        soap = build_management_request(
            request,
            sender=request.server.owner,
            provider=management.provider,
            query_id=str(uuid.uuid4()),
        )
        is_auth = request.service is ManagementService.AUTH_CERT_REG
        body, content_type = build_signed_request(
            soap,
            owner_key=key,
            sign_cert=pki.cert_der(sign_cert),
            ocsp_response=ocsp_response,
            boundary=f"xgate-{uuid.uuid4().hex}",
            auth_key=token.auth_key if is_auth else None,
            auth_cert=pki.cert_der(token.auth_cert) if is_auth else None,
        )
        reply, status = await _post(
            session, management.auth_cert_reg_address, body, content_type
        )
    header, _ = parse_management_request(soap)
    if status != 200:
        fault = parse_fault(reply)
        raise RemoteFault(fault.code, fault.string)
    request_id = parse_management_response(reply, header)
    log.info(
        "management request sent service=%s server=%s id=%d",
        request.service,
        request.server,
        request_id,
    )
    return request_id


async def _global_conf(
    directory: Path, session: aiohttp.ClientSession, clock: Callable[[], datetime]
) -> GlobalConf:
    client = ConfClient(
        directory / "globalconf", directory / ANCHOR_FILE, session=session, clock=clock
    )
    conf = await asyncio.to_thread(client.load)
    if conf is None:
        conf = await client.download()
    conf.check_valid(clock())
    if conf.private is None:
        raise OutdatedGlobalConf("the global configuration has no private parameters")
    return conf


async def _fetch_ocsp(
    session: aiohttp.ClientSession,
    conf: GlobalConf,
    cert: x509.Certificate,
    now: datetime,
) -> bytes:
    """A fresh, verified OCSP response for our signing certificate."""
    approved = conf.approved_ca_for(cert, conf.own_instance)
    issuer = conf.issuer_cert(cert, conf.own_instance)
    if approved is None or issuer is None:
        raise ManagementSendError("our signing certificate has no approved issuer")
    request = build_ocsp_request(cert, issuer)
    for info in approved.ocsp_for(issuer) or approved.all_ocsp():
        try:
            der, status = await _post(
                session, info.url, request, "application/ocsp-request"
            )
            if status != 200:
                continue
            verify_ocsp_response(
                der,
                cert,
                issuer,
                at=now,
                freshness_seconds=conf.ocsp_freshness_seconds,
                responder_certs=tuple(conf.ocsp_responder_certs(conf.own_instance)),
            )
        except XRoadError as err:
            log.warning("ocsp response unusable url=%s code=%s", info.url, err.code)
            continue
        return der
    raise ManagementSendError(
        f"no OCSP response for signing certificate serial {cert.serial_number:#x}"
    )


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, content_type: str
) -> tuple[bytes, int]:
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": content_type}
        ) as resp:
            return await read_at_most(resp.content, MAX_RESPONSE_BYTES), resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NetworkError(f"cannot reach {url}: {exc!r}") from exc
