"""Tests for protocol.transport: proxy-message encoding, decoding and part digests."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import pytest

from protocol import transport as t
from protocol.errors import (
    InvalidContentType,
    InvalidMessage,
    InvalidSoap,
    MissingRest,
    MissingSignature,
    MissingSoap,
    XRoadError,
    codes_equal,
)
from protocol.mime import MimePart, build_multipart
from protocol.rest import build_request_part, build_response_part
from protocol.soap import build_fault

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
PROXY = FIXTURES / "soap" / "proxymessages"
QUERIES = FIXTURES / "soap" / "queries"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason="X-Road fixtures absent"
)


def _decoder_rows() -> list[dict[str, str]]:
    if not FIXTURES.is_dir():
        return []
    with open(FIXTURES / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            r for r in rows if r["topic"] == "soap" and "proxymessages" in r["path"]
        ]


@needs_fixtures
@pytest.mark.parametrize("row", _decoder_rows(), ids=lambda r: r["path"].split("/")[-1])
def test_decoder_manifest_row(row: dict[str, str]) -> None:
    boundary = re.search(r"boundary=(\S+)", row["needs"])
    assert boundary is not None
    data = (FIXTURES / row["path"]).read_bytes()
    content_type = "multipart/mixed; boundary=" + boundary.group(1)
    if row["expected"] == "accept":
        message = t.decode_proxy_message(data, content_type)
        assert message.signature is not None
        assert t.check_proxy_message(message, rest=False) is None
        return
    with pytest.raises(XRoadError) as caught:
        t.decode_proxy_message(data, content_type)
    code = row["expected_error"].split()[0]
    assert codes_equal(caught.value.code, code), (caught.value.code, code)


def _read_proxy(name: str, boundary: str = "xtop1357783211hcn1yiro") -> t.ProxyMessage:
    return t.decode_proxy_message(
        (PROXY / name).read_bytes(), f"multipart/mixed; boundary={boundary}"
    )


@needs_fixtures
def test_decoded_fixture_contents() -> None:
    normal = _read_proxy("normal.request")
    assert normal.soap is not None and normal.soap.mime_type == "text/xml"
    assert normal.soap_message is not None
    assert (
        normal.soap_message.header.query_id
        == "411d6755661409fed365ad8135f8210be07613da"
    )
    assert normal.signature is not None and normal.signature.startswith(b"<?xml")

    fault = _read_proxy("normal-soapfault.request")
    assert fault.soap is None and fault.fault is not None and b"CODE" in fault.fault

    with_ocsp = _read_proxy("ocsp.request")
    assert len(with_ocsp.ocsp_responses) == 1 and with_ocsp.ocsp_responses[0][0] == 0x30

    attached = _read_proxy("attachment.request", "xtop569125687hcu8vfma")
    assert [a.body for a in attached.attachments] == [b"blaah"]
    names = [name for name, _ in t.part_digests(attached)]
    assert names == ["/message.xml", "/attachment1"]
    assert t.part_digests(attached)[1][1] == hashlib.sha512(b"blaah").digest()
    assert attached.soap is not None
    assert t.part_digests(attached)[0][1] == hashlib.sha512(attached.soap.body).digest()


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "boundary"),
    [
        ("normal.request", "xtop1357783211hcn1yiro"),
        ("normal-soapfault.request", "xtop1357783211hcn1yiro"),
        ("ocsp.request", "xtop1357783211hcn1yiro"),
        ("attachment.request", "xtop569125687hcu8vfma"),
    ],
)
def test_fixture_re_encode_round_trip(name: str, boundary: str) -> None:
    message = _read_proxy(name, boundary)
    data = t.encode_proxy_message(message, "xtopNEW", "xattNEW")
    again = t.decode_proxy_message(data, t.proxy_content_type("xtopNEW"))
    assert t.part_digests(again) == t.part_digests(message)
    assert again.signature == message.signature
    assert again.ocsp_responses == message.ocsp_responses
    assert again.fault == message.fault


@needs_fixtures
def test_whole_text_xml_must_be_a_fault() -> None:
    fault = t.decode_proxy_message((QUERIES / "fault.query").read_bytes(), "text/xml")
    assert fault.fault is not None and fault.soap is None
    assert t.check_proxy_message(fault, rest=False) is None
    with pytest.raises(InvalidMessage):
        t.decode_proxy_message((QUERIES / "simple.query").read_bytes(), "text/xml")
    with pytest.raises(InvalidSoap):
        t.decode_proxy_message(b"", "text/xml; charset=UTF-8")


@needs_fixtures
def test_no_signature_and_no_soap_queries() -> None:
    data = (QUERIES / "no-signature.query").read_bytes()
    message = t.decode_proxy_message(
        data, "multipart/mixed; boundary=jetty42534330h7vzfqv2"
    )
    with pytest.raises(MissingSignature):
        t.check_proxy_message(message, rest=False)
    no_soap = (QUERIES / "no-soap.query").read_bytes()
    with pytest.raises(InvalidSoap):
        t.decode_proxy_message(
            no_soap, "multipart/mixed; boundary=jetty771207119h3h10dty"
        )
    errored = (QUERIES / "attachm-error.query").read_bytes()
    with pytest.raises(InvalidContentType):
        t.decode_proxy_message(
            errored, "multipart/mixed; boundary=jetty771207119h3h10dty"
        )


# -- built messages ---------------------------------------------------------------

SOAP_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:x="http://x-road.eu/xsd/xroad.xsd" xmlns:i="http://x-road.eu/xsd/identifiers">'
    b'<e:Header><x:client i:objectType="MEMBER"><i:xRoadInstance>I</i:xRoadInstance>'
    b"<i:memberClass>C</i:memberClass><i:memberCode>M</i:memberCode></x:client>"
    b'<x:service i:objectType="SERVICE"><i:xRoadInstance>I</i:xRoadInstance>'
    b"<i:memberClass>C</i:memberClass><i:memberCode>P</i:memberCode>"
    b"<i:serviceCode>get</i:serviceCode></x:service><x:id>1</x:id>"
    b"<x:protocolVersion>4.0</x:protocolVersion></e:Header>"
    b"<e:Body><get/></e:Body></e:Envelope>"
)


def _rest_request_message() -> t.ProxyMessage:
    part = build_request_part(
        "POST", "/r1/I/C/P/S/svc", [("X-Road-Client", "I/C/M")], "r"
    )
    return t.ProxyMessage(
        ocsp_responses=[],
        rest_request=part,
        rest_body=b"",
        hash_chain_result=b"<hcr/>",
        hash_chain=b"<hc/>",
        signature=b"<sig/>",
    )


def test_soap_message_layout_and_round_trip() -> None:
    soap_part = MimePart(
        (("Content-Type", "text/xml; charset=UTF-8"), ("Content-ID", "<env>")),
        SOAP_BODY,
    )
    attachments = [
        MimePart((("Content-Type", "application/pdf"),), b"%PDF\r\n--x\r\n"),
        MimePart((("Content-Type", "text/plain"), ("X-A", "1")), b""),
    ]
    message = t.ProxyMessage(
        soap=soap_part,
        attachments=attachments,
        hash_chain_result=b"<hcr/>",
        hash_chain=b"<hc/>",
        signature=b"<sig/>",
    )
    data = t.encode_proxy_message(message, "xtopA", "xattA")
    types = re.findall(rb"content-type: ([^\r;]+)", data)
    assert types == [
        b"text/xml",
        b"multipart/mixed",
        b"application/hash-chain-result",
        b"application/hash-chain",
        b"signature/bdoc-1.0/ts",
    ]
    assert b"Content-ID: <env>\r\n" in data

    decoded = t.decode_proxy_message(data, t.proxy_content_type("xtopA"))
    assert decoded.soap is not None and decoded.soap.body == SOAP_BODY
    assert decoded.soap.header("content-id") == "<env>"
    assert [a.body for a in decoded.attachments] == [a.body for a in attachments]
    assert decoded.attachments[1].header("x-a") == "1"
    assert [n for n, _ in t.part_digests(decoded)] == [
        "/message.xml",
        "/attachment1",
        "/attachment2",
    ]
    assert t.check_proxy_message(decoded, rest=False) is None


def test_rest_request_round_trip_and_digests() -> None:
    message = _rest_request_message()
    data = t.encode_proxy_message(message, "xtopR", "xattR")
    decoded = t.decode_proxy_message(data, t.proxy_content_type("xtopR"))
    assert decoded == message
    digests = t.part_digests(decoded)
    assert digests[0] == (
        "/message.xml",
        hashlib.sha512(message.rest_request or b"").digest(),
    )
    assert digests[1] == ("/attachment1", hashlib.sha512(b"").digest())
    assert t.check_proxy_message(decoded, rest=True) is None
    with pytest.raises(MissingSoap):
        t.check_proxy_message(decoded, rest=False)


def test_rest_response_with_fault_as_last_part() -> None:
    fault = build_fault("Server.ServerProxy.NetworkError", "down", "d")
    message = t.ProxyMessage(
        rest_response=build_response_part(200, "OK", [("x-road-id", "q")]),
        fault=fault,
    )
    data = t.encode_proxy_message(message, "xtopF", "xattF")
    decoded = t.decode_proxy_message(data, t.proxy_content_type("xtopF"))
    assert decoded.fault == fault and decoded.rest_response == message.rest_response
    assert t.check_proxy_message(decoded, rest=True) is None


def test_missing_rest_part() -> None:
    message = t.ProxyMessage(signature=b"<sig/>")
    with pytest.raises(MissingRest):
        t.check_proxy_message(message, rest=True)
    with pytest.raises(MissingSoap):
        t.part_digests(message)


def _frame(*parts: tuple[str, bytes]) -> bytes:
    return build_multipart(
        [MimePart((("content-type", k),), b) for k, b in parts], "xtopZ"
    )


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        ([(t.SIGNATURE, b"s"), (t.REST_REQUEST, b"GET\r\n/r1/\r\n")], InvalidMessage),
        ([(t.REST_REQUEST, b"a"), (t.REST_REQUEST, b"b")], InvalidMessage),
        ([(t.REST_BODY, b"b")], InvalidMessage),
        (
            [(t.REST_REQUEST, b"a"), (t.HASH_CHAIN, b"h"), (t.HASH_CHAIN_RESULT, b"r")],
            InvalidMessage,
        ),
        ([(t.REST_REQUEST, b"a"), (t.OCSP_RESPONSE, b"o")], InvalidMessage),
        ([(t.REST_REQUEST, b"a"), ("foo/bar", b"x")], InvalidContentType),
        ([(t.REST_REQUEST, b"a"), ("text/xml", SOAP_BODY)], InvalidMessage),
        ([(t.OCSP_RESPONSE, b"not der")], XRoadError),
    ],
    ids=[
        "after-signature",
        "repeated",
        "body-first",
        "chain-order",
        "late-ocsp",
        "unknown",
        "second-soap",
        "bad-ocsp",
    ],
)
def test_decode_refuses(parts: list[tuple[str, bytes]], error: type[Exception]) -> None:
    with pytest.raises(error):
        t.decode_proxy_message(_frame(*parts), t.proxy_content_type("xtopZ"))


def test_decode_refuses_other_content_types() -> None:
    with pytest.raises(InvalidContentType):
        t.decode_proxy_message(b"{}", "application/json")


def test_random_boundary() -> None:
    boundary = t.random_boundary(bytes(range(30)))
    assert re.fullmatch(r"xtop[A-Za-z]{30}", boundary)
    assert t.random_boundary(bytes(range(30)), "xatt").startswith("xatt")
    assert t.random_boundary(b"\x01" * 30) != t.random_boundary(b"\x02" * 30)
    with pytest.raises(ValueError):
        t.random_boundary(b"short")
