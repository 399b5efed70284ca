"""Net: batch signatures -- one signature over many messages (transport.md §7.2).

How it works: the first sign request for a member opens a window of
``batch_signature_window_ms`` and starts one flush task for that member.
Requests for the same member arriving within the window join the batch, each
waiting on its own future. When the window closes the task takes the whole
batch, signs it once (:func:`protocol.signature.sign_batch` via the runtime's
``sign_many``) and hands every caller its own :class:`SignedMessage`: all
share the signature and the hash-chain result, each has its own chain. A
failure (no key, stale OCSP evidence) goes to every caller of the batch. The
next request after a flush opens a new window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from protocol.identifiers import ClientId
from protocol.signature import SignedMessage

log = logging.getLogger(__name__)

# (member, per-message part digests, signing time) -> one result per message.
SignMany = Callable[
    [ClientId, list[list[tuple[str, bytes]]], datetime], list[SignedMessage]
]


@dataclass
class _Batch:
    digests: list[list[tuple[str, bytes]]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    futures: list[asyncio.Future[SignedMessage]] = field(default_factory=list)


class SignBatcher:
    """Collects concurrent sign requests per member and signs each batch once."""

    def __init__(self, sign_many: SignMany) -> None:
        self.sign_many = sign_many
        self.open: dict[ClientId, _Batch] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def sign(
        self,
        member: ClientId,
        digests: list[tuple[str, bytes]],
        now: datetime,
        window_seconds: float,
    ) -> SignedMessage:
        """Join (or open) the member's batch and wait for its signature."""
        batch = self.open.get(member)
        if batch is None:
            batch = self.open[member] = _Batch()
            task = asyncio.create_task(self._flush_after(member, window_seconds))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        future: asyncio.Future[SignedMessage] = (
            asyncio.get_running_loop().create_future()
        )
        batch.digests.append(digests)
        batch.times.append(now)
        batch.futures.append(future)
        return await future

    async def _flush_after(self, member: ClientId, window_seconds: float) -> None:
        await asyncio.sleep(window_seconds)
        batch = self.open.pop(member)
        try:
            # The signature is made once every message has joined.
            results = self.sign_many(member, batch.digests, max(batch.times))
        except Exception as exc:  # noqa: BLE001 - every caller gets the error
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return

        log.debug("batch signed member=%s messages=%s", member, len(results))
        for future, result in zip(batch.futures, results, strict=True):
            if not future.done():  # a caller may have been cancelled
                future.set_result(result)

    async def close(self) -> None:
        """Cancel open windows; their callers see ``CancelledError``."""
        for task in list(self.tasks):
            task.cancel()
        for batch in self.open.values():
            for future in batch.futures:
                future.cancel()
        self.open.clear()
