"""Tests for protocol.asic: building and reading message-log ASiC-E containers."""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from protocol.asic import (
    ASIC_MANIFEST_NS,
    MANIFEST_NS,
    MIME_TYPE,
    ZIP_COMMENT,
    ASiCContainer,
    AsicError,
    asic_file_name,
    build_asic,
    parse_asic,
)
from protocol.digests import SHA512_URI, b64, digest
from protocol.errors import codes_equal

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
TIME = datetime(2025, 1, 4, 6, 30, 15, tzinfo=UTC)
STAMPED_SIGNATURE = (
    b'<asic:XAdESSignatures xmlns:asic="http://uri.etsi.org/02918/v1.2.1#" '
    b'xmlns:xades="http://uri.etsi.org/01903/v1.3.2#"><xades:SignatureTimeStamp>'
    b"<xades:EncapsulatedTimeStamp>AAAA</xades:EncapsulatedTimeStamp>"
    b"</xades:SignatureTimeStamp></asic:XAdESSignatures>"
)
UNSTAMPED_SIGNATURE = b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>'


def _rows() -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r for r in rows if r["path"].startswith("asic/container/")]


def _zip(entries: dict[str, bytes], *, stored_mimetype: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            stored = stored_mimetype and name == "mimetype"
            archive.writestr(
                name, data, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            )
    return buffer.getvalue()


def _entries(changes: dict[str, bytes | None] | None = None) -> dict[str, bytes]:
    entries: dict[str, bytes | None] = {
        "message.xml": b"<m/>",
        "META-INF/signatures.xml": STAMPED_SIGNATURE,
        "mimetype": MIME_TYPE.encode(),
    }
    entries.update(changes or {})
    return {k: v for k, v in entries.items() if v is not None}


# -- the reference's container rows --------------------------------------------


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r["path"])
def test_reference_container_rows(row: dict[str, str]) -> None:
    data = (FIXTURES / row["path"]).read_bytes()
    if row["expected"] == "accept":
        container = parse_asic(data)
        assert container.message.startswith(b"<")
        return
    expected = row["expected_error"].removeprefix("exact code ").split()[0]
    with pytest.raises(Exception) as caught:
        parse_asic(data)
    assert codes_equal(caught.value.code, expected), caught.value


# -- building --------------------------------------------------------------------


def test_built_container_has_the_reference_layout() -> None:
    container = ASiCContainer(
        message=b"<message/>",
        signature=STAMPED_SIGNATURE,
        sig_hash_chain_result=b"<r/>",
        sig_hash_chain=b"<c/>",
        ts_hash_chain_result=b"<tr/>",
        ts_hash_chain=b"<tc/>",
        timestamp=b"\x30\x00",
        attachments={"attachment1": b"body one", "attachment2": b"two"},
    )
    data = build_asic(container, time=TIME)

    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.comment == ZIP_COMMENT
    assert [i.filename for i in archive.infolist()] == [
        "mimetype",
        "message.xml",
        "META-INF/signatures.xml",
        "sig-hashchainresult.xml",
        "sig-hashchain.xml",
        "ts-hashchainresult.xml",
        "ts-hashchain.xml",
        "META-INF/manifest.xml",
        "META-INF/ASiCManifest.xml",
        "META-INF/timestamp.tst",
        "attachment1",
        "attachment2",
    ]
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.date_time == (2025, 1, 4, 6, 30, 14)  # DOS time: 2 s steps
    assert archive.read("mimetype") == b"application/vnd.etsi.asic-e+zip"


def test_manifests_follow_the_templates() -> None:
    container = ASiCContainer(
        message=b"<m/>",
        signature=STAMPED_SIGNATURE,
        ts_hash_chain_result=b"<result/>",
        ts_hash_chain=b"<chain/>",
        timestamp=b"\x30\x00",
        attachments={"attachment1": b"x"},
    )
    archive = zipfile.ZipFile(io.BytesIO(build_asic(container, time=TIME)))

    manifest = etree.fromstring(archive.read("META-INF/manifest.xml"))
    key = f"{{{MANIFEST_NS}}}"
    entries = {e.get(key + "full-path"): e.get(key + "media-type") for e in manifest}
    assert entries == {
        "/": MIME_TYPE,
        "message.xml": "text/xml",
        "ts-hashchainresult.xml": "text/xml",
        "ts-hashchain.xml": "text/xml",
        "attachment1": "application/octet-stream",
    }
    asic_manifest = etree.fromstring(archive.read("META-INF/ASiCManifest.xml"))
    assert asic_manifest.tag == f"{{{ASIC_MANIFEST_NS}}}ASiCManifest"
    value = asic_manifest.findtext(".//{http://www.w3.org/2000/09/xmldsig#}DigestValue")
    assert value == b64(digest(b"<result/>", SHA512_URI))


def test_build_then_parse_round_trips() -> None:
    container = ASiCContainer(
        message=b"GET\r\n/r1/x\r\n",
        signature=STAMPED_SIGNATURE,
        sig_hash_chain_result=b"<r/>",
        sig_hash_chain=b"<c/>",
        attachments={"attachment1": b"\x00\x01body"},
    )
    parsed = parse_asic(build_asic(container, time=TIME))

    assert parsed.message == container.message
    assert parsed.signature == container.signature
    assert parsed.sig_hash_chain_result == b"<r/>"
    assert parsed.sig_hash_chain == b"<c/>"
    assert dict(parsed.attachments) == {"attachment1": b"\x00\x01body"}
    assert parsed.attachment_digests == {
        "/attachment1": digest(b"\x00\x01body", SHA512_URI)
    }
    assert parsed.manifest is not None and parsed.timestamp is None


def test_half_a_hash_chain_is_refused_when_building() -> None:
    container = ASiCContainer(b"<m/>", STAMPED_SIGNATURE, sig_hash_chain_result=b"<r/>")
    with pytest.raises(Exception) as caught:
        build_asic(container, time=TIME)
    assert codes_equal(caught.value.code, "asic_hash_chain_not_found")


@pytest.mark.parametrize(
    ("query_id", "response", "record_id", "name"),
    [
        ("q-7781", False, 3 * 1024 + 9 * 32 + 9, "q-7781-request-399.asice"),
        ("a/b c~", True, 31, "a%2Fb+c%7E-response-v.asice"),
        ("x" * 300, False, 0, "x" * 226 + "-request-0.asice"),
    ],
)
def test_container_names(
    query_id: str, response: bool, record_id: int, name: str
) -> None:
    assert asic_file_name(query_id, response, record_id) == name


# -- reading: the structural checks in order (§8 step 1) ----------------------------


@pytest.mark.parametrize(
    ("entries", "code"),
    [
        (_entries({"mimetype": None}), "asic_mime_type_not_found"),
        (_entries({"mimetype": b""}), "asic_mime_type_not_found"),
        (_entries({"mimetype": b"application/zip"}), "asic_invalid_mime_type"),
        (_entries({"message.xml": None}), "asic_message_not_found"),
        (_entries({"META-INF/signatures.xml": None}), "asic_signature_not_found"),
        (_entries({"sig-hashchain.xml": b"<c/>"}), "asic_hash_chain_result_not_found"),
        (_entries({"sig-hashchainresult.xml": b"<r/>"}), "asic_hash_chain_not_found"),
        (_entries({"ts-hashchainresult.xml": b"<r/>"}), "asic_hash_chain_not_found"),
        (_entries({"META-INF/timestamp.tst": b""}), "asic_timestamp_not_found"),
        (
            _entries({"META-INF/signatures.xml": UNSTAMPED_SIGNATURE}),
            "malformed_signature",
        ),
        (_entries({"META-INF/manifest.xml": b""}), "asic_manifest_not_found"),
    ],
    ids=[
        "no-mimetype",
        "empty-mimetype",
        "wrong-mimetype",
        "no-message",
        "no-signature",
        "chain-without-result",
        "result-without-chain",
        "ts-result-without-chain",
        "empty-timestamp",
        "no-timestamp-at-all",
        "empty-manifest",
    ],
)
def test_structural_checks(entries: dict[str, bytes], code: str) -> None:
    with pytest.raises(Exception) as caught:
        parse_asic(_zip(entries))
    assert codes_equal(caught.value.code, code), caught.value


def test_reader_accepts_stored_mimetype_any_order_and_case() -> None:
    entries = dict(
        reversed(list(_entries({"mimetype": MIME_TYPE.upper().encode()}).items()))
    )
    entries["META-INF/timestamp.tst"] = b"\x30\x00"
    entries["META-INF/signatures.xml"] = UNSTAMPED_SIGNATURE  # the .tst suffices
    entries["unrelated.txt"] = b"ignored"
    parsed = parse_asic(_zip(entries, stored_mimetype=True))
    assert parsed.timestamp == b"\x30\x00"
    assert parsed.attachments == {}


def test_not_a_zip_and_a_zip_bomb_are_refused() -> None:
    with pytest.raises(Exception) as caught:
        parse_asic(b"plain text, not a ZIP")
    assert codes_equal(caught.value.code, "asic_mime_type_not_found")

    big = _zip(_entries({"attachment1": b"\x00" * 2_000_000}))
    with pytest.raises(Exception) as caught:
        parse_asic(big, max_bytes=1_000_000)
    assert "more than" in str(caught.value)


def test_a_container_with_two_copies_of_an_entry_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        archive.writestr("mimetype", MIME_TYPE)
        archive.writestr("message.xml", "<shown/>")
        archive.writestr("message.xml", "<signed/>")
        archive.writestr("META-INF/signatures.xml", "<s/>")

    with pytest.raises(AsicError) as caught:
        parse_asic(buffer.getvalue())

    assert type(caught.value) is AsicError  # not a later structural check
