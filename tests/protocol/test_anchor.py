"""Tests for protocol.anchor: parse, build, fingerprint (global-configuration.md §5)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocol.anchor import (
    AnchorSource,
    ConfigurationAnchor,
    MalformedAnchor,
    anchor_fingerprint,
    build_anchor,
    parse_anchor,
)

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
ANCHORS = FIXTURES / "globalconf" / "anchors"


def _fixture(name: str) -> bytes:
    path = ANCHORS / name
    if not path.is_file():
        pytest.skip("X-Road fixtures are not available")
    return path.read_bytes()


def _cert(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def _sha1_b64(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.b64encode(hashlib.sha1(der).digest()).decode()


def test_fixture_anchor1_content() -> None:
    anchor = parse_anchor(_fixture("configuration-anchor1.xml"))

    assert anchor.instance == "EE"
    assert anchor.generated_at is None
    assert len(anchor.sources) == 3
    assert anchor.sources[0].download_url == "http://www.bar.com/conf"
    hashes_found = {_sha1_b64(c) for c in anchor.verification_certs()}
    assert {
        "t7+jfR1wnsN1EBtBpCt/q8JIasg=",
        "4HCV0OGOaz4mJauIZvrt7A3RdfM=",
    } <= hashes_found


def test_fixture_anchors_compare() -> None:
    first = _fixture("configuration-anchor1.xml")
    second = _fixture("configuration-anchor2.xml")

    assert parse_anchor(first) == parse_anchor(first)
    assert parse_anchor(first) != parse_anchor(second)
    assert anchor_fingerprint(first) != anchor_fingerprint(second)


@pytest.mark.parametrize(
    "name", ["configuration-anchor1.xml", "configuration-anchor2.xml"]
)
def test_fixture_round_trip(name: str) -> None:
    anchor = parse_anchor(_fixture(name))

    assert parse_anchor(build_anchor(anchor)) == anchor


def test_build_parse_round_trip() -> None:
    certs = (_cert("internal-1"), _cert("internal-2"))
    anchor = ConfigurationAnchor(
        "INST",
        datetime(2025, 1, 4, 9, 0, 0, 123000, tzinfo=UTC),
        (
            AnchorSource("http://cs1.inst.example/internalconf", certs),
            AnchorSource("https://cs1.inst.example/internalconf", certs[:1]),
        ),
    )

    data = build_anchor(anchor)

    assert b"2025-01-04T09:00:00.123Z" in data
    assert parse_anchor(data) == anchor


def test_fingerprint_format() -> None:
    expected = hashlib.sha224(b"abc").hexdigest().upper()

    fingerprint = anchor_fingerprint(b"abc")

    assert re.fullmatch(r"([0-9A-F]{2}:){27}[0-9A-F]{2}", fingerprint)
    assert fingerprint.replace(":", "") == expected


@pytest.mark.parametrize(
    "data",
    [
        b"not xml",
        b'<conf xmlns="http://x-road.eu/xsd/xroad.xsd"><instanceIdentifier>I'
        b"</instanceIdentifier></conf>",
        b'<a:configurationAnchor xmlns:a="http://x-road.eu/xsd/xroad.xsd">'
        b"<instanceIdentifier>I</instanceIdentifier></a:configurationAnchor>",
        b'<a:configurationAnchor xmlns:a="http://x-road.eu/xsd/xroad.xsd">'
        b"<instanceIdentifier>I</instanceIdentifier><source><downloadURL>http://x/c"
        b"</downloadURL><verificationCert>YmFyCg==</verificationCert></source>"
        b"</a:configurationAnchor>",
    ],
    ids=["not-xml", "wrong-root", "no-source", "bad-cert"],
)
def test_malformed_anchor_refused(data: bytes) -> None:
    with pytest.raises(MalformedAnchor) as info:
        parse_anchor(data)

    assert info.value.code == "MalformedGlobalConf"


def test_qualified_children_are_not_accepted() -> None:
    # Children are unqualified in the schema; a qualified one is not the element.
    data = (
        b'<a:configurationAnchor xmlns:a="http://x-road.eu/xsd/xroad.xsd">'
        b"<a:instanceIdentifier>I</a:instanceIdentifier></a:configurationAnchor>"
    )

    with pytest.raises(MalformedAnchor):
        parse_anchor(data)
