"""SOAP with attachments and MTOM cross both security servers byte for byte."""

from __future__ import annotations

import hashlib
import os
import uuid

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lxml import etree

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    HOST,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    free_ports,
)
from protocol.identifiers import ServiceId
from protocol.mime import MimePart, build_multipart, parse_content_type, parse_multipart
from protocol.soap import build_soap_request
from security_server.serverconf import ServerConf

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NS = "urn:xgate:test:scans"
SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "uploadScan")
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
RECEIVED = web.AppKey("received", list)

ATTACHMENTS = [
    b"",
    b"x",
    b"line one\r\nline two\r\n",
    b"bare\nline\nfeeds\n\n",
    b"ends with a carriage return\r",
    b"--looks-like-a-boundary\r\n--\r\n",
    os.urandom(70_001),
]


async def echo_service(request: web.Request) -> web.Response:
    """Answer with a digest per attachment, and send the attachments back."""
    content_type = request.headers["Content-Type"]
    mime_type, params = parse_content_type(content_type)
    assert mime_type == "multipart/related", content_type
    parts = parse_multipart(await request.read(), params["boundary"])
    request.app[RECEIVED].append(parts)
    envelope = etree.fromstring(parts[0].body)
    header = envelope.find(f"{{{SOAP_ENV}}}Header")
    out = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV})
    out.append(header)
    body = etree.SubElement(out, f"{{{SOAP_ENV}}}Body")
    answer = etree.SubElement(body, f"{{{NS}}}uploadScanResponse", nsmap={"s": NS})
    for part in parts[1:]:
        etree.SubElement(answer, f"{{{NS}}}sha256").text = hashlib.sha256(
            part.body
        ).hexdigest()
    soap_part = MimePart(
        (("Content-Type", "text/xml; charset=UTF-8"), ("Content-ID", "<answer>")),
        etree.tostring(out, xml_declaration=True, encoding="UTF-8"),
    )
    boundary = "answer-" + uuid.uuid4().hex
    payload = build_multipart([soap_part, *parts[1:]], boundary)
    return web.Response(
        body=payload,
        headers={
            "Content-Type": f'multipart/related; type="text/xml"; boundary={boundary}'
        },
    )


@pytest.fixture(scope="module")
def received() -> list[list[MimePart]]:
    return []


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def scan_service(ecosystem: Ecosystem, received: list[list[MimePart]]):
    app = web.Application(client_max_size=10 * 1024 * 1024)
    app[RECEIVED] = received
    app.router.add_post("/scans", echo_service)
    runner = web.AppRunner(app)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, HOST, port).start()
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        serverconf.add_service(SERVICE, kind="SOAP", url=f"http://{HOST}:{port}/scans")
        serverconf.grant(SERVICE, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()
    yield
    await runner.cleanup()


def package(soap_type: str) -> tuple[bytes, str, list[MimePart]]:
    body = etree.Element(f"{{{NS}}}uploadScan", nsmap={"s": NS})
    etree.SubElement(body, f"{{{NS}}}scan").text = "cid:scan-1"
    envelope = build_soap_request(
        BENEFITS_SUBSYSTEM, SERVICE, f"scan-{uuid.uuid4()}", body
    )
    soap_part = MimePart(
        (
            ("Content-Type", soap_type),
            ("Content-Transfer-Encoding", "8bit"),
            ("Content-ID", "<envelope@test>"),
        ),
        envelope,
    )
    attachments = [
        MimePart(
            (
                ("Content-Type", "application/octet-stream"),
                ("Content-Transfer-Encoding", "binary"),
                ("Content-ID", f"<scan-{index}>"),
            ),
            data,
        )
        for index, data in enumerate(ATTACHMENTS, start=1)
    ]
    boundary = "BND-" + uuid.uuid4().hex
    return build_multipart([soap_part, *attachments], boundary), boundary, attachments


@pytest.mark.parametrize(
    ("soap_type", "outer"),
    [
        ("text/xml; charset=UTF-8", 'multipart/related; type="text/xml"; boundary={b}'),
        (
            'application/xop+xml; charset=UTF-8; type="text/xml"',
            'multipart/related; type="application/xop+xml"; start="<envelope@test>";'
            '\tstart-info="text/xml"; boundary="{b}"',
        ),
    ],
    ids=["swa", "mtom"],
)
async def test_attachments_reach_the_service_and_come_back_intact(
    ecosystem: Ecosystem, received: list[list[MimePart]], soap_type: str, outer: str
) -> None:
    data, boundary, attachments = package(soap_type)
    content_type = outer.format(b=boundary)
    received.clear()

    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/",
            data=data,
            headers={"Content-Type": content_type, "SOAPAction": '""'},
        ) as response:
            answer = await response.read()
            answer_type = response.headers["Content-Type"]

    assert received, answer[:400]
    at_service = received[0][1:]
    assert [p.body for p in at_service] == ATTACHMENTS
    assert [p.header("Content-ID") for p in at_service] == [
        a.header("Content-ID") for a in attachments
    ]
    mime_type, params = parse_content_type(answer_type)
    assert mime_type == "multipart/related", answer[:400]
    parts = parse_multipart(answer, params["boundary"])
    assert [p.body for p in parts[1:]] == ATTACHMENTS
    envelope = etree.fromstring(parts[0].body)
    digests = [e.text for e in envelope.iter(f"{{{NS}}}sha256")]
    assert digests == [hashlib.sha256(a).hexdigest() for a in ATTACHMENTS]
    assert envelope.find(".//{http://x-road.eu/xsd/xroad.xsd}requestHash") is not None
