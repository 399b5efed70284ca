"""Net: the background task that time-stamps message-log records (message-log.md §5).

How it works: ``run()`` sleeps until ``notify()`` is called after an append
or until the interval passes, then ``stamp_pending()`` takes the unstamped
records oldest first and stamps each one on its own: the imprint is SHA-512
of the decoded SignatureValue, the approved TSAs are tried in order until
one answers with a token that verifies against that TSA's certificate, the
certificate is added to the token, the token is embedded in the signature
and the record is updated. When every TSA fails the round stops; the
records stay unstamped and are retried in the next round.

TODO(#4): batch timestamps; today each record costs one TSA round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

import aiohttp
from cryptography import x509

from protocol.errors import TimestampError, XRoadError
from protocol.timestamp import (
    add_tsa_cert,
    build_timestamp_request,
    embed_timestamp,
    parse_timestamp_response,
    signature_value,
    verify_timestamp_token,
)

from .messagelog import MessageLog, PendingStamp

log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
MAX_REPLY_BYTES = 1024 * 1024
RECORDS_LIMIT = 10000  # timestamp-records-limit (§5)
PAGE_SIZE = 100  # records read from the store at a time

TSASources = Callable[[], list[tuple[str, x509.Certificate]]]


class TSAUnavailable(TimestampError):
    """No configured TSA produced a usable time-stamp."""


class Timestamper:
    """Stamps unstamped message-log records with single RFC 3161 tokens."""

    def __init__(
        self,
        log: MessageLog,
        *,
        tsa_sources: TSASources,
        session: aiohttp.ClientSession,
        clock: Callable[[], datetime],
        interval_seconds: float = 60,
        request_timeout: float = 20,
        records_limit: int = RECORDS_LIMIT,
    ) -> None:
        self.message_log = log
        self.tsa_sources = tsa_sources
        self.session = session
        self.clock = clock
        self.interval_seconds = interval_seconds
        self.request_timeout = request_timeout
        self.records_limit = records_limit
        self.last_success: datetime | None = None
        # When stamping started to fail, None while it works (message-log.md §1).
        self.failing_since: datetime | None = None
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        # One round at a time: a record must not be stamped twice.
        self._round = asyncio.Lock()
        # After the TSAs failed, new records do not trigger another attempt
        # before the interval has passed (timestamp-retry-delay, §5).
        self._tsa_down = False

    def notify(self) -> None:
        """Wake the task: a record was appended."""
        self._wake.set()

    async def run(self) -> None:
        """Stamp in rounds until cancelled; errors are logged, never raised."""
        while True:
            self._wake.clear()
            try:
                await self.stamp_pending()
            except Exception as exc:  # a bug or a broken store: keep the task alive
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("timestamper round failed")
            # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can
            # swallow a cancellation that races with the event, and then this
            # loop would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_seconds):
                    if self._tsa_down:
                        await asyncio.sleep(self.interval_seconds)
                    await self._wake.wait()

    async def stamp_pending(self) -> int:
        """Stamp every unstamped record; return how many were stamped.

        :raises LoggingFailed: the store itself failed.
        """
        async with self._round:
            return await self._stamp_all()

    async def _stamp_all(self) -> int:
        stamped = 0
        page = min(PAGE_SIZE, self.records_limit)
        while stamped < self.records_limit:
            records = await self.message_log.unstamped(limit=page)
            if not records:
                break
            done, failed = await self._stamp_round(records)
            stamped += done
            if failed or len(records) < page:
                return stamped
        self.last_error = None
        self._tsa_down = False
        return stamped

    async def _stamp_round(self, records: list[PendingStamp]) -> tuple[int, bool]:
        sources = self.tsa_sources()
        if not sources:
            self._fail("no TSA is configured")
            return 0, True

        done = 0
        failed = False
        for record in records:
            try:
                await self._stamp_record(record, sources)
            except TSAUnavailable as exc:
                self._fail(str(exc))
                self._tsa_down = True
                return done, True  # the next records would fail the same way
            except XRoadError as exc:
                # Only this record is at fault (e.g. an unreadable signature).
                self._fail(f"record {record.id}: {exc.full_code}: {exc}")
                failed = True
                continue
            done += 1
            self.last_success = self.clock()
            self.failing_since = None
            self._tsa_down = False
        if not failed:
            self.last_error = None
        return done, failed

    def failing_for(self, now: datetime) -> float:
        """Seconds since time-stamping started failing; 0 while it works."""
        if self.failing_since is None:
            return 0.0
        return (now - self.failing_since).total_seconds()

    def _fail(self, message: str) -> None:
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.last_error = message
        log.error("timestamping failed code=%s reason=%s", TimestampError.code, message)

    async def _stamp_record(
        self, record: PendingStamp, sources: list[tuple[str, x509.Certificate]]
    ) -> None:
        value = signature_value(record.signature)
        request = build_timestamp_request(value, "sha512")
        for url, tsa_cert in sources:
            try:
                reply = await self._fetch_timestamp(url, request)
                token = parse_timestamp_response(reply, request)
                verify_timestamp_token(token, value, [tsa_cert])
            except (aiohttp.ClientError, TimeoutError, XRoadError) as exc:
                log.warning(
                    "tsa failed url=%s record=%d error=%s",
                    url,
                    record.id,
                    _describe(exc),
                )
                continue
            token = add_tsa_cert(token, tsa_cert)
            stamped_signature = embed_timestamp(record.signature, token)
            await self.message_log.set_timestamp(
                record.id, stamped_signature, token, self.clock()
            )
            log.info(
                "record time-stamped record=%d query_id=%s url=%s",
                record.id,
                record.query_id,
                url,
            )
            return
        raise TSAUnavailable(f"all {len(sources)} TSA(s) failed")

    async def _fetch_timestamp(self, url: str, request: bytes) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with self.session.post(
            url, data=request, headers={"Content-Type": QUERY_TYPE}, timeout=timeout
        ) as response:
            if response.status != 200:
                raise TimestampError(f"TSA answered HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    raise TimestampError("TSA reply is too large")
            return bytes(body)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, XRoadError):
        return f"{exc.full_code}: {exc}"
    return f"{type(exc).__name__}: {exc}"
