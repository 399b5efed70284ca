"""End-to-end fixtures: one whole demo ecosystem per test module, on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio

from demo.ecosystem import Ecosystem, build_ecosystem


class MovableClock:
    """Real time plus an offset a test can move, to reach expiry without waiting."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def clock() -> MovableClock:
    return MovableClock()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ecosystem(
    tmp_path_factory: object, clock: MovableClock
) -> AsyncIterator[Ecosystem]:
    directory: Path = tmp_path_factory.mktemp("ecosystem")  # type: ignore[attr-defined]
    built = await build_ecosystem(directory, clock=clock)
    try:
        yield built
    finally:
        await built.stop()
