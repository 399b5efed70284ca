"""End to end: real exchanges exported as containers and verified like an auditor.

Every container of a SOAP and a REST exchange, from both security servers,
must verify against that server's own ``globalconf/``; each tampered element
must be caught with its own code.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    wait_for_timestamps,
)
from demo.story import Answers, make_calls
from protocol.auditor import Verdict, verify_container
from protocol.errors import XRoadError, codes_equal
from protocol.globalconf import GlobalConf
from security_server.confclient import load_conf_dir
from security_server.logexport import RecordQuery, export_containers
from security_server.server import SecurityServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

STATE: dict[str, object] = {}


async def _answers(ecosystem: Ecosystem) -> Answers:
    if "answers" not in STATE:
        answers = await make_calls(ecosystem)
        assert answers.soap_status == answers.rest_status == 200
        await wait_for_timestamps(ecosystem)
        STATE["answers"] = answers
    return STATE["answers"]  # type: ignore[return-value]


async def _export(server: SecurityServer, query_id: str) -> list[tuple[str, bytes]]:
    assert server.runtime is not None
    return await export_containers(
        server.runtime.message_log, RecordQuery(query_id=query_id)
    )


def _conf(server: SecurityServer) -> GlobalConf:
    return load_conf_dir(Path(server.directory) / "globalconf")


def _entry(data: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(data)).read(name)


def _with_entry(data: bytes, name: str, new: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        target.comment = source.comment
        for info in source.infolist():
            target.writestr(info, new if info.filename == name else source.read(info))
    return buffer.getvalue()


def _code(data: bytes, conf: GlobalConf) -> str:
    with pytest.raises(XRoadError) as caught:
        verify_container(data, conf)
    return caught.value.code


def _flip_in_base64_element(
    xml: bytes, tag: str, change: Callable[[bytes], bytes] | None = None
) -> bytes:
    """Change the DER inside ``<...:tag>base64</...:tag>``.

    By default a bit near the end (inside the signature value) is flipped.
    """
    pattern = re.compile(rb"(<[\w-]+:" + tag.encode() + rb"[^>]*>)([^<]+)(<)")
    found = pattern.search(xml)
    assert found is not None, tag
    der = base64.b64decode(b"".join(found.group(2).split()))
    if change is None:
        flipped = bytearray(der)
        flipped[-3] ^= 0x01
        changed = bytes(flipped)
    else:
        changed = change(der)
    assert changed != der
    return xml[: found.start(2)] + base64.b64encode(changed) + xml[found.end(2) :]


def _later_produced_at(der: bytes) -> bytes:
    """Move an OCSP response's producedAt by a second, keeping its signature."""
    response = asn1_ocsp.OCSPResponse.load(der)
    basic = response["response_bytes"]["response"].parsed
    tbs = basic["tbs_response_data"]
    tbs["produced_at"] = tbs["produced_at"].native + timedelta(seconds=1)
    basic["tbs_response_data"] = tbs
    response["response_bytes"]["response"] = asn1_ocsp.BasicOCSPResponse.load(
        basic.dump(force=True)
    )
    return response.dump(force=True)


# -- every exported container verifies ----------------------------------------------


async def test_soap_and_rest_exchanges_verify_on_both_servers(
    ecosystem: Ecosystem,
) -> None:
    answers = await _answers(ecosystem)
    verdicts: list[tuple[str, Verdict]] = []
    for server in (ecosystem.agency_server, ecosystem.register_server):
        conf = _conf(server)
        for query_id in (answers.soap_query_id, answers.rest_query_id):
            exported = await _export(server, query_id)
            assert [n.rsplit("-", 2)[1] for n, _ in exported] == [
                "request",
                "response",
            ]
            for name, data in exported:
                verdicts.append((name, verify_container(data, conf)))

    assert len(verdicts) == 8
    for name, verdict in verdicts:
        expected = BENEFITS_SUBSYSTEM if "-request-" in name else REGISTRY_SUBSYSTEM
        assert verdict.signer == expected, name
        assert verdict.report().startswith("Verification successful.")
        assert verdict.ocsp_produced_at <= verdict.timestamp_time


async def test_rest_response_body_is_a_verified_attachment(
    ecosystem: Ecosystem,
) -> None:
    answers = await _answers(ecosystem)
    exported = await _export(ecosystem.agency_server, answers.rest_query_id)
    response = dict(exported)[[n for n, _ in exported if "-response-" in n][0]]

    assert _entry(response, "attachment1") == answers.rest_body
    verdict = verify_container(response, _conf(ecosystem.agency_server))
    assert [(a.uri, a.verified) for a in verdict.attachments] == [
        ("/attachment1", True)
    ]


# -- tampering is caught, each with its own code ----------------------------------


async def _soap_request_container(ecosystem: Ecosystem) -> tuple[bytes, GlobalConf]:
    answers = await _answers(ecosystem)
    exported = await _export(ecosystem.agency_server, answers.soap_query_id)
    return exported[0][1], _conf(ecosystem.agency_server)


async def test_changed_message_byte_is_invalid_signature_value(
    ecosystem: Ecosystem,
) -> None:
    data, conf = await _soap_request_container(ecosystem)
    message = _entry(data, "message.xml")
    changed = message.replace(b"38001010000", b"38001010001")
    assert changed != message
    code = _code(_with_entry(data, "message.xml", changed), conf)
    assert codes_equal(code, "invalid_signature_value")


async def test_changed_signature_value_breaks_the_timestamp(
    ecosystem: Ecosystem,
) -> None:
    data, conf = await _soap_request_container(ecosystem)
    signature = _entry(data, "META-INF/signatures.xml")
    changed = _flip_in_base64_element(signature, "SignatureValue")
    code = _code(_with_entry(data, "META-INF/signatures.xml", changed), conf)
    assert codes_equal(code, "malformed_signature")


async def test_changed_signed_properties_are_invalid_signature_value(
    ecosystem: Ecosystem,
) -> None:
    data, conf = await _soap_request_container(ecosystem)
    signature = _entry(data, "META-INF/signatures.xml")
    changed = re.sub(
        rb"(<xades:SigningTime>)(\d{4})", rb"\g<1>1999", signature, count=1
    )
    assert changed != signature
    code = _code(_with_entry(data, "META-INF/signatures.xml", changed), conf)
    assert codes_equal(code, "invalid_signature_value")


async def test_changed_ocsp_response_is_an_invalid_cert_path(
    ecosystem: Ecosystem,
) -> None:
    data, conf = await _soap_request_container(ecosystem)
    signature = _entry(data, "META-INF/signatures.xml")
    changed = _flip_in_base64_element(
        signature, "EncapsulatedOCSPValue", _later_produced_at
    )
    code = _code(_with_entry(data, "META-INF/signatures.xml", changed), conf)
    assert codes_equal(code, "invalid_cert_path.incorrect_validation_info")


async def test_changed_timestamp_is_a_signer_verification_failure(
    ecosystem: Ecosystem,
) -> None:
    data, conf = await _soap_request_container(ecosystem)
    signature = _entry(data, "META-INF/signatures.xml")
    changed = _flip_in_base64_element(signature, "EncapsulatedTimeStamp")
    code = _code(_with_entry(data, "META-INF/signatures.xml", changed), conf)
    assert codes_equal(code, "mlog.timestamp_signer_verification_failed")


async def test_changed_hash_chain_step_is_an_invalid_hash_chain_ref(
    ecosystem: Ecosystem,
) -> None:
    answers = await _answers(ecosystem)
    exported = await _export(ecosystem.agency_server, answers.rest_query_id)
    data = [d for n, d in exported if "-response-" in n][0]
    chain = _entry(data, "sig-hashchain.xml")
    found = re.search(rb'URI="/message.xml"[^>]*>\s*<[^>]*DigestValue>([^<]+)<', chain)
    assert found is not None
    value = bytearray(base64.b64decode(found.group(1)))
    value[0] ^= 0x01
    changed = (
        chain[: found.start(1)] + base64.b64encode(bytes(value)) + chain[found.end(1) :]
    )
    code = _code(
        _with_entry(data, "sig-hashchain.xml", changed), _conf(ecosystem.agency_server)
    )
    assert codes_equal(code, "malformed_signature.invalid_hash_chain_ref")


async def test_foreign_configuration_does_not_trust_our_tsa(
    ecosystem: Ecosystem,
) -> None:
    data, _ = await _soap_request_container(ecosystem)
    fixtures = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
    foreign = fixtures / "xroad" / "globalconf" / "dirs" / "globalconf_good2_v3"
    if not foreign.is_dir():
        pytest.skip("X-Road fixtures are not beside the repository")
    code = _code(data, load_conf_dir(foreign))
    assert codes_equal(code, "mlog.tsp_certificate_not_found")
