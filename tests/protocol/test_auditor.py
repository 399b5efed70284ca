"""Tests for protocol.auditor: the reference's containers, then targeted failures."""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocol.auditor import java_date, signer_of, verify_container
from protocol.errors import XRoadError, codes_equal
from protocol.globalconf import GlobalConf
from protocol.identifiers import ClientId
from security_server.confclient import load_conf_dir

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
VERIFIER = FIXTURES / "asic" / "verifier"
CONF_DIR = FIXTURES / "globalconf" / "dirs" / "globalconf_good2_v3"

pytestmark = pytest.mark.skipif(
    not CONF_DIR.is_dir(), reason="X-Road fixtures are not beside the repository"
)


def _rows() -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r for r in rows if r["path"].startswith("asic/verifier/")]


@pytest.fixture(scope="module")
def conf() -> GlobalConf:
    return load_conf_dir(CONF_DIR)


def _container(name: str) -> bytes:
    return (VERIFIER / name).read_bytes()


def _code_of(data: bytes, conf: GlobalConf) -> str:
    with pytest.raises(XRoadError) as caught:
        verify_container(data, conf)
    return caught.value.code


def _replace_entry(data: bytes, name: str, new: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info, new if info.filename == name else source.read(info))
    return buffer.getvalue()


def _read_entry(data: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(data)).read(name)


# -- the manifest table ----------------------------------------------------------


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r["path"].split("/")[-1])
def test_reference_verifier_rows(row: dict[str, str], conf: GlobalConf) -> None:
    data = (FIXTURES / row["path"]).read_bytes()
    if row["expected"] == "accept":
        verdict = verify_container(data, conf)
        assert verdict.signer.instance == "DEV"
        assert verdict.ocsp_produced_at <= verdict.timestamp_time
        assert verdict.report().startswith("Verification successful.")
        return
    expected = row["expected_error"].removeprefix("exact code ").split()[0]
    code = _code_of(data, conf)
    assert codes_equal(code, expected), (code, expected)


def test_report_of_the_single_signature_container(conf: GlobalConf) -> None:
    verdict = verify_container(_container("valid-signed-message.asice"), conf)

    assert verdict.signer == ClientId("DEV", "COM", "4321", "TestClient")
    assert verdict.timestamp_time == datetime(2024, 12, 5, 13, 16, 35, tzinfo=UTC)
    assert not verdict.batch_signature and not verdict.batch_timestamp
    report = verdict.report().splitlines()
    assert report[:3] == ["Verification successful.", "Signer", "    Certificate:"]
    assert "    ID: SUBSYSTEM:DEV/COM/4321/TestClient" in report
    assert "    Date: Thu Dec 05 13:16:35 UTC 2024" in report
    assert "        Subject: CN=Test TSA, O=Test" in report
    assert any(line.startswith("    Produced at: Thu Dec 05 13:") for line in report)


def test_rest_response_signer_and_direct_attachment(conf: GlobalConf) -> None:
    verdict = verify_container(_container("valid-non-batch-rest.asice"), conf)

    assert verdict.signer == ClientId("DEV", "COM", "1234", "TestService")
    assert verdict.batch_timestamp
    assert [(a.uri, a.verified) for a in verdict.attachments] == [
        ("/attachment1", True)
    ]


def test_chain_attachment_not_in_the_container_is_unverified(conf: GlobalConf) -> None:
    verdict = verify_container(_container("valid-signed-hashchain.asice"), conf)
    assert verdict.batch_signature
    assert [(a.uri, a.verified) for a in verdict.attachments] == [
        ("/attachment1", False)
    ]
    assert '"/attachment1" is: ' in verdict.report()
    assert verdict.report().endswith("(unverified)")


def test_a_wrong_attachment_beside_a_chain_does_not_fail(conf: GlobalConf) -> None:
    data = _container("valid-signed-hashchain.asice")
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr("attachment1", b"not the signed body")
    verdict = verify_container(buffer.getvalue(), conf)
    assert [a.verified for a in verdict.attachments] == [False]


def test_changed_direct_attachment_is_invalid_signature_value(conf: GlobalConf) -> None:
    data = _replace_entry(
        _container("valid-non-batch-rest.asice"), "attachment1", b'{"x": 1}'
    )
    assert codes_equal(_code_of(data, conf), "invalid_signature_value")


# -- trust failures, made by changing the configuration --------------------------


def test_unknown_tsa_is_tsp_certificate_not_found(conf: GlobalConf) -> None:
    shared = {
        k: dataclasses.replace(v, approved_tsas=()) for k, v in conf.shared.items()
    }
    no_tsa = dataclasses.replace(conf, shared=shared)
    code = _code_of(_container("valid-signed-message.asice"), no_tsa)
    assert codes_equal(code, "mlog.tsp_certificate_not_found")


def test_unknown_ca_is_an_internal_error(conf: GlobalConf) -> None:
    shared = {
        k: dataclasses.replace(v, approved_cas=()) for k, v in conf.shared.items()
    }
    no_ca = dataclasses.replace(conf, shared=shared)
    code = _code_of(_container("valid-signed-message.asice"), no_ca)
    assert codes_equal(code, "internal_error")


def test_stale_ocsp_is_an_invalid_cert_path(conf: GlobalConf) -> None:
    shared = {
        k: dataclasses.replace(v, ocsp_freshness_seconds=60)
        for k, v in conf.shared.items()
    }
    strict = dataclasses.replace(conf, shared=shared)
    code = _code_of(_container("valid-signed-message.asice"), strict)
    assert codes_equal(code, "invalid_cert_path.incorrect_validation_info")


def test_other_signer_is_incorrect_certificate(conf: GlobalConf) -> None:
    data = _container("valid-signed-message.asice")
    message = _read_entry(data, "message.xml")
    assert b">4321<" in message
    changed = _replace_entry(data, "message.xml", message.replace(b">4321<", b">9999<"))
    assert codes_equal(_code_of(changed, conf), "incorrect_certificate")


def test_changed_timestamp_token_is_caught(conf: GlobalConf) -> None:
    data = _container("valid-batch-ts.asice")
    token = bytearray(_read_entry(data, "META-INF/timestamp.tst"))
    token[-5] ^= 0x01  # inside the CMS signature value
    code = _code_of(_replace_entry(data, "META-INF/timestamp.tst", bytes(token)), conf)
    assert codes_equal(code, "mlog.timestamp_signer_verification_failed")


def test_changed_signature_under_a_batch_timestamp_is_caught(conf: GlobalConf) -> None:
    data = _container("valid-batch-ts.asice")
    signature = _read_entry(data, "META-INF/signatures.xml")
    # A trailing space: same XML, other bytes, so the ts chain's DataRef breaks.
    changed = _replace_entry(data, "META-INF/signatures.xml", signature + b" ")
    assert codes_equal(_code_of(changed, conf), "malformed_signature")


# -- helpers ---------------------------------------------------------------------


def test_signer_of_rest_request() -> None:
    message = (
        b"GET\r\n/r1/DEV/COM/1234/TestService/mock1\r\n"
        b"X-Road-Client:DEV/COM/4422/TestClient\r\n"
    )
    assert signer_of(message) == ClientId("DEV", "COM", "4422", "TestClient")


def test_signer_of_garbage_is_malformed_signature() -> None:
    with pytest.raises(XRoadError) as caught:
        signer_of(b"neither SOAP nor REST")
    assert codes_equal(caught.value.code, "malformed_signature")


def test_java_date() -> None:
    moment = datetime(2024, 12, 5, 13, 16, 35, tzinfo=UTC)
    assert java_date(moment) == "Thu Dec 05 13:16:35 UTC 2024"
