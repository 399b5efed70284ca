"""Tests for security_server.signbatch: grouping sign requests per member."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from protocol.errors import XRoadError
from protocol.identifiers import ClientId
from protocol.signature import SignedMessage
from security_server.signbatch import SignBatcher

pytestmark = pytest.mark.asyncio

ALICE = ClientId("DEV", "COM", "111")
BOB = ClientId("DEV", "COM", "222")
T0 = datetime(2024, 5, 1, tzinfo=UTC)


class Refused(XRoadError):
    code = "Refused"


class FakeSigner:
    """Records each batch; signs a message as ``member/batch#/position``."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[ClientId, int, datetime]] = []
        self.fail = fail

    def __call__(self, member, messages, now) -> list[SignedMessage]:
        if self.fail:
            raise Refused("no key")
        self.batches.append((member, len(messages), now))
        number = len(self.batches)
        return [
            SignedMessage(f"{member}/{number}".encode(), None, parts[0][1])
            for parts in messages
        ]


def parts(n: int) -> list[tuple[str, bytes]]:
    return [("/message.xml", b"%d" % n)]


async def test_concurrent_requests_of_a_member_share_one_batch() -> None:
    signer = FakeSigner()
    batcher = SignBatcher(signer)

    results = await asyncio.gather(
        *[
            batcher.sign(ALICE, parts(n), T0 + timedelta(seconds=n), 0.01)
            for n in range(3)
        ],
        batcher.sign(BOB, parts(9), T0, 0.01),
    )

    assert sorted(signer.batches, key=str) == sorted(
        [(ALICE, 3, T0 + timedelta(seconds=2)), (BOB, 1, T0)], key=str
    )
    assert [r.hash_chain for r in results] == [b"0", b"1", b"2", b"9"]
    assert len({r.signature for r in results[:3]}) == 1
    assert results[3].signature != results[0].signature


async def test_a_later_request_opens_a_new_batch() -> None:
    signer = FakeSigner()
    batcher = SignBatcher(signer)

    first = await batcher.sign(ALICE, parts(1), T0, 0.001)
    second = await batcher.sign(ALICE, parts(2), T0, 0.001)

    assert [count for _, count, _ in signer.batches] == [1, 1]
    assert first.signature != second.signature


async def test_a_signing_failure_reaches_every_caller() -> None:
    batcher = SignBatcher(FakeSigner(fail=True))

    results = await asyncio.gather(
        *[batcher.sign(ALICE, parts(n), T0, 0.01) for n in range(2)],
        return_exceptions=True,
    )

    assert [type(r) for r in results] == [Refused, Refused]


async def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    batcher = SignBatcher(FakeSigner())
    leaver = asyncio.ensure_future(batcher.sign(ALICE, parts(1), T0, 0.02))
    stayer = asyncio.ensure_future(batcher.sign(ALICE, parts(2), T0, 0.02))
    await asyncio.sleep(0)
    leaver.cancel()

    assert (await stayer).hash_chain == b"2"
    assert leaver.cancelled()


async def test_close_cancels_open_batches() -> None:
    batcher = SignBatcher(FakeSigner())
    waiting = asyncio.ensure_future(batcher.sign(ALICE, parts(1), T0, 10))
    await asyncio.sleep(0)

    await batcher.close()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert batcher.open == {}
