"""Tests for protocol.hashchain: DER steps, builders, the general verifier."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from protocol.digests import SHA256_URI, SHA512_URI, unb64
from protocol.errors import HashChainError, codes_equal
from protocol.hashchain import (
    DS_NS,
    HASHCHAIN_NS,
    DataRefReport,
    build_batch_chains,
    build_message_chain,
    encode_digest_list,
    step_digest,
    verify_hash_chain,
)

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
HC = FIXTURES / "hashchain"
DIGEST_VALUE = "{" + DS_NS + "}DigestValue"
HASH_STEP = "{" + HASHCHAIN_NS + "}HashStep"
DATA_REF = "{" + HASHCHAIN_NS + "}DataRef"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def need_fixtures() -> None:
    if not FIXTURES.is_dir():
        pytest.skip("X-Road fixtures are not available")


def resolver(files: dict[str, bytes]):
    return lambda uri: files[uri]


def error_code(excinfo: pytest.ExceptionInfo[HashChainError]) -> str:
    return excinfo.value.full_code


# -- DER steps -------------------------------------------------------------------


def test_single_digest_der_layout() -> None:
    der = encode_digest_list([b"\x01" * 64, b"\x02" * 64])

    # SEQUENCE(222) of two SEQUENCE(109): OCTET STRING(64), UTF8String, SEQUENCE(0)
    assert der[:3] == b"\x30\x81\xde"
    assert der[3:5] == b"\x30\x6d"
    assert der[5:7] == b"\x04\x40"
    assert der[71:73] == b"\x0c" + bytes([len(SHA512_URI)])
    assert der[73 : 73 + len(SHA512_URI)] == SHA512_URI.encode()
    assert der[73 + len(SHA512_URI) : 75 + len(SHA512_URI)] == b"\x30\x00"
    assert len(der) == 225


def test_step_digest_is_hash_of_der() -> None:
    values = [sha512(b"a"), sha512(b"b")]

    assert step_digest(values) == sha512(encode_digest_list(values))
    assert step_digest(values, SHA256_URI) == sha256(
        encode_digest_list(values, SHA256_URI)
    )


# -- message chains ----------------------------------------------------------------


def test_message_chain_round_trip() -> None:
    parts = [("/message.xml", sha512(b"<m/>")), ("/attachment1", sha512(b"att"))]
    files = build_message_chain(parts)

    result = etree.fromstring(files.result)
    assert result.get("URI") == "/sig-hashchain.xml#STEP0"
    top = unb64(result.findtext(DIGEST_VALUE))
    assert top == step_digest([value for _, value in parts])

    chain = etree.fromstring(files.chain)
    refs = chain.findall(HASH_STEP + "/" + DATA_REF)
    assert [ref.get("URI") for ref in refs] == ["/message.xml", "/attachment1"]

    reports = verify_hash_chain(
        files.result, resolver({"/sig-hashchain.xml": files.chain}), dict(parts)
    )
    assert reports == [DataRefReport(uri, value, True) for uri, value in parts]


def test_message_chain_matches_reference_vector() -> None:
    need_fixtures()
    container = zipfile.ZipFile(FIXTURES / "asic/verifier/valid-signed-hashchain.asice")
    chain = etree.fromstring(container.read("sig-hashchain.xml"))
    digests = [
        (ref.get("URI"), unb64(ref.findtext(DIGEST_VALUE)))
        for ref in chain.iter(DATA_REF)
    ]
    expected = etree.fromstring(container.read("sig-hashchainresult.xml"))

    files = build_message_chain(digests)

    assert digests[0] == ("/message.xml", sha512(container.read("message.xml")))
    top = etree.fromstring(files.result).findtext(DIGEST_VALUE)
    assert top == expected.findtext(DIGEST_VALUE)


def test_tampered_data_ref_is_invalid_ref() -> None:
    parts = [("/message.xml", sha512(b"<m/>")), ("/attachment1", sha512(b"att"))]
    files = build_message_chain(parts)
    forged = files.chain.replace(
        files.chain.split(b"<ds:DigestValue>")[1][:4], b"AAAA", 1
    )

    with pytest.raises(HashChainError) as excinfo:
        verify_hash_chain(
            files.result, resolver({"/sig-hashchain.xml": forged}), dict(parts)
        )
    assert codes_equal(error_code(excinfo), "invalid_hash_chain_ref")


def test_wrong_input_is_invalid_chain() -> None:
    parts = [("/message.xml", sha512(b"<m/>")), ("/attachment1", sha512(b"att"))]
    files = build_message_chain(parts)

    with pytest.raises(HashChainError) as excinfo:
        verify_hash_chain(
            files.result,
            resolver({"/sig-hashchain.xml": files.chain}),
            {"/message.xml": sha512(b"<other/>")},
        )
    assert codes_equal(error_code(excinfo), "invalid_hash_chain")


def test_unknown_chain_file_is_invalid_ref() -> None:
    files = build_message_chain([("/message.xml", sha512(b"x"))])

    with pytest.raises(HashChainError) as excinfo:
        verify_hash_chain(files.result, resolver({}), {})
    assert codes_equal(error_code(excinfo), "InvalidHashChainRef")


def test_step_loop_is_rejected() -> None:
    chain = (
        b'<hc:HashChain xmlns:hc="http://cyber.ee/hashchain">'
        b'<hc:HashStep id="STEP0"><hc:StepRef URI="#STEP0"/></hc:HashStep>'
        b"</hc:HashChain>"
    )
    result = (
        b'<hc:HashChainResult xmlns:hc="http://cyber.ee/hashchain" '
        b'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" URI="/c.xml#STEP0">'
        b"<ds:DigestValue>AA==</ds:DigestValue></hc:HashChainResult>"
    )

    with pytest.raises(HashChainError, match="loops"):
        verify_hash_chain(result, resolver({"/c.xml": chain}), {})


# -- batch trees --------------------------------------------------------------------


@pytest.mark.parametrize("count", range(2, 10))
def test_batch_chains_verify_for_every_leaf(count: int) -> None:
    leaves = [sha512(bytes([i])) for i in range(count)]
    batch = build_batch_chains(
        leaves, "/META-INF/signatures.xml", "/ts-hashchain.xml#STEP0"
    )

    assert len(batch.chains) == count
    for leaf, chain in zip(leaves, batch.chains, strict=True):
        reports = verify_hash_chain(
            batch.result,
            resolver({"/ts-hashchain.xml": chain}),
            {"/META-INF/signatures.xml": leaf},
        )
        assert reports == [DataRefReport("/META-INF/signatures.xml", leaf, True)]


def test_batch_of_three_promotes_the_odd_leaf() -> None:
    leaves = [sha512(b"0"), sha512(b"1"), sha512(b"2")]
    batch = build_batch_chains(
        leaves, "/META-INF/signatures.xml", "/ts-hashchain.xml#STEP0"
    )

    chain = etree.fromstring(batch.chains[2])
    steps = chain.findall(HASH_STEP)
    assert len(steps) == 1
    items = list(steps[0])
    assert [etree.QName(item).localname for item in items] == ["HashValue", "DataRef"]
    assert unb64(items[0].findtext(DIGEST_VALUE)) == step_digest(leaves[:2])
    root = unb64(etree.fromstring(batch.result).findtext(DIGEST_VALUE))
    assert root == step_digest([step_digest(leaves[:2]), leaves[2]])


def test_batch_with_multi_part_leaf() -> None:
    multi = [("/message.xml", sha512(b"m")), ("/attachment1", sha512(b"a"))]
    leaves = [sha512(b"single"), multi, sha512(b"other")]
    batch = build_batch_chains(leaves, "/message.xml", "/sig-hashchain.xml#STEP0")

    reports = verify_hash_chain(
        batch.result, resolver({"/sig-hashchain.xml": batch.chains[1]}), dict(multi)
    )
    assert [report.uri for report in reports] == ["/message.xml", "/attachment1"]
    assert all(report.verified for report in reports)


def test_batch_of_one_plain_leaf_is_refused() -> None:
    with pytest.raises(HashChainError):
        build_batch_chains([sha512(b"x")], "/message.xml", "/c.xml#STEP0")


# -- reference fixtures (MANIFEST.tsv topic "hashchain") ------------------------------


def manifest_rows(topic: str) -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [row for row in rows if row["topic"] == topic]


def _hc(name: str) -> bytes:
    return (HC / name).read_bytes()


def _hc_scenario(row: dict[str, str]) -> tuple[bytes, dict, dict, dict]:
    """Return (result, chain files, input digests, raw data) for a manifest row."""
    number = row["path"].split("hc-verifier")[1][0]
    result = _hc(f"hc-verifier{number}-hashchainresult.xml")
    files = {"/hashchain.xml": _hc(f"hc-verifier{number}-hashchain.xml")}
    error = row["expected_error"]
    if number == "2":
        digests = {"/message.xml": b"\x0b", "/attachment1": b"\x0c"}
        digests |= {"/attachment2": b"\x0d", "/attachment3": b"\x0e"}
        return result, files, digests, {}
    if number == "3":
        return result, files, {}, {"/message.xml": _hc("hc-verifier3-message.xml")}
    message = _hc("hc-verifier1-message.xml")
    if "unused_inputs" in error:
        return (
            result,
            files,
            {"/message.xml": sha256(message), "/unused1": b"\x01", "/unused2": b"\x02"},
            {},
        )
    if "invalid_hash_chain" in error:
        wrong = sha256(files["/hashchain.xml"])
        return result, files, {"/message.xml": wrong}, {}
    return result, files, {"/message.xml": sha256(message)}, {}


HC_ROWS = [
    row for row in manifest_rows("hashchain") if "hashchainresult" in row["path"]
]


@pytest.mark.parametrize(
    "row", HC_ROWS, ids=[f"{r['path']}:{r['expected_error'][:30]}" for r in HC_ROWS]
)
def test_manifest_hashchain_rows(row: dict[str, str]) -> None:
    need_fixtures()
    result, files, digests, data = _hc_scenario(row)

    if row["expected"] == "accept":
        reports = verify_hash_chain(
            result, resolver(files), digests, SHA256_URI, data=data
        )
        assert reports and all(report.verified for report in reports)
        return
    expected_code = row["expected_error"].split("code ending in ")[1].split()[0]
    with pytest.raises(HashChainError) as excinfo:
        verify_hash_chain(result, resolver(files), digests, SHA256_URI, data=data)
    folded = error_code(excinfo).lower().replace("_", "")
    assert folded.endswith(expected_code.replace("_", ""))


def test_hc_verifier1_accepts_message_as_data() -> None:
    need_fixtures()
    files = {"/hashchain.xml": _hc("hc-verifier1-hashchain.xml")}
    data = {"/message.xml": _hc("hc-verifier1-message.xml")}

    reports = verify_hash_chain(
        _hc("hc-verifier1-hashchainresult.xml"),
        resolver(files),
        {},
        SHA256_URI,
        data=data,
    )
    assert reports[0].digest == sha256(data["/message.xml"])


def test_hc_verifier2_with_unresolvable_attachments() -> None:
    need_fixtures()
    files = {"/hashchain.xml": _hc("hc-verifier2-hashchain.xml")}

    reports = verify_hash_chain(
        _hc("hc-verifier2-hashchainresult.xml"),
        resolver(files),
        {"/message.xml": b"\x0b"},
    )
    assert [r.verified for r in reports] == [True, False, False, False]


def test_hc_verifier3_transform_needs_raw_data() -> None:
    need_fixtures()
    files = {"/hashchain.xml": _hc("hc-verifier3-hashchain.xml")}
    message = _hc("hc-verifier3-message.xml")

    with pytest.raises(HashChainError, match="not supported"):
        verify_hash_chain(
            _hc("hc-verifier3-hashchainresult.xml"),
            resolver(files),
            {"/message.xml": sha256(message)},
        )
