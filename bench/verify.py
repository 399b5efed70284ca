"""Benchmark: ASiC-E containers verified per second by the auditor's verifier.

Starts the demo ecosystem in a temporary directory, makes some SOAP and
REST calls, waits for their timestamps, exports every logged record of both
security servers as a container, then runs
``protocol.auditor.verify_container`` over them for a number of rounds in
one thread, and prints containers per second.

    python bench/verify.py --calls 20 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from demo.ecosystem import build_ecosystem, wait_for_timestamps
from demo.story import make_calls
from protocol.auditor import verify_container
from protocol.globalconf import GlobalConf
from security_server.logexport import build_record_container


async def collect(directory: Path, calls: int) -> tuple[list[bytes], GlobalConf]:
    """Containers of every record both servers logged for ``calls`` call pairs."""
    ecosystem = await build_ecosystem(directory)
    try:
        for _ in range(calls):
            await make_calls(ecosystem)
        await wait_for_timestamps(ecosystem)
        containers: list[bytes] = []
        conf = None
        for server in (ecosystem.agency_server, ecosystem.register_server):
            assert server.runtime is not None
            conf = server.runtime.conf_client.current
            records = await server.runtime.message_log.find(limit=1_000_000)
            containers += [build_record_container(record) for record in records]
        assert conf is not None
        return containers, conf
    finally:
        await ecosystem.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="SOAP+REST call pairs.")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        containers, conf = asyncio.run(collect(Path(scratch), args.calls))

    per_container: list[float] = []
    started = time.perf_counter()
    for _ in range(args.rounds):
        for data in containers:
            begun = time.perf_counter()
            verify_container(data, conf)  # raises if one does not verify
            per_container.append(time.perf_counter() - begun)
    seconds = time.perf_counter() - started

    total = len(containers) * args.rounds
    print(
        f"{len(containers)} containers x {args.rounds} rounds: "
        f"{total / seconds:.1f} containers/s in one thread, "
        f"median {statistics.median(per_container) * 1000:.2f} ms each"
    )


if __name__ == "__main__":
    main()
