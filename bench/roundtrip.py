"""Benchmark: round trips through two security servers against the provider alone.

Starts the demo ecosystem in a temporary directory, then sends the same
requests (a) through the consumer's client proxy and (b) straight to the
provider's information system, at a chosen concurrency, and prints requests
per second, p50 and p99 latency, and the ratio between the two.

    python bench/roundtrip.py --requests 500 --concurrency 8 --kind both
    python bench/roundtrip.py --processes   # each security server in its own process
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import large_bodies  # noqa: E402  (the launcher of separate server processes)

from demo.ecosystem import BENEFITS_SUBSYSTEM, HOST, build_ecosystem
from demo.story import rest_example, soap_example

Call = Callable[[aiohttp.ClientSession], Awaitable[int]]


@dataclass(frozen=True)
class Result:
    label: str
    requests: int
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.label:<28} {self.rps:8.1f} req/s   p50 {self.percentile(0.5):7.1f} ms"
            f"   p99 {self.percentile(0.99):7.1f} ms   failures {self.failures}"
        )


async def measure(label: str, call: Call, requests: int, concurrency: int) -> Result:
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            status = await call(session)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await call(session)  # warm-up: connections, caches
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Result(label, requests, seconds, latencies, failures)


def soap_call(url: str) -> Call:
    body = soap_example("bench")
    headers = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}

    async def call(session: aiohttp.ClientSession) -> int:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            return response.status if b"checkDigitalIdResponse" in payload else 599

    return call


def rest_call(url: str, headers: dict[str, str]) -> Call:
    async def call(session: aiohttp.ClientSession) -> int:
        async with session.get(url, headers=headers) as response:
            await response.read()
            return response.status

    return call


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="xgate-bench-") as tmp:
        ecosystem = await build_ecosystem(Path(tmp))
        processes = {}
        if args.processes:
            # Both security servers restart as `xgate server serve` processes,
            # as in a deployment; the central server, TSA and provider stay here.
            await ecosystem.register_server.stop()
            await ecosystem.agency_server.stop()
            processes = await large_bodies.start_servers(Path(tmp))
            for name in ("register", "agency"):
                port = ecosystem.ports[f"{name}_client"]
                await large_bodies.wait_for(f"http://{HOST}:{port}/listClients")
        try:
            proxy = ecosystem.client_proxy_url
            provider = f"http://{HOST}:{ecosystem.ports['provider']}"
            client = {"X-Road-Client": BENEFITS_SUBSYSTEM.slash()}
            direct_rest = rest_example().split("/digital-id", 1)[1]
            pairs: list[tuple[Call, Call, str]] = []
            if args.kind in ("soap", "both"):
                pairs.append(
                    (
                        soap_call(proxy + "/"),
                        soap_call(provider + "/population-register"),
                        "SOAP checkDigitalId",
                    )
                )
            if args.kind in ("rest", "both"):
                pairs.append(
                    (
                        rest_call(proxy + rest_example(), client),
                        rest_call(f"{provider}/api{direct_rest}", {}),
                        "REST GET digital-id",
                    )
                )
            print(f"{args.requests} requests per run, concurrency {args.concurrency}")
            for through, direct, name in pairs:
                via = await measure(
                    f"{name} via xgate", through, args.requests, args.concurrency
                )
                alone = await measure(
                    f"{name} direct", direct, args.requests, args.concurrency
                )
                print(via.line())
                print(alone.line())
                print(
                    f"{'':<28} xgate/direct throughput ratio {via.rps / alone.rps:.3f}, "
                    f"p50 latency x{via.percentile(0.5) / alone.percentile(0.5):.1f}"
                )
                print(
                    f"{'':<28} mean via xgate {statistics.mean(via.latencies) * 1000:.1f} ms"
                )
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(timeout=10)
            await ecosystem.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kind", choices=["soap", "rest", "both"], default="both")
    parser.add_argument(
        "--processes",
        action="store_true",
        help="run each security server in its own process",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
