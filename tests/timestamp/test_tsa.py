from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from protocol.timestamp import (
    TimeStampResp,
    build_timestamp_request,
    parse_timestamp_response,
    verify_timestamp_token,
)
from timestamp.tsa import (
    QUERY_TYPE,
    REPLY_TYPE,
    TimestampAuthority,
    TSAStoreError,
    serve_tsa,
    tsa_app,
)

NOW = datetime(2025, 6, 7, 8, 9, 10, tzinfo=UTC)
DATA = b"the decoded SignatureValue"


@pytest.fixture(scope="module")
def tsa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tsa")
    TimestampAuthority.create(directory, "Test TSA", NOW, key_size=2048).close()
    return directory


@pytest.fixture
def tsa(tsa_dir: Path):
    authority = TimestampAuthority.open(tsa_dir)
    yield authority
    authority.close()


def test_create_writes_private_key_and_timestamping_cert(tsa_dir: Path, tsa) -> None:
    key_files = [p for p in tsa_dir.iterdir() if p.name.endswith("key.pem")]
    assert len(key_files) == 1
    assert stat.S_IMODE(key_files[0].stat().st_mode) == 0o600

    eku = tsa.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    years = (tsa.cert.not_valid_after_utc - tsa.cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    assert x509.load_pem_x509_certificate(tsa.cert_pem) == tsa.cert
    assert tsa.cert_path.read_bytes() == tsa.cert_pem


def test_create_refuses_to_overwrite_a_key(tsa_dir: Path) -> None:
    with pytest.raises(FileExistsError):
        TimestampAuthority.create(tsa_dir, "Again", NOW, key_size=2048)


def test_open_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TSAStoreError):
        TimestampAuthority.open(tmp_path / "nowhere")


def test_serials_increase_across_reopen(tsa_dir: Path) -> None:
    def serial_of(authority: TimestampAuthority) -> int:
        request = build_timestamp_request(DATA)
        token = parse_timestamp_response(authority.respond(request, NOW), request)
        return verify_timestamp_token(token, DATA, [authority.cert]).serial

    first = TimestampAuthority.open(tsa_dir)
    a, b = serial_of(first), serial_of(first)
    first.close()
    second = TimestampAuthority.open(tsa_dir)
    c = serial_of(second)
    second.close()

    assert a < b < c


@pytest.mark.asyncio
async def test_http_round_trip(tsa) -> None:
    async with TestClient(TestServer(tsa_app(tsa, clock=lambda: NOW))) as client:
        request = build_timestamp_request(DATA, nonce=99)
        response = await client.post(
            "/", data=request, headers={"Content-Type": QUERY_TYPE}
        )
        body = await response.read()

    assert response.status == 200
    assert response.content_type == REPLY_TYPE
    token = parse_timestamp_response(body, request)
    info = verify_timestamp_token(token, DATA, [tsa.cert])
    assert info.gen_time == NOW


@pytest.mark.asyncio
async def test_http_bad_requests(tsa) -> None:
    async with TestClient(TestServer(tsa_app(tsa, clock=lambda: NOW))) as client:
        wrong_type = await client.post(
            "/",
            data=build_timestamp_request(DATA),
            headers={"Content-Type": "text/plain"},
        )
        wrong_method = await client.get("/")
        too_big = await client.post(
            "/", data=b"\0" * (65 * 1024), headers={"Content-Type": QUERY_TYPE}
        )
        empty = await client.post("/", data=b"", headers={"Content-Type": QUERY_TYPE})
        garbage = await client.post(
            "/", data=b"garbage", headers={"Content-Type": QUERY_TYPE}
        )
        garbage_body = await garbage.read()
        texts = [await r.text() for r in (wrong_type, wrong_method, too_big, empty)]

    assert wrong_type.status == 415
    assert wrong_method.status == 405
    assert too_big.status == 413
    assert empty.status == 400
    assert all("Traceback" not in text and len(text) < 200 for text in texts)
    # A DER-level problem is answered in-protocol: a rejection reply.
    assert garbage.status == 200
    assert TimeStampResp.load(garbage_body)["status"]["status"].native == "rejection"


@pytest.mark.asyncio
async def test_serve_tsa_listens(tsa_dir: Path) -> None:
    runner = await serve_tsa(tsa_dir, "127.0.0.1", 0, clock=lambda: NOW)
    try:
        port = runner.addresses[0][1]
        request = build_timestamp_request(DATA)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{port}/",
                data=request,
                headers={"Content-Type": QUERY_TYPE},
            ) as response:
                body = await response.read()
    finally:
        await runner.cleanup()

    cert = x509.load_pem_x509_certificate((tsa_dir / "tsa-cert.pem").read_bytes())
    token = parse_timestamp_response(body, request)
    assert verify_timestamp_token(token, DATA, [cert]).gen_time == NOW


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
@pytest.mark.parametrize("nonce", [None, 123456789], ids=["no-nonce", "nonce"])
def test_openssl_accepts_reply(tsa, tmp_path: Path, nonce: int | None) -> None:
    request = build_timestamp_request(DATA, nonce=nonce)
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "query.tsq").write_bytes(request)
    (tmp_path / "reply.tsr").write_bytes(tsa.respond(request, NOW))
    cert = str(tsa.cert_path)

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "openssl",
                "ts",
                "-verify",
                "-in",
                str(tmp_path / "reply.tsr"),
                *args,
                "-CAfile",
                cert,
                "-untrusted",
                cert,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    by_data = verify("-data", str(tmp_path / "data"))
    by_query = verify("-queryfile", str(tmp_path / "query.tsq"))
    (tmp_path / "data").write_bytes(DATA + b"tampered")
    tampered = verify("-data", str(tmp_path / "data"))

    assert by_data.returncode == 0, by_data.stderr
    assert "Verification: OK" in by_data.stdout
    assert by_query.returncode == 0, by_query.stderr
    assert tampered.returncode != 0
