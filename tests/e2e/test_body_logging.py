"""Body logging off (message-log.md §1), and one round of the scheduled archiver (§7)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

import pytest
from lxml import etree

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    wait_for_timestamps,
)
from demo.story import make_calls
from protocol.auditor import (
    BODY_NOT_LOGGED_REPORT,
    MessageBodyNotLogged,
    Verdict,
    verify_container,
)
from protocol.soap import SOAP_ENV_NS
from security_server.logexport import build_record_container
from security_server.messagelog import StoredRecord
from security_server.server import SecurityServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def records(server: SecurityServer, query_id: str) -> list[StoredRecord]:
    assert server.runtime is not None
    found = await server.runtime.message_log.find(query_id)
    assert [r.response for r in found] == [False, True], found
    return found


def verify(server: SecurityServer, record: StoredRecord) -> Verdict:
    assert server.runtime is not None
    conf = server.runtime.conf_client.current
    assert conf is not None
    return verify_container(build_record_container(record), conf)


def check_stripped_response(server: SecurityServer, record: StoredRecord) -> None:
    """A REST response keeps its header part: only its hash-chained body is gone.

    §8 step 5 takes an /attachmentN digest as it is, so the container still
    verifies; the verdict says the body was not logged and left unverified.
    """
    verdict = verify(server, record)
    assert not verdict.body_logged
    assert [a.verified for a in verdict.attachments] == [False]
    assert BODY_NOT_LOGGED_REPORT in verdict.report()


def soap_body(message: bytes) -> etree._Element:
    body = etree.fromstring(message).find(f"{{{SOAP_ENV_NS}}}Body")
    assert body is not None
    return body


async def test_per_subsystem_switch_strips_the_providers_records(
    ecosystem: Ecosystem,
) -> None:
    provider = ecosystem.register_server
    assert provider.runtime is not None
    serverconf = provider.runtime.serverconf
    await asyncio.to_thread(
        serverconf.set_message_body_logging, REGISTRY_SUBSYSTEM, False
    )
    try:
        answers = await make_calls(ecosystem)
    finally:
        await asyncio.to_thread(
            serverconf.set_message_body_logging, REGISTRY_SUBSYSTEM, True
        )
    assert (answers.soap_status, answers.rest_status) == (200, 200)
    await wait_for_timestamps(ecosystem)

    soap_request, soap_response = await records(provider, answers.soap_query_id)
    rest_request, rest_response = await records(provider, answers.rest_query_id)
    for record in (soap_request, soap_response, rest_request, rest_response):
        assert not record.body_logged
        assert record.attachments == []
    for record in (soap_request, soap_response, rest_request):
        with pytest.raises(MessageBodyNotLogged) as caught:
            verify(provider, record)
        assert caught.value.code == "MessageBodyNotLogged"
    check_stripped_response(provider, rest_response)
    assert len(soap_body(soap_request.message)) == 0
    assert len(soap_body(soap_response.message)) == 0
    assert b"x-road-client" in rest_request.message.lower()
    assert rest_request.message.split(b"\r\n")[:2] == [b"GET", b""]

    # The consumer's switch is untouched: its evidence is whole and verifies.
    for record in await records(ecosystem.agency_server, answers.soap_query_id):
        assert record.body_logged
        assert len(soap_body(record.message)) == 1
        verify(ecosystem.agency_server, record)


async def test_global_switch_strips_every_client(ecosystem: Ecosystem) -> None:
    consumer = ecosystem.agency_server
    runtime = consumer.runtime
    assert runtime is not None
    settings = runtime.settings
    runtime.settings = replace(settings, log_bodies=False)
    try:
        answers = await make_calls(ecosystem)
    finally:
        runtime.settings = settings
    assert (answers.soap_status, answers.rest_status) == (200, 200)
    await wait_for_timestamps(ecosystem)

    rest_request, rest_response = await records(consumer, answers.rest_query_id)
    assert rest_request.message.split(b"\r\n")[:2] == [b"GET", b""]
    assert rest_response.attachments == []
    soap_request, _ = await records(consumer, answers.soap_query_id)
    assert len(soap_body(soap_request.message)) == 0
    for record in (rest_request, rest_response, soap_request):
        assert record.filed_under == BENEFITS_SUBSYSTEM
        assert not record.body_logged
    for record in (rest_request, soap_request):
        with pytest.raises(MessageBodyNotLogged):
            verify(consumer, record)
    check_stripped_response(consumer, rest_response)

    # The provider logged the same exchange with its body.
    provider = ecosystem.register_server
    provider_response = (await records(provider, answers.rest_query_id))[1]
    assert provider_response.body_logged and provider_response.attachments
    verdict = verify(provider, provider_response)
    assert verdict.body_logged
    assert [a.verified for a in verdict.attachments] == [True]


async def test_one_archiver_round_archives_then_removes(
    ecosystem: Ecosystem, tmp_path
) -> None:
    provider = ecosystem.register_server
    assert provider.runtime is not None
    await make_calls(ecosystem)
    await wait_for_timestamps(ecosystem)
    message_log = provider.runtime.message_log
    logged = len(await message_log.find())
    assert logged >= 2

    settings = provider.settings
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    copy = f"import shutil, sys; shutil.copy(sys.argv[1], {str(shipped)!r})"
    provider.settings = replace(
        settings,
        keep_records_days=0,
        archive_dir=str(tmp_path / "archive"),
        archive_transfer_command=(sys.executable, "-c", copy),
    )
    try:
        removed = await provider.archive_once()
    finally:
        provider.settings = settings

    archives = sorted((tmp_path / "archive").glob("mlog-*.zip"))
    assert archives, "no archive written"
    # The deployment's transfer command got every archive.
    assert sorted(p.name for p in shipped.iterdir()) == [a.name for a in archives]
    assert removed == logged
    assert await message_log.find() == []
    # Nothing left to archive or remove: a second round is a no-op.
    assert await provider.archive_once() == 0
