from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509

from protocol import pki
from protocol.globalconf import ApprovedCA, OCSPInfo
from protocol.ocsp import (
    OCSP_REQUEST_TYPE,
    OCSPCertStatus,
    build_ocsp_response,
    parse_ocsp_request,
)
from security_server.ocsp import (
    OCSPCache,
    OCSPResponseMissing,
    PeerOCSPFailed,
    fetch_peer_ocsp,
    ocsp_responder_app,
)

from . import T0, auth_cert, issue

TOP = issue("OCSP Test Top CA", ca=True)
INT = issue("OCSP Test INT", TOP, ca=True)
LEAF = auth_cert("ss1-auth", INT)
SIGN = issue("ss1-sign", TOP, non_repudiation=True)
STRANGER = auth_cert("stranger", issue("Unknown CA", ca=True))


@dataclass
class Responder:
    """A fake CA responder: signs as the issuing CA, counts requests."""

    status: OCSPCertStatus = OCSPCertStatus.GOOD
    now: dt.datetime = T0
    requests: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == OCSP_REQUEST_TYPE
        cert_id = parse_ocsp_request(await request.read())
        self.requests.append(cert_id.serial)
        by_serial = {c.cert.serial_number: (c, i) for c, i in ISSUERS}
        cert, issuer = by_serial[cert_id.serial]
        der = build_ocsp_response(
            issuer=issuer.cert,
            status=self.status,
            this_update=self.now,
            responder_key=issuer.key,
            responder_cert=issuer.cert,
            cert=cert.cert,
            revoked_at=T0 if self.status is OCSPCertStatus.REVOKED else None,
        )
        return web.Response(body=der, content_type="application/ocsp-response")


ISSUERS = [(LEAF, INT), (INT, TOP), (SIGN, TOP)]


@dataclass
class FakeConf:
    """Just the part of GlobalConf the cache reads."""

    ca: ApprovedCA
    own_instance: str = "EE"
    ocsp_freshness_seconds: int = 3600

    def ca_certs(self, instance: str | None = None) -> list[x509.Certificate]:
        return list(self.ca.certs)

    def approved_ca_for(
        self, cert: x509.Certificate, instance: str | None = None
    ) -> ApprovedCA | None:
        return self.ca if any(c.subject == cert.issuer for c in self.ca.certs) else None

    def ocsp_responder_certs(
        self, instance: str | None = None
    ) -> list[x509.Certificate]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    responder: Responder
    conf: FakeConf
    clock: Clock
    session: aiohttp.ClientSession
    base: str

    def cache(self, certs: list[x509.Certificate], **kw: object) -> OCSPCache:
        return OCSPCache(
            self.clock,
            self.session,
            lambda: self.conf,  # type: ignore[arg-type,return-value]
            lambda: certs,
            **kw,  # type: ignore[arg-type]
        )


async def unavailable(request: web.Request) -> web.Response:
    return web.Response(status=503)


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    responder = Responder()
    app = web.Application()
    app.router.add_post("/ocsp", responder.handle)
    app.router.add_post("/down", unavailable)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    ca = ApprovedCA(
        name="Test CA",
        top_ca=TOP.cert,
        intermediates=(INT.cert,),
        ocsp=(OCSPInfo(base + "/down", None), OCSPInfo(base + "/ocsp", None)),
        profile=pki.DEFAULT_PROFILE,
    )
    async with aiohttp.ClientSession() as session:
        yield World(responder, FakeConf(ca), Clock(), session, base)
    await server.close()


@pytest.mark.asyncio
async def test_refresh_covers_leaf_and_intermediate(world: World) -> None:
    cache = world.cache([LEAF.cert, SIGN.cert, STRANGER.cert])

    assert await cache.refresh()

    serials = {LEAF.cert.serial_number, INT.cert.serial_number, SIGN.cert.serial_number}
    assert set(world.responder.requests) == serials
    responses = cache.responses_for([LEAF.cert, INT.cert])
    assert len(responses) == 2 and all(isinstance(r, bytes) for r in responses)
    assert cache.get(STRANGER.cert) is None
    assert cache.get(TOP.cert) is None
    with pytest.raises(OCSPResponseMissing):
        cache.responses_for([STRANGER.cert])


@pytest.mark.asyncio
async def test_stale_response_is_not_served_and_gets_refetched(world: World) -> None:
    cache = world.cache([SIGN.cert])
    await cache.refresh()
    first = cache.get(SIGN.cert)

    world.clock.now = T0 + dt.timedelta(seconds=600)
    assert await cache.refresh()
    assert world.responder.requests == [SIGN.cert.serial_number]  # not due yet

    world.clock.now = T0 + dt.timedelta(seconds=3601)
    assert cache.get(SIGN.cert) is None
    world.responder.now = world.clock.now
    assert await cache.refresh()
    assert len(world.responder.requests) == 2
    assert cache.get(SIGN.cert) not in (None, first)


@pytest.mark.asyncio
async def test_revoked_response_is_not_kept(world: World) -> None:
    world.responder.status = OCSPCertStatus.REVOKED
    cache = world.cache([SIGN.cert])

    assert not await cache.refresh()
    assert cache.get(SIGN.cert) is None


@pytest.mark.asyncio
async def test_file_cache_survives_restart(world: World, tmp_path: Path) -> None:
    await world.cache([SIGN.cert], cache_dir=tmp_path).refresh()

    again = world.cache([SIGN.cert], cache_dir=tmp_path)

    assert again.get(SIGN.cert) is not None
    assert again.get_by_hash(pki.cert_sha1_hex(SIGN.cert)) == again.get(SIGN.cert)
    assert len(world.responder.requests) == 1


@pytest.mark.asyncio
async def test_run_backs_off_and_never_raises(world: World) -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 4:
            raise asyncio.CancelledError

    world.conf.ca = ApprovedCA(
        "Down", TOP.cert, (INT.cert,), (OCSPInfo(world.base + "/down", None),), "x"
    )
    cache = world.cache([SIGN.cert], sleep=sleep, retry_delay=60, fetch_interval=1200)

    with pytest.raises(asyncio.CancelledError):
        await cache.run(interval=300)

    assert delays == [60, 120, 240, 300]


@pytest.mark.asyncio
async def test_run_survives_a_crashing_refresh(world: World) -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        raise asyncio.CancelledError

    def broken() -> list[x509.Certificate]:
        raise RuntimeError("token unreadable")

    cache = OCSPCache(
        world.clock, world.session, lambda: world.conf, broken, sleep=sleep
    )  # type: ignore[arg-type,return-value]

    with pytest.raises(asyncio.CancelledError):
        await cache.run(interval=300)
    assert delays == [60]


@pytest_asyncio.fixture
async def peer(world: World) -> AsyncIterator[tuple[World, int]]:
    cache = world.cache([LEAF.cert])
    await cache.refresh()
    server = TestServer(ocsp_responder_app(cache), host="127.0.0.1")
    await server.start_server()
    yield world, server.port
    await server.close()


@pytest.mark.asyncio
async def test_peer_download_round_trip(peer: tuple[World, int]) -> None:
    world, port = peer

    got = await fetch_peer_ocsp(world.session, "127.0.0.1", port, [LEAF.cert, INT.cert])

    assert len(got) == 2
    assert got[0] != got[1]
    from protocol.ocsp import ocsp_response_matches

    assert ocsp_response_matches(got[0], LEAF.cert, INT.cert)
    assert ocsp_response_matches(got[1], INT.cert, TOP.cert)


@pytest.mark.asyncio
async def test_peer_download_missing_response(peer: tuple[World, int]) -> None:
    world, port = peer

    with pytest.raises(PeerOCSPFailed) as info:
        await fetch_peer_ocsp(world.session, "127.0.0.1", port, [LEAF.cert, SIGN.cert])
    assert info.value.code == "SslAuthenticationFailed"


@pytest.mark.asyncio
async def test_responder_methods_and_hash_forms(peer: tuple[World, int]) -> None:
    world, port = peer
    url = f"http://127.0.0.1:{port}/"

    async with world.session.head(url) as resp:
        assert resp.status == 200
    async with world.session.post(url) as resp:
        assert resp.status == 500
    async with world.session.get(url) as resp:
        assert resp.status == 500
    params = {"cert_hash": pki.cert_sha256_hex(LEAF.cert)}
    async with world.session.get(url, params=params) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("multipart/related;")
        assert 'type="application/ocsp-response"' in resp.headers["Content-Type"]


@pytest.mark.asyncio
async def test_peer_download_requires_exact_count(world: World) -> None:
    async def one_part(request: web.Request) -> web.Response:
        body = b"--b\r\ncontent-type: application/ocsp-response\r\n\r\nX\r\n--b--\r\n"
        return web.Response(
            body=body, headers={"Content-Type": "multipart/related; boundary=b"}
        )

    app = web.Application()
    app.router.add_get("/", one_part)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert await fetch_peer_ocsp(
            world.session, "127.0.0.1", server.port, [LEAF.cert]
        ) == [b"X"]
        with pytest.raises(PeerOCSPFailed):
            await fetch_peer_ocsp(
                world.session, "127.0.0.1", server.port, [LEAF.cert, INT.cert]
            )
    finally:
        await server.close()


FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"


def test_file_cache_reads_xroad_response(tmp_path: Path) -> None:
    source = FIXTURES / "ocsp" / "test.ocsp"
    if not source.exists():
        pytest.skip("X-Road fixtures are absent")
    shutil.copy(source, tmp_path / f"{'a' * 64}.{'b' * 40}.der")
    (tmp_path / f"{'c' * 64}.{'d' * 40}.der").write_bytes(b"not DER")
    clock = Clock()

    session: Any = None
    cache = OCSPCache(clock, session, lambda: None, list, cache_dir=tmp_path)

    # Loaded (the 2013 response is long stale, so it is never served).
    assert cache.get_by_hash("b" * 40) is None
    clock.now = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
    assert cache.get_by_hash("b" * 40) == source.read_bytes()
    assert cache.get_by_hash("d" * 40) is None
