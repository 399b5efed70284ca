"""REST bodies stream through both security servers byte for byte, with limits."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from demo.ecosystem import BENEFITS_SUBSYSTEM, HOST, REGISTRY_SUBSYSTEM, free_ports
from protocol.identifiers import ServiceId
from security_server.serverconf import ServerConf

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "streamEcho")
PATH = f"/r1/{SERVICE.slash()}/echo"
BODY = os.urandom(3 * 1024 * 1024 + 17)
ODD_SIZES = (1, 7, 4093, 65537, 3, 100_003)


async def echo(request: web.Request) -> web.StreamResponse:
    """Stream the body back, with the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    chunks = []
    async for chunk in request.content.iter_chunked(65536):
        digest.update(chunk)
        chunks.append(chunk)
    return web.Response(
        body=b"".join(chunks),
        headers={"X-Sha256": digest.hexdigest(), "Content-Type": "app/octet"},
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def echo_service(ecosystem):
    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, HOST, port).start()
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        serverconf.add_service(SERVICE, kind="REST", url=f"http://{HOST}:{port}")
        serverconf.grant(SERVICE, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()
    yield
    await runner.cleanup()


async def odd_chunks(data: bytes):
    position, turn = 0, 0
    while position < len(data):
        size = ODD_SIZES[turn % len(ODD_SIZES)]
        yield data[position : position + size]
        position, turn = position + size, turn + 1


async def post(ecosystem, body: bytes) -> tuple[int, object, bytes]:
    headers = {
        "X-Road-Client": BENEFITS_SUBSYSTEM.slash(),
        "Content-Type": "application/octet-stream",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + PATH, data=odd_chunks(body), headers=headers
        ) as response:
            return response.status, response.headers.copy(), await response.read()


def _tune(server, **changes) -> object:
    old = server.runtime.settings
    server.runtime.settings = dataclasses.replace(old, **changes)
    return old


async def test_body_arrives_byte_exact_and_comes_back(ecosystem) -> None:
    status, headers, answer = await post(ecosystem, BODY)

    assert status == 200, answer[:500]
    assert headers["X-Sha256"] == hashlib.sha256(BODY).hexdigest()
    assert answer == BODY
    for server in (ecosystem.agency_server, ecosystem.register_server):
        assert not list((server.directory / "spool").iterdir())


async def test_body_over_the_limit_is_refused(ecosystem) -> None:
    server = ecosystem.agency_server
    old = _tune(server, max_body_bytes=1024 * 1024)
    try:
        status, _, answer = await post(ecosystem, BODY)
    finally:
        server.runtime.settings = old

    assert status != 200
    assert b"RequestTooLarge" in answer


async def test_provider_limit_is_enforced_while_streaming(ecosystem) -> None:
    server = ecosystem.register_server
    old = _tune(server, max_body_bytes=1024 * 1024)
    try:
        status, _, answer = await post(ecosystem, BODY)
    finally:
        server.runtime.settings = old

    assert status != 200
    assert b"RequestTooLarge" in answer


async def test_body_over_the_log_cap_fails_the_exchange(ecosystem) -> None:
    server = ecosystem.agency_server
    old = _tune(server, max_loggable_body_bytes=1024 * 1024)
    try:
        status, _, answer = await post(ecosystem, BODY)
    finally:
        server.runtime.settings = old

    assert status != 200
    assert b"LoggingFailed" in answer


async def test_truncated_body_is_logged_when_allowed(ecosystem) -> None:
    server = ecosystem.register_server
    old = _tune(server, max_loggable_body_bytes=1000, truncated_body_allowed=True)
    try:
        status, headers, answer = await post(ecosystem, BODY)
    finally:
        server.runtime.settings = old

    assert status == 200 and answer == BODY
    records = await server.runtime.message_log.find(query_id=headers["X-Road-Id"])
    assert [r.attachments for r in records] == [[BODY[:1000]], [BODY[:1000]]]
