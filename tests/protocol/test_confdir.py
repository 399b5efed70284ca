"""Tests for protocol.confdir: the signed configuration directory (§3)."""

from __future__ import annotations

import base64
import csv
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from protocol.confdir import (
    ConfFile,
    ConfFileHashMismatch,
    DirectorySignatureInvalid,
    MalformedDirectory,
    MissingExpirationDate,
    MissingVerificationCert,
    build_signed_directory,
    check_part_digest,
    parse_signed_directory,
)
from protocol.errors import InvalidSignatureOnConf, XRoadError, codes_equal

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
SIGNED = FIXTURES / "globalconf" / "signed"
EXPIRE = datetime(2025, 1, 4, 9, 40, tzinfo=UTC)
BOUNDARIES = ("OuterBnd7Qx2", "InnerBnd4Kp9")


def _manifest_rows(prefix: str) -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            r
            for r in rows
            if r["topic"] == "globalconf" and r["path"].startswith(prefix)
        ]


def _p12_cert(name: str) -> x509.Certificate:
    data = (FIXTURES / "certs" / "common-test" / name).read_bytes()
    _, cert, _ = pkcs12.load_key_and_certificates(data, b"test")
    assert cert is not None
    return cert


def _self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conf signer")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(EXPIRE - timedelta(days=1))
        .not_valid_after(EXPIRE + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def rsa_signer() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, _self_signed(key)


FILES = [
    ConfFile(
        "PRIVATE-PARAMETERS",
        "INST",
        "/V6/20250104093000123456000/private-params.xml",
        b"<p/>",
    ),
    ConfFile(
        "SHARED-PARAMETERS",
        "INST",
        "/V6/20250104093000123456000/shared-params.xml",
        b"<s/>",
    ),
    ConfFile("EXTRA", "INST", "/V6/20250104093000123456000/x.bin", b"x", "extra.xml"),
]


# -- reference fixtures -------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [r for r in _manifest_rows("globalconf/signed/") if r["path"].endswith(".txt")],
    ids=lambda r: (
        f"{r['path'].rsplit('/', 1)[-1]}-{r['expected']}-{r['expected_error'][:30]}"
    ),
)
def test_fixture_rows(row: dict[str, str]) -> None:
    data = (FIXTURES / row["path"]).read_bytes()
    consumer = _p12_cert("consumer.p12")
    # The only reject row that names another cert is the producer.p12 one.
    certs = (
        [_p12_cert("producer.p12")]
        if "producer.p12" in row["expected_error"]
        else [consumer]
    )

    if row["expected"] == "accept":
        directory = parse_signed_directory(data, certs)
        assert directory.expire_at == datetime(2026, 5, 20, 17, 42, 55, tzinfo=UTC)
        assert directory.signer_cert == consumer
        support = FIXTURES / row["path"].removesuffix(".txt") / "EE"
        for part in directory.parts:
            assert part.instance == "EE"
            check_part_digest(part, (support / part.location.lstrip("/")).read_bytes())
        if "detached" in row["path"]:
            # The follow-up download of the additional source relies on the
            # reference's process-wide cert cache (§11); see test_confclient.
            assert [p.content_identifier for p in directory.parts] == [
                "PRIVATE-PARAMETERS"
            ]
        return

    expected = row["expected_error"].split()[0]
    with pytest.raises(XRoadError) as info:
        parse_signed_directory(data, certs)
    assert codes_equal(info.value.code, expected), info.value.code


def test_fixture_simple_parts() -> None:
    if not SIGNED.is_dir():
        pytest.skip("X-Road fixtures are not available")
    data = (SIGNED / "test-conf-simple.txt").read_bytes()

    directory = parse_signed_directory(data, [_p12_cert("consumer.p12")])

    assert directory.version is None
    assert [(p.content_identifier, p.location) for p in directory.parts] == [
        ("PRIVATE-PARAMETERS", "/private-params.xml"),
        ("SHARED-PARAMETERS", "/shared-params.xml"),
        ("FOO", "/foo.xml"),
    ]


def test_fixture_tampered_byte_fails_signature() -> None:
    if not SIGNED.is_dir():
        pytest.skip("X-Road fixtures are not available")
    data = (SIGNED / "test-conf-simple.txt").read_bytes()
    tampered = data.replace(b"2026-05-20T17:42:55Z", b"2036-05-20T17:42:55Z")

    with pytest.raises(DirectorySignatureInvalid) as info:
        parse_signed_directory(tampered, [_p12_cert("consumer.p12")])
    assert isinstance(info.value, InvalidSignatureOnConf)


# -- build and parse ------------------------------------------------------------


def test_build_parse_round_trip(
    rsa_signer: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = rsa_signer

    data = build_signed_directory(
        FILES, expire_at=EXPIRE, version=6, key=key, cert=cert, boundaries=BOUNDARIES
    )
    directory = parse_signed_directory(data, [cert])

    assert directory.expire_at == EXPIRE
    assert directory.version == 6
    assert directory.signer_cert == cert
    assert [
        (p.content_identifier, p.instance, p.location, p.file_name)
        for p in directory.parts
    ] == [(f.content_identifier, f.instance, f.location, f.file_name) for f in FILES]
    for part, conf_file in zip(directory.parts, FILES, strict=True):
        check_part_digest(part, conf_file.data)
        assert part.digest == hashlib.sha512(conf_file.data).digest()


def test_build_layout_and_signed_bytes(
    rsa_signer: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = rsa_signer

    data = build_signed_directory(
        FILES, expire_at=EXPIRE, version=6, key=key, cert=cert, boundaries=BOUNDARIES
    )

    assert data.startswith(
        b"Content-Type: multipart/related; charset=UTF-8; boundary=OuterBnd7Qx2\r\n\r\n"
    )
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"Expire-date: 2025-01-04T09:40:00Z\r\nVersion: 6\r\n" in data
    assert b"instance='INST'" in data
    # §3: signed bytes run from the first inner delimiter through the CRLF after
    # the inner close delimiter; the next CRLF belongs to the outer delimiter.
    start = data.index(b"--InnerBnd4Kp9\r\n")
    end = data.index(b"--InnerBnd4Kp9--\r\n") + len(b"--InnerBnd4Kp9--\r\n")
    assert data[end : end + 16] == b"\r\n--OuterBnd7Qx2"
    signature = base64.b64decode(data.rsplit(b"\r\n\r\n", 1)[1].split(b"\r\n")[0])
    cert.public_key().verify(
        signature, data[start:end], padding.PKCS1v15(), hashes.SHA512()
    )
    cert_hash = base64.b64encode(
        hashlib.sha512(cert.public_bytes(serialization.Encoding.DER)).digest()
    )
    assert b"Verification-certificate-hash: " + cert_hash in data


def test_ec_signer_round_trip() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = _self_signed(key)

    data = build_signed_directory(
        FILES[:1],
        expire_at=EXPIRE,
        version=5,
        key=key,
        cert=cert,
        boundaries=("a1", "b2"),
    )

    assert b"ecdsa-sha512" in data
    assert parse_signed_directory(data, [cert]).version == 5


def test_wrong_cert_refused(
    rsa_signer: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = rsa_signer
    other = _self_signed(ec.generate_private_key(ec.SECP256R1()))
    data = build_signed_directory(
        FILES, expire_at=EXPIRE, version=6, key=key, cert=cert, boundaries=BOUNDARIES
    )

    with pytest.raises(MissingVerificationCert) as info:
        parse_signed_directory(data, [other])
    assert codes_equal(info.value.code, "global_conf_missing_verification_cert")


def test_same_cert_other_key_fails_signature(
    rsa_signer: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    _, cert = rsa_signer
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    data = build_signed_directory(
        FILES,
        expire_at=EXPIRE,
        version=6,
        key=impostor,
        cert=cert,
        boundaries=BOUNDARIES,
    )

    with pytest.raises(DirectorySignatureInvalid):
        parse_signed_directory(data, [cert])


def test_digest_mismatch(
    rsa_signer: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = rsa_signer
    data = build_signed_directory(
        FILES, expire_at=EXPIRE, version=6, key=key, cert=cert, boundaries=BOUNDARIES
    )
    part = parse_signed_directory(data, [cert]).parts[0]

    with pytest.raises(ConfFileHashMismatch):
        check_part_digest(part, b"<p>changed</p>")


def _proxy_form(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bytes:
    """A directory in the configuration-proxy shape of §3 (LF, other quoting)."""
    signed = (
        b"--inner\n"
        b"Expire-date: 2025-01-04T09:40:00.123Z\n\n"
        b"--inner\n"
        b"Content-type: application/octet-stream\n"
        b"Content-transfer-encoding: base64\n"
        b'Content-identifier: SHARED-PARAMETERS; instance="INST"\n'
        b"Content-location: /PROXY/1736000000000/INST/V6/s/shared-params.xml\n"
        b"Hash-algorithm-id: http://www.w3.org/2001/04/xmlenc#sha256\n\n"
        + base64.b64encode(hashlib.sha256(b"<s/>").digest())
        + b"\n--inner--\n"
    )
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA512())
    cert_hash = base64.b64encode(
        hashlib.sha512(cert.public_bytes(serialization.Encoding.DER)).digest()
    )
    return (
        b'Content-Type: multipart/related; type="multipart/mixed"; charset=UTF-8; '
        b"boundary=outer\n\n--outer\n"
        b"Content-Type: multipart/mixed; charset=UTF-8;boundary=inner\n\n"
        + signed
        + b"\n--outer\nContent-Type: application/octet-stream\n"
        b"Content-Transfer-Encoding: base64\n"
        b"Signature-Algorithm-Id: http://www.w3.org/2001/04/xmldsig-more#rsa-sha512\n"
        b"Verification-certificate-hash: " + cert_hash + b"; "
        b"hash-algorithm-id=http://www.w3.org/2001/04/xmlenc#sha512\n\n"
        + base64.b64encode(signature)
        + b"\n--outer--\n"
    )


def test_configuration_proxy_form(
    rsa_signer: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    key, cert = rsa_signer

    directory = parse_signed_directory(_proxy_form(key, cert), [cert])

    assert directory.expire_at == datetime(2025, 1, 4, 9, 40, 0, 123000, tzinfo=UTC)
    assert directory.parts[0].instance == "INST"
    check_part_digest(directory.parts[0], b"<s/>")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"Content-Type: text/plain\n\nhello", MalformedDirectory),
        (
            b"Content-Type: multipart/related; boundary=x\n\n--x\nA: b\n\nbody",
            MissingExpirationDate,
        ),
        (
            b"Content-Type: multipart/related; boundary=x\n\n"
            b"--x\nA: b\n\n1\n--x\n\n2\n--x\n\n3\n--x--",
            MalformedDirectory,
        ),
    ],
    ids=["no-boundary", "no-signature-part", "three-parts"],
)
def test_broken_structure(data: bytes, error: type[XRoadError]) -> None:
    with pytest.raises(error):
        parse_signed_directory(data, [])
