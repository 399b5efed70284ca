"""Store: write stamped message-log records into hash-linked archives (§7).

How it works. One run takes stamped, not yet archived records in the order
of message-log.md §7 (member class, member code, subsystem code, id), in
batches. Records are split into groups (one chain per group: everything,
per member, or per subsystem) and each group's records become ``.asice``
containers, packed into archives that rotate once the containers would
exceed ``max_bytes``. For every archive, in this order:

1. the ZIP is written to a temporary file, fsynced, renamed into place, and
   the directory fsynced;
2. the group's new link (``D_last``, file name) is saved in the state file
   ``archive-state.json`` in ``out_dir`` (again write, fsync, rename);
3. only then are its records marked archived in the message log;
4. the optional ``after_archive`` hook is awaited with the file's path.

A crash between 1 and 3 leaves records unmarked; the next run archives them
again in a new archive chained after the last one, so the chain never
forks. Deleting archived records (retention) is not done here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from protocol.archive import DEFAULT_ALGORITHM, archive_file_name, build_archive
from protocol.errors import XRoadError

from .logexport import build_record_container, container_name
from .messagelog import MessageLog, StoredRecord

log = logging.getLogger(__name__)

STATE_FILE = "archive-state.json"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # archive-max-filesize (§7)
DEFAULT_BATCH = 10_000  # archive-transaction-batch (§7)

AfterArchive = Callable[[Path], Awaitable[None]]


class ArchivingFailed(XRoadError):
    """An archive could not be written or its state kept."""

    code = "ArchivingFailed"


class Grouping(Enum):
    """``archive-grouping`` (§7): one digest chain per group."""

    NONE = "none"
    MEMBER = "member"
    SUBSYSTEM = "subsystem"


@dataclass(frozen=True, slots=True)
class ArchiveLink:
    """The last archive of a group: what seeds the next one's linkinginfo."""

    digest: str
    name: str


def group_key(record: StoredRecord, grouping: Grouping) -> str:
    """The group's short id, ``INST/CLASS/CODE[/SUB]``, or "" when ungrouped."""
    filed = record.filed_under
    if grouping is Grouping.NONE:
        return ""
    member = f"{filed.instance}/{filed.member_class}/{filed.member_code}"
    if grouping is Grouping.MEMBER or filed.subsystem_code is None:
        return member
    return f"{member}/{filed.subsystem_code}"


async def archive_records(
    message_log: MessageLog,
    out_dir: Path,
    *,
    group: Grouping | str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    now: datetime,
    after_archive: AfterArchive | None = None,
    batch: int = DEFAULT_BATCH,
    algorithm: str = DEFAULT_ALGORITHM,
) -> list[Path]:
    """Archive every stamped, unarchived record; return the files written.

    :param group: the grouping (``none``, ``member``, ``subsystem``).
    :param now: written as the mtime of the archive entries.
    :raises ArchivingFailed: a file or the state could not be written.
    :raises LoggingFailed: the message log failed.
    """
    grouping = Grouping(group or Grouping.NONE)
    if max_bytes <= 0 or batch <= 0:
        raise ValueError("max_bytes and batch must be positive")
    out_dir = Path(out_dir)
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    state = await asyncio.to_thread(load_state, out_dir)

    written: list[Path] = []
    while records := await message_log.archivable(batch):
        chunks = await asyncio.to_thread(_archive_chunks, records, grouping, max_bytes)
        for key, chunk in chunks:
            path = await _write_one(
                message_log, out_dir, state, key, chunk, now, algorithm
            )
            written.append(path)
            if after_archive is not None:
                await after_archive(path)
    return written


def _archive_chunks(
    records: list[StoredRecord], grouping: Grouping, max_bytes: int
) -> list[tuple[str, list[tuple[StoredRecord, str, bytes]]]]:
    """Split records into (group, containers) runs, one run per archive."""
    chunks: list[tuple[str, list[tuple[StoredRecord, str, bytes]]]] = []
    current: list[tuple[StoredRecord, str, bytes]] = []
    current_key: str | None = None
    size = 0
    for record in records:
        key = group_key(record, grouping)
        data = build_record_container(record)
        rotate = current and size + len(data) > max_bytes
        if current and (key != current_key or rotate):
            chunks.append((current_key or "", current))
            current, size = [], 0
        current.append((record, container_name(record), data))
        current_key = key
        size += len(data)
    if current:
        chunks.append((current_key or "", current))
    return chunks


async def _write_one(
    message_log: MessageLog,
    out_dir: Path,
    state: dict[str, ArchiveLink],
    key: str,
    chunk: list[tuple[StoredRecord, str, bytes]],
    now: datetime,
    algorithm: str,
) -> Path:
    previous = state.get(key)
    containers = [(name, data) for _, name, data in chunk]
    zip_bytes, last_digest = await asyncio.to_thread(
        build_archive,
        containers,
        previous.digest if previous else None,
        previous.name if previous else None,
        algorithm,
        time=now,
    )
    times = [record.time for record, _, _ in chunk]
    name = archive_file_name(key or None, min(times), max(times), last_digest)
    path = out_dir / name

    await asyncio.to_thread(_write_durably, path, zip_bytes, replace=False)
    state[key] = ArchiveLink(last_digest, name)
    await asyncio.to_thread(save_state, out_dir, state)
    ids = [record.id for record, _, _ in chunk]
    await message_log.mark_archived(ids)
    log.info(
        "archive written file=%s group=%s records=%s first_id=%s last_id=%s",
        name,
        key or "-",
        len(ids),
        min(ids),
        max(ids),
    )
    return path


# -- files ---------------------------------------------------------------------


def load_state(out_dir: Path) -> dict[str, ArchiveLink]:
    """Each group's last link; empty when no archive was written yet."""
    path = Path(out_dir) / STATE_FILE
    try:
        raw = json.loads(path.read_text("utf-8"))
        return {
            key: ArchiveLink(str(link["digest"]), str(link["name"]))
            for key, link in raw["groups"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # Guessing here would fork the chain: refuse until someone looks.
        raise ArchivingFailed(
            f"archive state {str(path)!r} is unusable: {exc}"
        ) from exc


def save_state(out_dir: Path, state: dict[str, ArchiveLink]) -> None:
    groups = {
        key: {"digest": link.digest, "name": link.name}
        for key, link in sorted(state.items())
    }
    text = json.dumps({"groups": groups}, indent=2) + "\n"
    _write_durably(Path(out_dir) / STATE_FILE, text.encode("utf-8"), replace=True)


def _write_durably(path: Path, data: bytes, *, replace: bool) -> None:
    """Write via a temporary file, fsync it, move it in, fsync the directory.

    Without ``replace`` an existing file is never touched: the move is a
    hard link, which fails if the name is taken.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            temporary.unlink()
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except FileExistsError as exc:
        temporary.unlink(missing_ok=True)
        if path.read_bytes() == data:
            # Written by a run that stopped before saving its state: the
            # same records built the same archive, so go on from there.
            return
        raise ArchivingFailed(f"archive {str(path)!r} exists already") from exc
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ArchivingFailed(f"cannot write {str(path)!r}: {exc}") from exc
