"""Store: the security server's message log in SQLite (message-log.md §1, §2).

Every request and response a proxy signs or receives is appended here
before the exchange may go on; the timestamper later adds a time-stamp to
each record. A record stamped alone keeps its token in ``timestamp_token``
(and inside its signature); a record stamped in a batch points to a row of
``timestamp_record`` (token + ts hash-chain result, §2) and keeps its own
``timestamp_hash_chain``. All SQLite work runs on one writer thread, never
on the loop. The SQL below is the only SQLite-specific SQL in the code base.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from lxml import etree

from protocol.digests import b64, sha512
from protocol.errors import ClientRequestError, LoggingFailed
from protocol.identifiers import ClientId, ServiceId
from protocol.soap import SOAP_ENV_NS
from protocol.xml import parse_xml

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = (
    # AUTOINCREMENT: ids stay monotonic even after old rows are deleted,
    # because archive file names are built from them (§2, §6).
    """CREATE TABLE IF NOT EXISTS message_record (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL DEFAULT 'm',
        time INTEGER NOT NULL,
        query_id TEXT NOT NULL,
        x_request_id TEXT NOT NULL,
        response INTEGER NOT NULL,
        instance TEXT NOT NULL,
        member_class TEXT NOT NULL,
        member_code TEXT NOT NULL,
        subsystem_code TEXT,
        client TEXT NOT NULL,
        service_provider TEXT NOT NULL,
        service_code TEXT NOT NULL,
        service_version TEXT,
        message BLOB NOT NULL,
        signature BLOB NOT NULL,
        signature_hash TEXT NOT NULL,
        hash_chain_result BLOB,
        hash_chain BLOB,
        rest INTEGER NOT NULL,
        timestamp_token BLOB,
        stamped_at INTEGER,
        timestamp_record INTEGER,
        timestamp_hash_chain BLOB,
        archived INTEGER NOT NULL DEFAULT 0,
        body_logged INTEGER NOT NULL DEFAULT 1
    )""",
    """CREATE TABLE IF NOT EXISTS message_attachment (
        record_id INTEGER NOT NULL REFERENCES message_record(id),
        position INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (record_id, position)
    )""",
    # One row per batch time-stamp (§2, §5); single tokens stay on their record.
    """CREATE TABLE IF NOT EXISTS timestamp_record (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        token BLOB NOT NULL,
        hash_chain_result BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS message_record_query ON message_record(query_id)",
    "CREATE INDEX IF NOT EXISTS message_record_stamped ON message_record(stamped_at)",
)

# Columns added after the first release: a log created earlier gets them on
# open. (The old ``timestamp_record`` column was never written and stays unused.)
_ADDED_COLUMNS = {
    "timestamp_record_id": "INTEGER REFERENCES timestamp_record(id)",
    "timestamp_hash_chain": "BLOB",
    # 0: the body was stripped before logging (§1), the signature cannot verify.
    "body_logged": "INTEGER NOT NULL DEFAULT 1",
}


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One message as a proxy hands it to the log."""

    query_id: str
    x_request_id: str
    response: bool
    filed_under: ClientId  # the client (consumer side) or the provider (provider side)
    client: ClientId
    service: ServiceId
    message: bytes  # SOAP envelope or REST header part, exact bytes
    signature: bytes  # signatures.xml
    hash_chain_result: bytes | None
    hash_chain: bytes | None
    attachments: list[bytes]  # REST body = attachment 1
    rest: bool
    # False: the body was stripped by strip_body() before logging (§1).
    body_logged: bool = True


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A logged message as read back, with its time-stamp once it has one."""

    id: int
    time: datetime
    query_id: str
    x_request_id: str
    response: bool
    filed_under: ClientId
    client: ClientId
    service: ServiceId
    message: bytes
    signature: bytes
    signature_hash: str
    hash_chain_result: bytes | None
    hash_chain: bytes | None
    attachments: list[bytes]
    rest: bool
    timestamp_token: bytes | None  # single, or the batch token it shares
    stamped_at: datetime | None
    archived: bool
    # Batch time-stamps only (§2, §6): the shared timestamp record, its ts
    # hash-chain result and this record's own ts hash chain.
    timestamp_record_id: int | None = None
    timestamp_hash_chain_result: bytes | None = None
    timestamp_hash_chain: bytes | None = None
    # False: logged without its body (§1); its signature no longer verifies.
    body_logged: bool = True

    @property
    def batch_timestamp(self) -> bool:
        return self.timestamp_record_id is not None


@dataclass(frozen=True, slots=True)
class PendingStamp:
    """A record waiting for its time-stamp: just what stamping needs."""

    id: int
    query_id: str
    signature: bytes
    signature_hash: str  # base64, the leaf of a batch (§5)


@dataclass(frozen=True, slots=True)
class BatchStamp:
    """One record's share of a batch time-stamp: its id and its ts hash chain."""

    record_id: int
    hash_chain: bytes


# A record is stamped once it has a single token or a batch timestamp record.
_UNSTAMPED = "timestamp_token IS NULL AND timestamp_record_id IS NULL AND kind = 'm'"


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(message_record)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE message_record ADD COLUMN {name} {kind}")


def strip_body(record: LogRecord) -> LogRecord:
    """``record`` as logged with body logging off (message-log.md §1).

    SOAP: the Body keeps no children and no text; envelope and header stay.
    REST request: the path and query line becomes empty; method and headers
    stay. REST response: the status part stays as it is. Bodies and
    attachments are dropped in every case. The result is marked
    ``body_logged=False``: its signature can no longer verify.

    :raises LoggingFailed: the SOAP message cannot be read back.
    """
    if record.rest:
        message = _strip_rest(record.message, record.response)
    else:
        message = _strip_soap(record.message)
    return replace(record, message=message, attachments=[], body_logged=False)


def _strip_soap(message: bytes) -> bytes:
    try:
        root = parse_xml(message)
    except ClientRequestError as exc:
        raise LoggingFailed(f"cannot strip the SOAP body: {exc.message}") from exc
    body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    if body is not None:
        for child in list(body):
            body.remove(child)
        body.text = None
    stripped: bytes = etree.tostring(root)
    if message.lstrip().startswith(b"<?xml"):
        stripped = b'<?xml version="1.0" encoding="UTF-8"?>\n' + stripped
    return stripped


def _strip_rest(message: bytes, response: bool) -> bytes:
    if response:
        return message  # status, reason and headers: nothing to strip
    method, _, rest = message.partition(b"\r\n")
    _, _, headers = rest.partition(b"\r\n")
    return method + b"\r\n\r\n" + headers


# A row waiting for group commit: its columns, its bodies, its caller.
_Queued = tuple[dict[str, Any], list[bytes], "asyncio.Future[int]"]


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # the caller was cancelled; its row may still be written
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def signature_hash(signature: bytes) -> str:
    """base64(SHA-512(signature bytes)): the time-stamp leaf (message-log.md §2)."""
    return b64(sha512(signature))


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("message-log times must be timezone-aware")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


class MessageLog:
    """The message-log store; every method but ``open``/``close`` is async."""

    def __init__(self, db: sqlite_utils.Database, executor: ThreadPoolExecutor) -> None:
        self._db = db
        self._executor = executor
        # Group commit (see append): rows waiting for the next transaction,
        # and the task that commits them.
        self._queued: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path) -> MessageLog:
        """Open (creating if needed) the log at ``path``, in WAL mode, fully synced."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messagelog")

        def connect() -> sqlite_utils.Database:
            conn = sqlite3.connect(path, check_same_thread=False)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before append() returns (§1).
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            with conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
                _add_missing_columns(conn)
            return db

        try:
            db = executor.submit(connect).result()
        except sqlite3.Error as exc:
            executor.shutdown()
            raise LoggingFailed(
                f"cannot open message log {str(path)!r}: {exc}"
            ) from exc
        return cls(db, executor)

    def close(self) -> None:
        """Close the database after pending writes; the object is then unusable."""
        self._executor.submit(self._db.close).result()
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except (sqlite3.Error, RuntimeError) as exc:
            # RuntimeError: the writer thread was shut down by close().
            raise LoggingFailed(f"message log failure: {exc}") from exc

    async def append(self, record: LogRecord, now: datetime) -> int:
        """Store ``record``; return its id once the row is durably committed.

        Group commit: records appended while a commit is under way wait
        together and are written by the next commit, in one transaction and
        one fsync, so concurrent exchanges share the cost. Each caller still
        returns only after its own row is on disk.

        :raises LoggingFailed: the caller must then fail the exchange (§1).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queued.append((_row(record, _ms(now)), record.attachments, future))
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            if len(batch) > 1 and await self._commit(batch):
                continue
            # One bad row must not fail its neighbours: commit each alone.
            for item in batch:
                await self._commit([item])

    async def _commit(self, batch: list[_Queued]) -> bool:
        """Commit ``batch`` in one transaction and settle its callers.

        Returns False, settling nobody, when a batch of several failed.
        """
        rows = [(row, attachments) for row, attachments, _ in batch]
        try:
            ids = await self._run(partial(self._insert, rows))
        except Exception as exc:  # noqa: BLE001 - a caller must never hang
            if len(batch) > 1:
                return False
            if not isinstance(exc, LoggingFailed):
                exc = LoggingFailed(f"message log write failed: {exc}")
            _settle(batch[0][2], exc)
            return True
        for (_, _, future), record_id in zip(batch, ids, strict=True):
            _settle(future, record_id)
        return True

    def _insert(self, rows: list[tuple[dict[str, Any], list[bytes]]]) -> list[int]:
        """Insert ``rows`` and their attachments in one transaction."""
        conn = self._db.conn
        ids: list[int] = []
        with conn:
            for row, attachments in rows:
                cursor = conn.execute(
                    f"INSERT INTO message_record ({', '.join(row)}) "
                    f"VALUES ({', '.join('?' for _ in row)})",
                    tuple(row.values()),
                )
                record_id = int(cursor.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO message_attachment (record_id, position, body) "
                    "VALUES (?, ?, ?)",
                    [(record_id, n, body) for n, body in enumerate(attachments, 1)],
                )
                ids.append(record_id)
        return ids

    async def unstamped(self, limit: int = 100) -> list[PendingStamp]:
        """Message records without a time-stamp, oldest first.

        Only what stamping needs is read: never the message or its bodies.
        """
        return await self._pending(None, limit)

    async def pending_stamp(self, record_id: int) -> PendingStamp | None:
        """The record ``record_id`` if it still waits for its time-stamp."""
        found = await self._pending(record_id, 1)
        return found[0] if found else None

    async def _pending(self, record_id: int | None, limit: int) -> list[PendingStamp]:
        where = _UNSTAMPED + ("" if record_id is None else " AND id = ?")
        params: tuple[int, ...] = (limit,) if record_id is None else (record_id, limit)

        def select() -> list[PendingStamp]:
            cursor = self._db.conn.execute(
                "SELECT id, query_id, signature, signature_hash FROM message_record"
                f" WHERE {where} ORDER BY id LIMIT ?",
                params,
            )
            return [
                PendingStamp(row[0], row[1], bytes(row[2]), row[3]) for row in cursor
            ]

        return await self._run(select)

    async def find(
        self, query_id: str | None = None, limit: int = 100
    ) -> list[StoredRecord]:
        """Records, oldest first, optionally only those of one query id."""
        if query_id is None:
            return await self._select(None, (), limit)
        return await self._select("m.query_id = ?", (query_id,), limit)

    async def get(self, record_id: int) -> StoredRecord | None:
        found = await self._select("m.id = ?", (record_id,), 1)
        return found[0] if found else None

    async def set_timestamp(
        self,
        record_id: int,
        signature_with_token: bytes,
        token: bytes,
        stamped_at: datetime,
    ) -> None:
        """Store the stamped signature and its token; recompute signature_hash (§5)."""
        values = (
            signature_with_token,
            signature_hash(signature_with_token),
            token,
            _ms(stamped_at),
            record_id,
        )

        def update() -> int:
            with self._db.conn:
                cursor = self._db.conn.execute(
                    "UPDATE message_record SET signature = ?, signature_hash = ?, "
                    "timestamp_token = ?, stamped_at = ? "
                    f"WHERE id = ? AND {_UNSTAMPED}",
                    values,
                )
            return cursor.rowcount

        if await self._run(update) != 1:
            raise LoggingFailed(
                f"record {record_id} is unknown or already time-stamped"
            )

    async def archivable(self, limit: int = 10_000) -> list[StoredRecord]:
        """Stamped message records not yet archived, in archive order (§7).

        The order is member class, member code, subsystem code, then id; it
        holds whatever the archive grouping is.
        """

        def select_ids() -> list[int]:
            cursor = self._db.conn.execute(
                "SELECT id FROM message_record"
                f" WHERE kind = 'm' AND archived = 0 AND NOT ({_UNSTAMPED})"
                " ORDER BY member_class, member_code, subsystem_code, id LIMIT ?",
                (limit,),
            )
            return [row[0] for row in cursor]

        # Read each record the way find() does, single or batch stamped.
        records = [
            await self.get(record_id) for record_id in await self._run(select_ids)
        ]
        return [record for record in records if record is not None]

    async def mark_archived(self, ids: list[int]) -> int:
        """Flag records as written to an archive; return how many changed.

        Call only once the archive file is durably on disk (§7).
        """
        unique = sorted(set(ids))

        def update() -> int:
            with self._db.conn:
                cursor = self._db.conn.executemany(
                    "UPDATE message_record SET archived = 1 WHERE id = ?",
                    [(record_id,) for record_id in unique],
                )
            return cursor.rowcount

        return await self._run(update) if unique else 0

    async def remove_archived(self, before: datetime) -> int:
        """Delete archived records logged before ``before``; return how many.

        Retention (message-log.md §7, ``keep-records-for``): a record goes
        only once it is archived *and* older than the keep period, never
        before. Its attachments go with it, and so do batch timestamp
        records no remaining record points to. All in one transaction.
        """
        cutoff = _ms(before)
        doomed = "SELECT id FROM message_record WHERE archived = 1 AND time < ?"

        def delete() -> int:
            conn = self._db.conn
            with conn:
                conn.execute(
                    f"DELETE FROM message_attachment WHERE record_id IN ({doomed})",
                    (cutoff,),
                )
                cursor = conn.execute(
                    "DELETE FROM message_record WHERE archived = 1 AND time < ?",
                    (cutoff,),
                )
                removed = cursor.rowcount
                conn.execute(
                    "DELETE FROM timestamp_record WHERE id NOT IN"
                    " (SELECT timestamp_record_id FROM message_record"
                    " WHERE timestamp_record_id IS NOT NULL)"
                )
            return removed

        return await self._run(delete)

    async def set_batch_timestamp(
        self,
        shares: list[BatchStamp],
        token: bytes,
        hash_chain_result: bytes,
        stamped_at: datetime,
    ) -> int:
        """Store one batch token and each record's ts hash chain, all or nothing.

        The signatures are left as they are (§5 batch); return the id of the
        new timestamp record.

        :raises LoggingFailed: a record is unknown or already time-stamped.
        """
        time_ms = _ms(stamped_at)

        def insert() -> int | None:
            conn = self._db.conn
            with conn:
                cursor = conn.execute(
                    "INSERT INTO timestamp_record (time, token, hash_chain_result)"
                    " VALUES (?, ?, ?)",
                    (time_ms, token, hash_chain_result),
                )
                timestamp_id = int(cursor.lastrowid or 0)
                for share in shares:
                    cursor = conn.execute(
                        "UPDATE message_record SET timestamp_record_id = ?, "
                        "timestamp_hash_chain = ?, stamped_at = ? "
                        f"WHERE id = ? AND {_UNSTAMPED}",
                        (timestamp_id, share.hash_chain, time_ms, share.record_id),
                    )
                    if cursor.rowcount != 1:
                        conn.rollback()
                        return None
            return timestamp_id

        timestamp_id = await self._run(insert)
        if timestamp_id is None:
            ids = [share.record_id for share in shares]
            raise LoggingFailed(
                f"a record of batch {ids!r} is unknown or already time-stamped"
            )
        return timestamp_id

    async def _select(
        self, where: str | None, params: tuple[Any, ...], limit: int
    ) -> list[StoredRecord]:
        sql = (
            "SELECT m.*, t.token AS batch_token,"
            " t.hash_chain_result AS batch_result"
            " FROM message_record m"
            " LEFT JOIN timestamp_record t ON t.id = m.timestamp_record_id"
            f"{'' if where is None else ' WHERE ' + where} ORDER BY m.id LIMIT ?"
        )

        def select() -> list[StoredRecord]:
            cursor = self._db.conn.execute(sql, (*params, limit))
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            return [_stored(row, self._attachments(row["id"])) for row in rows]

        return await self._run(select)

    def _attachments(self, record_id: int) -> list[bytes]:
        cursor = self._db.conn.execute(
            "SELECT body FROM message_attachment WHERE record_id = ? ORDER BY position",
            (record_id,),
        )
        return [bytes(body) for (body,) in cursor.fetchall()]


def _row(record: LogRecord, time_ms: int) -> dict[str, Any]:
    filed = record.filed_under
    service = record.service
    return {
        "kind": "m",
        "time": time_ms,
        "query_id": record.query_id,
        "x_request_id": record.x_request_id,
        "response": int(record.response),
        "instance": filed.instance,
        "member_class": filed.member_class,
        "member_code": filed.member_code,
        "subsystem_code": filed.subsystem_code,
        "client": record.client.slash(),
        "service_provider": service.provider.slash(),
        "service_code": service.service_code,
        "service_version": service.service_version,
        "message": record.message,
        "signature": record.signature,
        "signature_hash": signature_hash(record.signature),
        "hash_chain_result": record.hash_chain_result,
        "hash_chain": record.hash_chain,
        "rest": int(record.rest),
        "body_logged": int(record.body_logged),
    }


def _stored(row: dict[str, Any], attachments: list[bytes]) -> StoredRecord:
    service = ServiceId(
        ClientId.parse_slash(row["service_provider"]),
        row["service_code"],
        row["service_version"],
    )
    filed_under = ClientId(
        row["instance"], row["member_class"], row["member_code"], row["subsystem_code"]
    )
    return StoredRecord(
        id=row["id"],
        time=_from_ms(row["time"]),
        query_id=row["query_id"],
        x_request_id=row["x_request_id"],
        response=bool(row["response"]),
        filed_under=filed_under,
        client=ClientId.parse_slash(row["client"]),
        service=service,
        message=bytes(row["message"]),
        signature=bytes(row["signature"]),
        signature_hash=row["signature_hash"],
        hash_chain_result=_blob(row["hash_chain_result"]),
        hash_chain=_blob(row["hash_chain"]),
        attachments=attachments,
        rest=bool(row["rest"]),
        timestamp_token=_blob(row["timestamp_token"] or row.get("batch_token")),
        stamped_at=None if row["stamped_at"] is None else _from_ms(row["stamped_at"]),
        archived=bool(row["archived"]),
        # Rows read without the timestamp_record join carry no batch fields.
        timestamp_record_id=row.get("timestamp_record_id"),
        timestamp_hash_chain_result=_blob(row.get("batch_result")),
        timestamp_hash_chain=_blob(row["timestamp_hash_chain"]),
        body_logged=bool(row.get("body_logged", 1)),
    )


def _blob(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)
