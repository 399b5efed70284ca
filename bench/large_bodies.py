"""Benchmark: large bodies through two security servers, each in its own process.

Builds the demo ecosystem in a temporary directory, keeps the central server,
the TSA and an echo service in this process, and restarts both security
servers as ``xgate server serve`` subprocesses. Then sends a 100 MiB REST POST
body and a 50 MiB SOAP attachment through the client proxy and prints each
server's peak RSS. Exits non-zero if an answer is wrong. Not a test.

    python bench/large_bodies.py [--rest-mib 100] [--soap-mib 50]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from lxml import etree

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    HOST,
    PIN,
    REGISTRY_SUBSYSTEM,
    build_ecosystem,
    free_ports,
)
from protocol.identifiers import ServiceId
from protocol.mime import (
    MimePart,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    build_multipart,
    parse_content_type,
)
from protocol.soap import build_soap_request
from security_server.serverconf import ServerConf
from security_server.settings import ServerSettings

MiB = 1024 * 1024
CHUNK = 64 * 1024
REST_SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "benchEcho")
SOAP_SERVICE = ServiceId(REGISTRY_SUBSYSTEM, "benchScan")
NS = "urn:xgate:bench"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def pattern_chunks(size: int, seed: bytes):  # type: ignore[no-untyped-def]
    """Deterministic pseudo-random body, produced chunk by chunk."""
    block = hashlib.sha512(seed).digest() * (CHUNK // 64)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        block = block[1:] + block[:1]
        sent += len(piece)
        yield piece


def expected_sha256(size: int, seed: bytes) -> str:
    digest = hashlib.sha256()
    for piece in pattern_chunks(size, seed):
        digest.update(piece)
    return digest.hexdigest()


async def rest_echo(request: web.Request) -> web.StreamResponse:
    """Hash the body as it arrives; answer with the hash (a small body)."""
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"sha256": digest.hexdigest(), "size": size})


async def soap_echo(request: web.Request) -> web.Response:
    """Hash each attachment as it arrives; answer with a SOAP body of hashes."""
    _, params = parse_content_type(request.headers["Content-Type"])
    parser = MultipartParser(params["boundary"])
    soap_part, hashes, current, index = bytearray(), [], None, 0
    async for chunk in request.content.iter_chunked(CHUNK):
        for event in parser.feed(chunk):
            if isinstance(event, PartStart):
                current = hashlib.sha256() if index else None
            elif isinstance(event, PartData):
                if current is None:
                    soap_part += event.data
                else:
                    current.update(event.data)
            elif isinstance(event, PartEnd):
                if current is not None:
                    hashes.append(current.hexdigest())
                index += 1
    parser.close()
    envelope = etree.fromstring(bytes(soap_part))
    out = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV})
    out.append(envelope.find(f"{{{SOAP_ENV}}}Header"))
    body = etree.SubElement(out, f"{{{SOAP_ENV}}}Body")
    answer = etree.SubElement(body, f"{{{NS}}}benchScanResponse", nsmap={"b": NS})
    for value in hashes:
        etree.SubElement(answer, f"{{{NS}}}sha256").text = value
    return web.Response(
        body=etree.tostring(out, xml_declaration=True, encoding="UTF-8"),
        content_type="text/xml",
        charset="UTF-8",
    )


class Sampler:
    """Peak RSS of processes, from /proc (VmHWM) and periodic VmRSS samples."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)

    @staticmethod
    def status(pid: int, field: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def rss(self) -> dict[str, int]:
        return {name: self.status(pid, "VmRSS") for name, pid in self.pids.items()}

    async def run(self) -> None:
        while True:
            for name, value in self.rss().items():
                self.peak[name] = max(self.peak[name], value)
            await asyncio.sleep(0.01)


async def start_servers(directory: Path) -> dict[str, subprocess.Popen]:
    processes = {}
    for name in ("ss-register", "ss-agency"):
        server_dir = directory / name
        settings = ServerSettings.load(server_dir)
        dataclasses.replace(
            settings, max_body_bytes=512 * MiB, truncated_body_allowed=True
        ).save(server_dir)
        processes[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "server",
                "serve",
                "--dir",
                str(server_dir),
                "--pin",
                PIN,
            ],
            stdout=subprocess.DEVNULL,
        )
    return processes


async def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.3)
    raise SystemExit(f"server at {url} did not start")


async def send_rest(client_url: str, size: int) -> bool:
    path = f"/r1/{REST_SERVICE.slash()}/echo"
    headers = {
        "X-Road-Client": BENEFITS_SUBSYSTEM.slash(),
        "Content-Type": "application/octet-stream",
    }

    async def body():  # type: ignore[no-untyped-def]
        for piece in pattern_chunks(size, b"rest"):
            yield piece

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(client_url + path, data=body(), headers=headers) as r:
            answer = await r.read()
    ok = r.status == 200 and expected_sha256(size, b"rest").encode() in answer
    print(f"REST {size // MiB} MiB: HTTP {r.status} {'ok' if ok else answer[:300]!r}")
    return ok


async def send_soap(client_url: str, size: int) -> bool:
    scan = etree.Element(f"{{{NS}}}benchScan", nsmap={"b": NS})
    envelope = build_soap_request(
        BENEFITS_SUBSYSTEM, SOAP_SERVICE, f"bench-{uuid.uuid4()}", scan
    )
    boundary = "bench" + uuid.uuid4().hex
    head = build_multipart(
        [MimePart((("Content-Type", "text/xml; charset=UTF-8"),), envelope)],
        boundary,
    )
    head = head[: head.rindex(b"--" + boundary.encode() + b"--")]
    head += f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()

    async def body():  # type: ignore[no-untyped-def]
        yield head
        for piece in pattern_chunks(size, b"soap"):
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {
        "Content-Type": f'multipart/related; type="text/xml"; boundary={boundary}',
        "SOAPAction": '""',
    }
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(client_url + "/", data=body(), headers=headers) as r:
            answer = await r.read()
    ok = r.status == 200 and expected_sha256(size, b"soap").encode() in answer
    print(
        f"SOAP {size // MiB} MiB attachment: HTTP {r.status} "
        f"{'ok' if ok else answer[:300]!r}"
    )
    return ok


async def main(rest_mib: int, soap_mib: int) -> int:
    with tempfile.TemporaryDirectory(prefix="xgate-bench-") as tmp:
        directory = Path(tmp)
        eco = await build_ecosystem(directory)
        await eco.register_server.stop()
        await eco.agency_server.stop()

        app = web.Application()
        app.router.add_post("/echo", rest_echo)
        app.router.add_post("/scan", soap_echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        (port,) = free_ports(1)
        await web.TCPSite(runner, HOST, port).start()
        conf = ServerConf(eco.register_server.directory)
        try:
            conf.add_service(REST_SERVICE, kind="REST", url=f"http://{HOST}:{port}")
            conf.grant(REST_SERVICE, BENEFITS_SUBSYSTEM)
            conf.add_service(
                SOAP_SERVICE, kind="SOAP", url=f"http://{HOST}:{port}/scan"
            )
            conf.grant(SOAP_SERVICE, BENEFITS_SUBSYSTEM)
        finally:
            conf.close()

        processes = await start_servers(directory)
        try:
            await wait_for(eco.client_proxy_url + "/listClients")
            sampler = Sampler({n: p.pid for n, p in processes.items()})
            await asyncio.sleep(1)
            before = sampler.rss()
            sampling = asyncio.create_task(sampler.run())
            started = time.monotonic()
            ok = await send_rest(eco.client_proxy_url, rest_mib * MiB)
            print(f"  took {time.monotonic() - started:.1f} s")
            report(sampler, before, "after REST")
            before = sampler.rss()
            sampler.peak = dict.fromkeys(sampler.pids, 0)
            started = time.monotonic()
            ok = await send_soap(eco.client_proxy_url, soap_mib * MiB) and ok
            print(f"  took {time.monotonic() - started:.1f} s")
            report(sampler, before, "after SOAP")
            sampling.cancel()
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(10)
            await runner.cleanup()
            await eco.stop()
        return 0 if ok else 1


def report(sampler: Sampler, before: dict[str, int], label: str) -> None:
    for name, pid in sampler.pids.items():
        hwm = Sampler.status(pid, "VmHWM")
        print(
            f"  {label}: {name} rss before {before[name] / MiB:.1f} MiB,"
            f" sampled peak {sampler.peak[name] / MiB:.1f} MiB"
            f" (+{(sampler.peak[name] - before[name]) / MiB:.1f}),"
            f" VmHWM {hwm / MiB:.1f} MiB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rest-mib", type=int, default=100)
    parser.add_argument("--soap-mib", type=int, default=50)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rest_mib, args.soap_mib)))
