"""Net: the background task that time-stamps message-log records (message-log.md §5).

How it works: ``run()`` sleeps until ``notify()`` is called after an append
or until the interval passes, then ``stamp_pending()`` takes the unstamped
records oldest first, a page at a time. A record whose signature cannot be
read is left unstamped and reported; it never holds up the others.

- Single (one record in the page, or batching off): the imprint is SHA-512
  of the decoded SignatureValue; the token is embedded in the signature.
- Batch (two or more records, batching on): the leaves are the records'
  signature hashes; ``build_batch_chains`` makes the §4 tree, the imprint is
  SHA-512 of the ts-hashchainresult bytes, ONE TSA request covers the page,
  and the store keeps the token and result once plus each record's chain.

Either way the approved TSAs are tried in order until one answers with a
token that verifies against that TSA's certificate, and the certificate is
added to the token before it is stored. When every TSA fails the round
stops; the records stay unstamped and are retried in the next round.
``stamp_now()`` stamps one record at once (timestamp-immediately, §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

import aiohttp
from cryptography import x509

from protocol.digests import SHA512_URI, unb64
from protocol.errors import TimestampError, XRoadError
from protocol.hashchain import Leaf, build_batch_chains
from protocol.timestamp import (
    add_tsa_cert,
    build_timestamp_request,
    embed_timestamp,
    parse_timestamp_response,
    signature_value,
    verify_timestamp_token,
)

from .messagelog import BatchStamp, MessageLog, PendingStamp

log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
MAX_REPLY_BYTES = 1024 * 1024
RECORDS_LIMIT = 10000  # timestamp-records-limit (§5)
PAGE_SIZE = 100  # records read from the store at a time, stamped singly
BATCH_PAGE_SIZE = 1000  # records read at a time, and covered by one TSA request
# Batch layout inside a container (message-log.md §5, §6).
TS_DATA_REF = "/META-INF/signatures.xml"
TS_RESULT_URI = "/ts-hashchain.xml#STEP0"

TSASources = Callable[[], list[tuple[str, x509.Certificate]]]


class TSAUnavailable(TimestampError):
    """No configured TSA produced a usable time-stamp."""


class Timestamper:
    """Stamps unstamped message-log records with RFC 3161 tokens.

    :param batch: cover several pending records with one token and hash
        chains (§5); off, each record costs one TSA round trip.
    """

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
        batch: bool = False,
    ) -> None:
        self.message_log = log
        self.tsa_sources = tsa_sources
        self.session = session
        self.clock = clock
        self.interval_seconds = interval_seconds
        self.request_timeout = request_timeout
        self.records_limit = records_limit
        self.batch = batch
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

    async def stamp_now(self, record_id: int) -> None:
        """Stamp one record before returning (timestamp-immediately, §1).

        A record some round has stamped meanwhile is left as it is.

        :raises TimestampError: no TSA is configured or none gave a token;
            ``MalformedSignature`` when the record's signature is unreadable.
        """
        async with self._round:
            record = await self.message_log.pending_stamp(record_id)
            if record is None:
                return
            sources = self.tsa_sources()
            if not sources:
                self._fail("no TSA is configured", tsa_down=True)
                raise TSAUnavailable("no TSA is configured")
            try:
                await self._stamp_record(record, sources)
            except TSAUnavailable as exc:
                self._tsa_unavailable(exc)
                raise
            self._succeeded()

    async def _stamp_all(self) -> int:
        stamped = 0
        size = BATCH_PAGE_SIZE if self.batch else PAGE_SIZE
        page = min(size, self.records_limit)
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
            self._fail("no TSA is configured", tsa_down=True)
            return 0, True

        readable, failed = self._readable(records)
        if self.batch and len(readable) > 1:
            done, batch_failed = await self._stamp_batch(readable, sources)
        else:
            done, batch_failed = await self._stamp_singly(readable, sources)
        failed = failed or batch_failed
        if not failed:
            self.last_error = None
        return done, failed

    def _readable(self, records: list[PendingStamp]) -> tuple[list[PendingStamp], bool]:
        """Drop records whose signature cannot be read; they stay unstamped."""
        readable: list[PendingStamp] = []
        failed = False
        for record in records:
            try:
                signature_value(record.signature)
            except XRoadError as exc:
                self._fail(f"record {record.id}: {exc.full_code}: {exc}")
                failed = True
                continue
            readable.append(record)
        return readable, failed

    async def _stamp_singly(
        self, records: list[PendingStamp], sources: list[tuple[str, x509.Certificate]]
    ) -> tuple[int, bool]:
        done = 0
        failed = False
        for record in records:
            try:
                await self._stamp_record(record, sources)
            except TSAUnavailable as exc:
                self._tsa_unavailable(exc)
                return done, True  # the next records would fail the same way
            except XRoadError as exc:
                # Only this record is at fault (e.g. a signature we cannot embed in).
                self._fail(f"record {record.id}: {exc.full_code}: {exc}")
                failed = True
                continue
            done += 1
            self._succeeded()
        return done, failed

    def _tsa_unavailable(self, exc: TSAUnavailable) -> None:
        self._fail(str(exc), tsa_down=True)
        self._tsa_down = True

    def _succeeded(self) -> None:
        self.last_success = self.clock()
        self.failing_since = None
        self._tsa_down = False

    def failing_for(self, now: datetime) -> float:
        """Seconds since time-stamping started failing; 0 while it works."""
        if self.failing_since is None:
            return 0.0
        return (now - self.failing_since).total_seconds()

    def _fail(self, message: str, *, tsa_down: bool = False) -> None:
        """Record a failure; only the TSAs failing starts the failure period.

        A record we cannot stamp (an unreadable signature) must not stop the
        server's traffic while the TSA itself works (message-log.md §1).
        """
        if tsa_down and self.failing_since is None:
            self.failing_since = self.clock()
        self.last_error = message
        log.error("timestamping failed code=%s reason=%s", TimestampError.code, message)

    async def _stamp_record(
        self, record: PendingStamp, sources: list[tuple[str, x509.Certificate]]
    ) -> None:
        value = signature_value(record.signature)
        token, url = await self._timestamp(value, sources)
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

    async def _stamp_batch(
        self, records: list[PendingStamp], sources: list[tuple[str, x509.Certificate]]
    ) -> tuple[int, bool]:
        """Stamp ``records`` (two or more) with one token over their hash tree."""
        leaves: list[Leaf] = [unb64(record.signature_hash) for record in records]
        chains = build_batch_chains(leaves, TS_DATA_REF, TS_RESULT_URI, SHA512_URI)
        try:
            token, url = await self._timestamp(chains.result, sources)
        except TSAUnavailable as exc:
            self._tsa_unavailable(exc)
            return 0, True
        shares = [
            BatchStamp(record.id, chain)
            for record, chain in zip(records, chains.chains, strict=True)
        ]
        try:
            timestamp_id = await self.message_log.set_batch_timestamp(
                shares, token, chains.result, self.clock()
            )
        except XRoadError as exc:
            # Nothing was stored; the records are tried again next round.
            self._fail(f"batch of {len(records)}: {exc.full_code}: {exc}")
            return 0, True
        self._succeeded()
        log.info(
            "batch time-stamped records=%d first=%d last=%d timestamp_record=%d url=%s",
            len(records),
            records[0].id,
            records[-1].id,
            timestamp_id,
            url,
        )
        return len(records), False

    async def _timestamp(
        self, data: bytes, sources: list[tuple[str, x509.Certificate]]
    ) -> tuple[bytes, str]:
        """Get a verified token over ``data`` from the first TSA that gives one.

        :raises TSAUnavailable: every TSA failed.
        """
        request = build_timestamp_request(data, "sha512")
        for url, tsa_cert in sources:
            try:
                reply = await self._fetch_timestamp(url, request)
                token = parse_timestamp_response(reply, request)
                verify_timestamp_token(token, data, [tsa_cert])
            except (aiohttp.ClientError, TimeoutError, XRoadError) as exc:
                log.warning("tsa failed url=%s error=%s", url, _describe(exc))
                continue
            return add_tsa_cert(token, tsa_cert), url
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
