"""Store: message log -> hash-linked archive files, state, and marking order."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from protocol.archive import LINKING_INFO, archive_file_name, verify_archive
from protocol.identifiers import ClientId, ServiceId
from security_server import archiver
from security_server.archiver import (
    STATE_FILE,
    ArchiveLink,
    ArchivingFailed,
    archive_records,
    load_state,
)
from security_server.logexport import build_record_container
from security_server.messagelog import LogRecord, MessageLog

NOW = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
LOGGED = datetime(2025, 2, 1, 10, 0, 0, tzinfo=UTC)
MEMBER_B = ClientId("DEV", "COM", "2222", "SUB-B")
MEMBER_A = ClientId("DEV", "COM", "1111", "SUB-A")
MEMBER_A2 = ClientId("DEV", "COM", "1111", None)
SERVICE = ServiceId(ClientId("DEV", "COM", "9999", "PROV"), "getRandom", "v1")


def record(
    query_id: str, filed_under: ClientId, *, response: bool = False
) -> LogRecord:
    return LogRecord(
        query_id=query_id,
        x_request_id=f"x-{query_id}",
        response=response,
        filed_under=filed_under,
        client=filed_under,
        service=SERVICE,
        message=f"<env>{query_id}</env>".encode() * 50,
        signature=f"<sig>{query_id}</sig>".encode(),
        hash_chain_result=None,
        hash_chain=None,
        attachments=[b"body of " + query_id.encode()],
        rest=False,
    )


async def add(
    message_log: MessageLog,
    query_id: str,
    filed_under: ClientId,
    *,
    minutes: int = 0,
    stamp: bool = True,
) -> int:
    at = LOGGED + timedelta(minutes=minutes)
    record_id = await message_log.append(record(query_id, filed_under), at)
    if stamp:
        await message_log.set_timestamp(record_id, b"<sig stamped/>", b"token", at)
    return record_id


@pytest.fixture
def message_log(tmp_path: Path):
    store = MessageLog.open(tmp_path / "messagelog.db")
    yield store
    store.close()


def container_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return [n for n in archive.namelist() if n != LINKING_INFO]


def verify_chain(paths: list[Path], previous: str | None = None) -> str | None:
    for path in paths:
        previous = verify_archive(path.read_bytes(), previous).last_digest
    return previous


async def archived_ids(message_log: MessageLog) -> set[int]:
    return {r.id for r in await message_log.find(limit=1000) if r.archived}


@pytest.mark.asyncio
async def test_store_to_archives_chain_verifies_across_runs(
    message_log: MessageLog, tmp_path: Path
) -> None:
    out = tmp_path / "archives"
    ids = [
        await add(message_log, "q-b1", MEMBER_B, minutes=1),
        await add(message_log, "q-a1", MEMBER_A, minutes=2),
        await add(message_log, "q-a2", MEMBER_A, minutes=3),
        await add(message_log, "q-a0", MEMBER_A2, minutes=4),
    ]
    unstamped = await add(message_log, "q-late", MEMBER_A, stamp=False)

    # Room for two containers and a half: four records rotate into two archives.
    one = len(build_record_container((await message_log.archivable(1))[0]))
    first_run = await archive_records(
        message_log, out, max_bytes=2 * one + one // 2, now=NOW
    )

    assert len(first_run) == 2
    # §7 order: member class, member code, subsystem code, then id.
    names = [n for path in first_run for n in container_names(path)]
    assert [n.split("-request-")[0] for n in names] == ["q-a0", "q-a1", "q-a2", "q-b1"]
    last = verify_chain(first_run)
    assert await archived_ids(message_log) == set(ids)
    assert load_state(out)[""] == ArchiveLink(last, first_run[-1].name)

    # A later run chains on from the state file.
    await message_log.set_timestamp(unstamped, b"<sig/>", b"token", LOGGED)
    second_run = await archive_records(message_log, out, now=NOW)

    assert len(second_run) == 1
    with zipfile.ZipFile(second_run[0]) as archive:
        header = archive.read(LINKING_INFO).decode().split("\n")[0]
    assert header == f"{last} {first_run[-1].name} SHA-512"
    assert verify_chain(first_run + second_run) == load_state(out)[""].digest
    assert await archived_ids(message_log) == {*ids, unstamped}
    assert await archive_records(message_log, out, now=NOW) == []


@pytest.mark.asyncio
async def test_archive_file_name_and_entry_time(
    message_log: MessageLog, tmp_path: Path
) -> None:
    await add(message_log, "q-1", MEMBER_A, minutes=0)
    await add(message_log, "q-2", MEMBER_A, minutes=90)

    [path] = await archive_records(message_log, tmp_path, now=NOW)

    digest = verify_archive(path.read_bytes(), None).last_digest
    expected = archive_file_name(None, LOGGED, LOGGED + timedelta(minutes=90), digest)
    assert (
        path.name == expected == f"mlog-20250201100000-20250201113000-{digest[:16]}.zip"
    )
    with zipfile.ZipFile(path) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2025, 2, 3, 4, 5, 6)}


@pytest.mark.asyncio
async def test_grouping_by_member_keeps_one_chain_per_group(
    message_log: MessageLog, tmp_path: Path
) -> None:
    await add(message_log, "q-a1", MEMBER_A)
    await add(message_log, "q-a0", MEMBER_A2)
    await add(message_log, "q-b1", MEMBER_B)

    written = await archive_records(message_log, tmp_path, group="member", now=NOW)

    assert [p.name.split("-")[1] for p in written] == ["DEV_COM_1111", "DEV_COM_2222"]
    state = load_state(tmp_path)
    assert set(state) == {"DEV/COM/1111", "DEV/COM/2222"}
    for path in written:  # each group's chain starts afresh
        assert verify_archive(path.read_bytes(), None).last_digest in {
            link.digest for link in state.values()
        }
    assert len(container_names(written[0])) == 2


@pytest.mark.asyncio
async def test_grouping_by_subsystem(message_log: MessageLog, tmp_path: Path) -> None:
    await add(message_log, "q-a1", MEMBER_A)
    await add(message_log, "q-a0", MEMBER_A2)

    await archive_records(message_log, tmp_path, group="subsystem", now=NOW)

    assert set(load_state(tmp_path)) == {"DEV/COM/1111", "DEV/COM/1111/SUB-A"}


@pytest.mark.asyncio
async def test_records_marked_only_after_file_and_state_are_written(
    message_log: MessageLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add(message_log, "q-1", MEMBER_A)
    seen: list[tuple[bool, bool]] = []
    original = message_log.mark_archived

    async def spy(ids: list[int]) -> int:
        files = [p for p in tmp_path.glob("mlog-*.zip")]
        seen.append((len(files) == 1, (tmp_path / STATE_FILE).is_file()))
        verify_archive(files[0].read_bytes(), None)  # complete on disk
        return await original(ids)

    monkeypatch.setattr(message_log, "mark_archived", spy)
    await archive_records(message_log, tmp_path, now=NOW)

    assert seen == [(True, True)]


@pytest.mark.asyncio
async def test_failed_write_leaves_records_unarchived(
    message_log: MessageLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_id = await add(message_log, "q-1", MEMBER_A)

    def full_disk(path: Path, data: bytes, *, replace: bool) -> None:
        raise ArchivingFailed(f"cannot write {str(path)!r}: disk full")

    monkeypatch.setattr(archiver, "_write_durably", full_disk)
    with pytest.raises(ArchivingFailed) as caught:
        await archive_records(message_log, tmp_path, now=NOW)

    assert caught.value.code == "ArchivingFailed"
    assert await archived_ids(message_log) == set()
    assert not (tmp_path / STATE_FILE).exists()
    assert [r.id for r in await message_log.archivable()] == [record_id]


@pytest.mark.asyncio
async def test_after_archive_hook_gets_each_file(
    message_log: MessageLog, tmp_path: Path
) -> None:
    await add(message_log, "q-1", MEMBER_A)
    await add(message_log, "q-2", MEMBER_B)
    shipped: list[tuple[Path, bool]] = []

    async def ship(path: Path) -> None:
        shipped.append((path, path.is_file()))

    written = await archive_records(
        message_log, tmp_path, group="member", now=NOW, after_archive=ship
    )

    assert shipped == [(path, True) for path in written]
    assert len(written) == 2


@pytest.mark.asyncio
async def test_small_batches_still_chain(
    message_log: MessageLog, tmp_path: Path
) -> None:
    for n in range(5):
        await add(message_log, f"q-{n}", MEMBER_A, minutes=n)

    written = await archive_records(message_log, tmp_path, now=NOW, batch=2)

    assert len(written) == 3
    assert verify_chain(written) == load_state(tmp_path)[""].digest
    assert len(await archived_ids(message_log)) == 5


@pytest.mark.asyncio
async def test_unusable_state_file_is_refused(
    message_log: MessageLog, tmp_path: Path
) -> None:
    await add(message_log, "q-1", MEMBER_A)
    (tmp_path / STATE_FILE).write_text(json.dumps({"groups": {"": {"name": "x"}}}))

    with pytest.raises(ArchivingFailed):
        await archive_records(message_log, tmp_path, now=NOW)
    assert await archived_ids(message_log) == set()


@pytest.mark.asyncio
async def test_existing_archive_file_is_never_overwritten(
    message_log: MessageLog, tmp_path: Path
) -> None:
    await add(message_log, "q-1", MEMBER_A)
    [path] = await archive_records(message_log, tmp_path / "a", now=NOW)

    # Same records, no state in another directory: the same name comes out.
    other = tmp_path / "b"
    other.mkdir()
    (other / path.name).write_bytes(b"keep me")
    await _unmark(message_log)

    with pytest.raises(ArchivingFailed):
        await archive_records(message_log, other, now=NOW)
    assert (other / path.name).read_bytes() == b"keep me"


@pytest.mark.asyncio
async def test_a_run_that_stopped_before_saving_its_state_is_resumed(
    message_log: MessageLog, tmp_path: Path
) -> None:
    await add(message_log, "q-1", MEMBER_A)
    [path] = await archive_records(message_log, tmp_path, now=NOW)
    written = path.read_bytes()
    # As if the run had stopped after writing the archive: no state, no marks.
    (tmp_path / STATE_FILE).unlink()
    await _unmark(message_log)

    [again] = await archive_records(message_log, tmp_path, now=NOW)

    assert again == path and again.read_bytes() == written
    assert await archived_ids(message_log) != set()
    assert (tmp_path / STATE_FILE).exists()


async def _unmark(message_log: MessageLog) -> None:
    # Test-only: undo archiving through the store's own connection.
    def update() -> None:
        with message_log._db.conn:
            message_log._db.conn.execute("UPDATE message_record SET archived = 0")

    await message_log._run(update)


@pytest.mark.asyncio
async def test_batch_stamped_records_are_archived(
    message_log: MessageLog, tmp_path: Path
) -> None:
    if not hasattr(message_log, "set_batch_timestamp"):
        pytest.skip("this message log has no batch time-stamps")
    from security_server.messagelog import BatchStamp

    ids = [await add(message_log, f"q-{n}", MEMBER_A, stamp=False) for n in range(2)]
    await message_log.set_batch_timestamp(
        [BatchStamp(record_id, b"<chain/>") for record_id in ids],
        b"batch token",
        b"<result/>",
        LOGGED,
    )

    [path] = await archive_records(message_log, tmp_path, now=NOW)

    verify_archive(path.read_bytes(), None)
    assert await archived_ids(message_log) == set(ids)
    with zipfile.ZipFile(path) as archive:
        inner = zipfile.ZipFile(io.BytesIO(archive.read(container_names(path)[0])))
    assert inner.read("META-INF/timestamp.tst") == b"batch token"
