"""End to end: with batch signatures on, concurrent messages share one signature.

Both security servers sign concurrent messages of one member together
(transport.md §7.2): the provider must verify the multi-level chains, each
record must be logged with its own chain, and every exported container must
verify for the auditor, while a tampered message fails for itself only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest

from demo.ecosystem import BENEFITS_SUBSYSTEM, Ecosystem, wait_for_timestamps
from demo.story import rest_example, soap_example
from protocol.auditor import SignatureHashChainInvalid, verify_container
from protocol.errors import XRoadError
from protocol.globalconf import GlobalConf
from protocol.timestamp import signature_value
from security_server.confclient import load_conf_dir
from security_server.logexport import build_record_container
from security_server.messagelog import StoredRecord
from security_server.server import SecurityServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CALLS = 4  # of each kind: SOAP (plain leaves) and REST (responses with a body)
WINDOW_MS = 200.0  # wide enough that the concurrent calls surely meet


async def soap_call(session: aiohttp.ClientSession, url: str, query_id: str) -> int:
    async with session.post(
        url + "/",
        data=soap_example(query_id),
        headers={"Content-Type": "text/xml; charset=UTF-8"},
    ) as response:
        body = await response.read()
    assert b"Fault>" not in body, body[:300]
    return response.status


async def rest_call(session: aiohttp.ClientSession, url: str, query_id: str) -> int:
    async with session.get(
        url + rest_example(),
        headers={"X-Road-Client": BENEFITS_SUBSYSTEM.slash(), "X-Road-Id": query_id},
    ) as response:
        await response.read()
    return response.status


def conf_of(server: SecurityServer) -> GlobalConf:
    return load_conf_dir(Path(server.directory) / "globalconf")


def with_message(container: bytes, message: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(container))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        target.comment = source.comment
        for info in source.infolist():
            data = message if info.filename == "message.xml" else source.read(info)
            target.writestr(info, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def state() -> dict[str, object]:
    return {}


async def batched_records(
    ecosystem: Ecosystem, state: dict[str, object]
) -> dict[str, list[StoredRecord]]:
    """Make the concurrent calls once; return each server's logged records."""
    if "records" in state:
        return state["records"]  # type: ignore[return-value]

    servers = {"agency": ecosystem.agency_server, "register": ecosystem.register_server}
    for server in servers.values():
        runtime = server.runtime
        runtime.settings = dataclasses.replace(
            runtime.settings,
            batch_signatures=True,
            batch_signature_window_ms=WINDOW_MS,
        )
    prefix = f"batchsig-{uuid.uuid4()}"
    url = ecosystem.client_proxy_url
    try:
        async with aiohttp.ClientSession() as session:
            statuses = await asyncio.gather(
                *[soap_call(session, url, f"{prefix}-soap-{i}") for i in range(CALLS)],
                *[rest_call(session, url, f"{prefix}-rest-{i}") for i in range(CALLS)],
            )
    finally:
        for server in servers.values():
            runtime = server.runtime
            runtime.settings = dataclasses.replace(
                runtime.settings, batch_signatures=False
            )
    assert statuses == [200] * (2 * CALLS)  # the provider verified every request

    await wait_for_timestamps(ecosystem)
    records = {}
    for name, server in servers.items():
        found = await server.runtime.message_log.find(limit=1000)
        records[name] = [r for r in found if r.query_id.startswith(prefix)]
        assert len(records[name]) == 4 * CALLS  # requests and responses
    state["records"] = records
    return records


def by_signature(records: list[StoredRecord]) -> dict[bytes, list[StoredRecord]]:
    groups: dict[bytes, list[StoredRecord]] = defaultdict(list)
    for record in records:
        groups[signature_value(record.signature)].append(record)
    return groups


async def test_concurrent_messages_share_a_signature_with_own_chains(
    ecosystem: Ecosystem, state: dict[str, object]
) -> None:
    records = await batched_records(ecosystem, state)

    for name, logged in records.items():
        batches = [g for g in by_signature(logged).values() if len(g) >= 2]
        assert batches, name
        for batch in batches:
            assert len({r.hash_chain_result for r in batch}) == 1
            assert len({r.hash_chain for r in batch}) == len(batch)
            assert all(b"StepRef" in (r.hash_chain or b"") for r in batch)


async def test_a_batch_mixes_plain_and_multi_part_leaves(
    ecosystem: Ecosystem, state: dict[str, object]
) -> None:
    records = await batched_records(ecosystem, state)

    # The provider answers SOAP (one part) and REST (a body) in the same window.
    responses = [r for r in records["register"] if r.response]
    mixed = [
        batch
        for batch in by_signature(responses).values()
        if {r.rest for r in batch} == {True, False}
    ]
    assert mixed


async def test_exported_containers_of_a_batch_verify(
    ecosystem: Ecosystem, state: dict[str, object]
) -> None:
    records = await batched_records(ecosystem, state)

    for name, server in (
        ("agency", ecosystem.agency_server),
        ("register", ecosystem.register_server),
    ):
        conf = conf_of(server)
        for record in records[name]:
            verdict = verify_container(build_record_container(record), conf)
            assert verdict.report().startswith("Verification successful."), record.id
        shared = [g for g in by_signature(records[name]).values() if len(g) >= 2]
        assert all(
            verify_container(build_record_container(r), conf).batch_signature
            for r in shared[0]
        )


async def test_tampering_one_member_of_a_batch_fails_only_that_member(
    ecosystem: Ecosystem, state: dict[str, object]
) -> None:
    records = await batched_records(ecosystem, state)
    conf = conf_of(ecosystem.agency_server)
    requests = [r for r in records["agency"] if not r.response and not r.rest]
    batch = max(by_signature(requests).values(), key=len)
    assert len(batch) >= 2
    victim, others = batch[0], batch[1:]

    forged = victim.message.replace(b"38001010000", b"38001010001")
    assert forged != victim.message
    with pytest.raises(XRoadError) as caught:
        verify_container(with_message(build_record_container(victim), forged), conf)

    assert caught.value.code == SignatureHashChainInvalid.code
    for record in others:
        assert verify_container(build_record_container(record), conf).signer
