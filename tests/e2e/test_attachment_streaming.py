"""Large SOAP attachments stream through both security servers, with limits."""

from __future__ import annotations

import dataclasses
import os
import uuid

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lxml import etree

from demo.ecosystem import BENEFITS_SUBSYSTEM, HOST, REGISTRY_SUBSYSTEM, free_ports
from protocol.identifiers import ServiceId
from protocol.mime import MimePart, build_multipart, parse_content_type, parse_multipart
from protocol.soap import build_soap_request
from security_server.serverconf import ServerConf

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "bigScan")
NS = "urn:xgate:test:big"
BIG = os.urandom(3 * 1024 * 1024 + 11)
SMALL = b"small\r\n"
ODD_SIZES = (1, 7, 4093, 65537, 3, 100_003)


class Service:
    """Echo the package back; ``broken`` cuts the answer's close delimiter."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[MimePart]]] = []
        self.broken = False

    async def handle(self, request: web.Request) -> web.Response:
        _, params = parse_content_type(request.headers["Content-Type"])
        parts = parse_multipart(await request.read(), params["boundary"])
        self.calls.append((request.headers.get("Content-Length"), parts))
        boundary = "ans-" + uuid.uuid4().hex
        payload = build_multipart(parts, boundary)
        if self.broken:
            payload = payload[: -len(boundary) - 8]
        return web.Response(
            body=payload,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
        )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service(ecosystem):
    state = Service()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/big", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, HOST, port).start()
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        serverconf.add_service(SERVICE, kind="SOAP", url=f"http://{HOST}:{port}/big")
        serverconf.grant(SERVICE, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()
    yield state
    await runner.cleanup()


def request_package() -> tuple[bytes, str]:
    body = etree.Element(f"{{{NS}}}bigScan", nsmap={"s": NS})
    envelope = build_soap_request(
        BENEFITS_SUBSYSTEM, SERVICE, f"big-{uuid.uuid4()}", body
    )
    parts = [
        MimePart((("Content-Type", "text/xml; charset=UTF-8"),), envelope),
        MimePart(
            (("Content-Type", "application/octet-stream"), ("Content-ID", "<big>")),
            BIG,
        ),
        MimePart((("Content-Type", "text/plain"),), SMALL),
    ]
    boundary = "req-" + uuid.uuid4().hex
    return build_multipart(parts, boundary), f"multipart/related; boundary={boundary}"


async def odd_chunks(data: bytes):  # type: ignore[no-untyped-def]
    position, turn = 0, 0
    while position < len(data):
        size = ODD_SIZES[turn % len(ODD_SIZES)]
        yield data[position : position + size]
        position, turn = position + size, turn + 1


async def post(ecosystem) -> tuple[int, str, bytes]:  # type: ignore[no-untyped-def]
    data, content_type = request_package()
    headers = {"Content-Type": content_type, "SOAPAction": '""'}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/", data=odd_chunks(data), headers=headers
        ) as response:
            return (
                response.status,
                response.headers["Content-Type"],
                await response.read(),
            )


def spools_are_empty(ecosystem) -> bool:  # type: ignore[no-untyped-def]
    servers = (ecosystem.agency_server, ecosystem.register_server)
    return all(not list((s.directory / "spool").iterdir()) for s in servers)


def _tune(server, **changes):  # type: ignore[no-untyped-def]
    old = server.runtime.settings
    server.runtime.settings = dataclasses.replace(old, **changes)
    return old


async def test_big_attachment_arrives_byte_exact_and_comes_back(
    ecosystem, service: Service
) -> None:
    service.calls.clear()
    status, content_type, answer = await post(ecosystem)

    assert status == 200, answer[:500]
    (length, parts), *_ = service.calls
    assert [p.body for p in parts[1:]] == [BIG, SMALL]
    assert parts[1].header("Content-ID") == "<big>"
    assert length is not None  # framed length known in advance, not chunked
    _, params = parse_content_type(content_type)
    assert params["boundary"].startswith("ans-")
    back = parse_multipart(answer, params["boundary"])
    assert [p.body for p in back[1:]] == [BIG, SMALL]
    assert b"requestHash" in back[0].body
    assert spools_are_empty(ecosystem)


@pytest.mark.parametrize("side", ["agency_server", "register_server"])
async def test_attachment_over_the_limit_is_refused(
    ecosystem, service: Service, side: str
) -> None:
    server = getattr(ecosystem, side)
    old = _tune(server, max_body_bytes=1024 * 1024)
    service.calls.clear()
    try:
        status, _, answer = await post(ecosystem)
    finally:
        server.runtime.settings = old

    assert status == 200  # a SOAP fault, as X-Road sends it
    assert b"<faultcode>" in answer and b"RequestTooLarge" in answer
    assert service.calls == []
    assert spools_are_empty(ecosystem)


async def test_broken_service_answer_is_a_fault_and_spools_go(
    ecosystem, service: Service
) -> None:
    service.broken = True
    try:
        status, _, answer = await post(ecosystem)
    finally:
        service.broken = False

    assert status == 200  # a SOAP fault, as X-Road sends it
    assert b"Server.ServerProxy.ServiceFailed.InvalidMessage" in answer
    assert spools_are_empty(ecosystem)
