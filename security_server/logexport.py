"""Store: records of a live message log -> ASiC-E containers (message-log.md §6).

Reads a security server's ``messagelog.db`` through :class:`MessageLog` and
hands each stamped record to :func:`protocol.asic.build_asic`. Nothing here
writes to the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from protocol.asic import ASiCContainer, asic_file_name, build_asic
from protocol.auditor import add_body_not_logged_marker
from protocol.errors import XRoadError
from protocol.identifiers import ClientId, ServiceId

from .messagelog import MessageLog, StoredRecord

log = logging.getLogger(__name__)

MESSAGE_LOG_FILE = "messagelog.db"
# TODO(#5): MessageLog.find filters only by query id; time, client and
# service filters run here over at most this many records, oldest first.
DEFAULT_SCAN_LIMIT = 100_000


class RecordNotTimestamped(XRoadError):
    """A record without its timestamp cannot become a container (§6 ``force``)."""

    code = "RecordNotTimestamped"


class NoMessageLog(XRoadError):
    code = "NoMessageLog"


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Which records to pick; every given field must match."""

    query_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    client: ClientId | None = None
    service: ServiceId | None = None

    def matches(self, record: StoredRecord) -> bool:
        if self.query_id is not None and record.query_id != self.query_id:
            return False
        if self.since is not None and record.time < self.since:
            return False
        if self.until is not None and record.time >= self.until:
            return False
        if self.client is not None and not _client_matches(self.client, record):
            return False
        if self.service is not None and not _service_matches(self.service, record):
            return False
        return True


def _client_matches(client: ClientId, record: StoredRecord) -> bool:
    if client.subsystem_code is None:  # a member matches its subsystems too
        return record.client.member == client
    return record.client == client


def _service_matches(service: ServiceId, record: StoredRecord) -> bool:
    if service.provider != record.service.provider:
        return False
    if service.service_code != record.service.service_code:
        return False
    return service.service_version in (None, record.service.service_version)


def open_message_log(data_dir: Path) -> MessageLog:
    """Open the log of a security server data directory; never create one."""
    path = Path(data_dir) / MESSAGE_LOG_FILE
    if not path.is_file():
        raise NoMessageLog(f"no message log at {str(path)!r}")
    return MessageLog.open(path)


async def find_records(
    message_log: MessageLog, query: RecordQuery, *, limit: int = DEFAULT_SCAN_LIMIT
) -> list[StoredRecord]:
    """Records matching ``query``, oldest first."""
    records = await message_log.find(query.query_id, limit=limit)
    return [record for record in records if query.matches(record)]


def build_record_container(record: StoredRecord) -> bytes:
    """The ``.asice`` bytes of one stamped record.

    A single timestamp already sits inside the stored signature (§5); a
    batch one comes as ``META-INF/timestamp.tst`` with the shared
    ``ts-hashchainresult.xml`` and the record's own ``ts-hashchain.xml`` (§6).
    A record logged without its body gets the auditor's body-not-logged
    marker entry (``protocol.auditor.BODY_NOT_LOGGED_ENTRY``).

    :raises RecordNotTimestamped: the record has no timestamp yet.
    """
    if record.timestamp_token is None:
        raise RecordNotTimestamped(
            f"record {record.id} of query {record.query_id!r} is not timestamped yet"
        )
    container = ASiCContainer(
        message=record.message,
        signature=record.signature,
        sig_hash_chain_result=record.hash_chain_result,
        sig_hash_chain=record.hash_chain,
        ts_hash_chain_result=record.timestamp_hash_chain_result,
        ts_hash_chain=record.timestamp_hash_chain,
        timestamp=record.timestamp_token if record.batch_timestamp else None,
        attachments={
            f"attachment{n}": body for n, body in enumerate(record.attachments, 1)
        },
    )
    data = build_asic(container, time=record.time)
    if not record.body_logged:
        # Say why its signature fails before an auditor has to guess (§1).
        data = add_body_not_logged_marker(data, time=record.time)
    return data


def container_name(record: StoredRecord) -> str:
    return asic_file_name(record.query_id, record.response, record.id)


async def export_containers(
    message_log: MessageLog,
    query: RecordQuery,
    *,
    limit: int = DEFAULT_SCAN_LIMIT,
    skip_unstamped: bool = False,
) -> list[tuple[str, bytes]]:
    """``(file name, container bytes)`` for each matching record, oldest first.

    :raises RecordNotTimestamped: a record is unstamped and not skipped.
    """
    exported: list[tuple[str, bytes]] = []
    for record in await find_records(message_log, query, limit=limit):
        if record.timestamp_token is None and skip_unstamped:
            log.info("export skips unstamped record id=%s", record.id)
            continue
        exported.append((container_name(record), build_record_container(record)))
    log.info("exported containers count=%s query_id=%s", len(exported), query.query_id)
    return exported
