"""Benchmark: message-log records written durably per second under concurrency.

Opens a fresh ``MessageLog`` in a temporary directory (or ``--dir``) and
lets C concurrent appenders write N records in all, each ``append`` awaited
until its row is committed (``synchronous=FULL``), for each C given.

    python bench/messagelog.py --records 2000 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from protocol.identifiers import ClientId, ServiceId
from security_server.messagelog import LogRecord, MessageLog

CLIENT = ClientId("BENCH", "GOV", "2002", "BENEFITS")
SERVICE = ServiceId(ClientId("BENCH", "GOV", "1001", "REGISTRY"), "checkDigitalId")


def sample_record(number: int, message_bytes: int, body_bytes: int) -> LogRecord:
    return LogRecord(
        query_id=f"bench-{number}",
        x_request_id=f"x-{number}",
        response=bool(number % 2),
        filed_under=CLIENT,
        client=CLIENT,
        service=SERVICE,
        message=os.urandom(message_bytes // 2).hex().encode(),
        signature=os.urandom(2048).hex().encode(),  # ~4 KiB like signatures.xml
        hash_chain_result=None,
        hash_chain=None,
        attachments=[os.urandom(body_bytes)] if body_bytes else [],
        rest=False,
    )


async def run(
    path: Path, records: int, concurrency: int, message_bytes: int, body_bytes: int
) -> tuple[float, list[float]]:
    message_log = MessageLog.open(path)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(records):
        queue.put_nowait(number)
    samples = [sample_record(n, message_bytes, body_bytes) for n in range(64)]
    latencies: list[float] = []

    async def appender() -> None:
        while not queue.empty():
            number = queue.get_nowait()
            started = time.perf_counter()
            await message_log.append(samples[number % 64], datetime.now(UTC))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(appender() for _ in range(concurrency)))
    finally:
        message_log.close()
    return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--message-bytes", type=int, default=2048)
    parser.add_argument("--body-bytes", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="Where the db goes.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for concurrency in args.concurrency:
            path = Path(scratch) / f"messagelog-{concurrency}.db"
            seconds, latencies = asyncio.run(
                run(
                    path, args.records, concurrency, args.message_bytes, args.body_bytes
                )
            )
            ordered = sorted(latencies)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
            print(
                f"concurrency {concurrency:>3}: {args.records / seconds:9.1f} records/s"
                f"   p50 {statistics.median(latencies) * 1000:7.2f} ms"
                f"   p99 {p99:7.2f} ms"
            )


if __name__ == "__main__":
    main()
