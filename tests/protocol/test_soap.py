"""Tests for protocol.soap: the SOAP rows of the reference MANIFEST and round trips."""

from __future__ import annotations

import codecs
import csv
import re
from pathlib import Path

import pytest
from lxml import etree

from protocol import soap
from protocol.digests import SHA512_URI, b64, sha512
from protocol.errors import (
    InconsistentHeaders,
    InconsistentResponse,
    InvalidContentType,
    InvalidSoap,
    InvalidSoapAction,
    InvalidXml,
    MissingHeaderField,
    MissingSoap,
    XRoadError,
    codes_equal,
)
from protocol.identifiers import ClientId, ServiceId
from protocol.transport import check_proxy_message, decode_proxy_message

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
QUERIES = FIXTURES / "soap" / "queries"
TEXT_XML = "text/xml; charset=UTF-8"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="X-Road fixtures absent")


def _rows() -> list[dict[str, str]]:
    if not FIXTURES.is_dir():
        return []
    with open(FIXTURES / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row for row in rows if row["topic"] == "soap"]


def _row_id(row: dict[str, str]) -> str:
    return (
        f"{row['path'].split('/')[-1]}-{row['expected']}-{row['expected_error'][:24]}"
    )


def _code(expected_error: str) -> str:
    """The bare code of a manifest row: first token, origin prefixes removed."""
    match = re.match(r"[\w.]+", expected_error)
    assert match is not None
    return match.group(0).split(".")[-1]


_CONTENT_TYPE = re.compile(
    r"(?:content type|parse as) ([\w.+-]+/[\w.+-]+(?:;\s*[\w-]+=(?:\"[^\"]*\"|[^;\s,()]+))*)"
)


def _content_type(row: dict[str, str], data: bytes) -> str:
    match = _CONTENT_TYPE.search(row["needs"])
    if match:
        return match.group(1)
    if data.startswith(b"--"):
        boundary = data.splitlines()[0][2:].decode()
        return f"multipart/related; boundary={boundary}"
    return TEXT_XML


def _read(name: str) -> bytes:
    return (QUERIES / name).read_bytes()


# Rows whose outcome depends on a running proxy (routing, ACL, signing, the
# exchange itself). The message alone is well-formed: it must parse, and the
# end-to-end suite checks the rest.
E2E_ONLY_REJECTS = {
    "soap/queries/missing-org.query",
    "soap/queries/notAllowed.query",
    "soap/queries/fault.query",  # a fault sent as a request: rejected by the adapter
}


def _parse_row(row: dict[str, str]) -> object:
    data = (FIXTURES / row["path"]).read_bytes()
    content_type = _content_type(row, data)
    if (
        "proxy-message decoder" in row["needs"]
        or "ProxyMessageDecoder" in row["source_test"]
    ):
        if "proxymessages" in row["path"] or content_type.startswith("text/xml"):
            return decode_proxy_message(data, content_type)
    if row["path"].endswith(("no-signature.query", "no-soap.query")):
        mixed = content_type.replace("multipart/related", "multipart/mixed")
        message = decode_proxy_message(data, mixed)
        check_proxy_message(message, rest=False)
        return message
    return soap.parse_soap_package(data, content_type)[0]


# -- the manifest -------------------------------------------------------------


@pytest.mark.parametrize("row", _rows(), ids=_row_id)
def test_manifest_row(row: dict[str, str]) -> None:
    path, expected, error = row["path"], row["expected"], row["expected_error"]
    if path.endswith("empty.query"):
        _check_empty_query()
        return
    if path.endswith("simple.query") and "getstate.answer" in error:
        _check_pair("simple.query", "getstate.answer", InconsistentHeaders)
        return
    if path.endswith("xml.query") and expected == "reject":
        _check_xml_query_against_wrong_answer()
        return

    if expected == "accept" or path in E2E_ONLY_REJECTS:
        result = _parse_row(row)
        assert result is not None
        return
    with pytest.raises(XRoadError) as caught:
        _parse_row(row)
    code = _code(error)
    if path.endswith("faulty-multipart.query"):
        code = "MimeParsingFailed"  # the adapter reports it as ServiceFailed.InvalidMessage
    assert codes_equal(caught.value.code, code), (caught.value.code, code)


def _check_empty_query() -> None:
    for raw in (b"", codecs.BOM_UTF8):
        with pytest.raises(InvalidSoap):
            soap.parse_soap(raw, TEXT_XML)
        with pytest.raises(InvalidSoap):
            decode_proxy_message(raw, TEXT_XML)
        with pytest.raises(MissingSoap):
            soap.parse_soap_package(raw, "multipart/related; boundary=b1")


def _check_pair(request_name: str, response_name: str, error: type[Exception]) -> None:
    request = soap.parse_soap(_read(request_name), TEXT_XML)
    response = soap.parse_soap(_read(response_name), TEXT_XML)
    assert isinstance(request, soap.SoapMessage)
    assert isinstance(response, soap.SoapMessage)
    with pytest.raises(error):
        soap.check_consistency(request.header, response.header)


def _check_xml_query_against_wrong_answer() -> None:
    request_raw = _read("xml.query")
    request = soap.parse_soap(request_raw, TEXT_XML)
    hashed = soap.request_hash(request_raw)
    answer = soap.insert_request_hash(_read("getstate.query"), hashed)
    response = soap.parse_soap(answer, TEXT_XML)
    assert isinstance(request, soap.SoapMessage)
    assert isinstance(response, soap.SoapMessage)
    with pytest.raises(soap.InconsistentResponseHeaders) as caught:
        soap.check_response(request.header, response, hashed)
    assert codes_equal(caught.value.code, "inconsistent_response")


def test_every_soap_file_is_in_the_manifest() -> None:
    listed = {row["path"] for row in _rows()}
    on_disk = {
        f"soap/{p.parent.name}/{p.name}" for p in (FIXTURES / "soap").glob("*/*")
    }
    assert on_disk <= listed


# -- parsed values --------------------------------------------------------------


def test_simple_query_header_values() -> None:
    message = soap.parse_soap(_read("simple.query"), TEXT_XML)
    assert isinstance(message, soap.SoapMessage)
    header = message.header
    assert header.client == ClientId("EE", "BUSINESS", "consumer")
    assert header.service == ServiceId(
        ClientId("EE", "BUSINESS", "producer"), "testQuery"
    )
    assert (header.query_id, header.user_id, header.issue) == (
        "1234567890",
        "EE37702211234",
        None,
    )
    assert header.protocol_version == "4.0"
    assert message.body_tag == "{http://cosumer.ee.xroad.net}testQuery"
    assert not message.is_rpc and message.charset == "UTF-8"


def test_rpc_and_represented_party() -> None:
    rpc = soap.parse_soap(_read("simple-rpc.query"), TEXT_XML)
    assert isinstance(rpc, soap.SoapMessage) and rpc.is_rpc
    party = soap.parse_soap(_read("simple-representedparty.query"), TEXT_XML)
    assert isinstance(party, soap.SoapMessage)
    assert party.header.represented_party == ("COM", "MEMBER3")
    assert party.header.issue == "issue-1"


def test_fault_values() -> None:
    fault = soap.parse_soap(_read("fault.query"), TEXT_XML)
    assert isinstance(fault, soap.SoapFault)
    assert (fault.code, fault.string, fault.actor, fault.detail) == (
        "CODE",
        "STRING",
        "ACTOR",
        "DETAIL",
    )
    other = soap.parse_fault(_read("faulty-fault.answer"))
    assert other.code == "soap:Server" and other.actor is None


def test_mtom_fault_keeps_its_detail() -> None:
    data = _read("soapfault-mtom.answer")
    content_type = (
        'multipart/related; type="application/xop+xml"; boundary=jetty771207119h3h10dty'
    )
    fault, part, attachments = soap.parse_soap_package(data, content_type)
    assert isinstance(fault, soap.SoapFault)
    assert "Unable to create payload, try increasing the size" in (fault.detail or "")
    assert part is not None and attachments == []


def test_multipart_package_parts() -> None:
    content_type = "multipart/related; charset=UTF-8; boundary=jetty771207119h3h10dty"
    message, part, attachments = soap.parse_soap_package(
        _read("attachm.query"), content_type
    )
    assert isinstance(message, soap.SoapMessage)
    assert part is not None and part.body == message.raw
    assert part.body.endswith(b"</SOAP-ENV:Envelope>\n")
    assert [a.mime_type for a in attachments] == ["multipart/mixed"]


def test_bom_is_tolerated_and_hashed() -> None:
    raw = codecs.BOM_UTF8 + _read("getstate-subsystem.query")
    message = soap.parse_soap(raw, TEXT_XML)
    assert isinstance(message, soap.SoapMessage)
    assert message.raw.startswith(codecs.BOM_UTF8)
    assert soap.request_hash(raw) == b64(sha512(raw))
    assert soap.request_hash(raw) != soap.request_hash(raw[3:])


def test_iso_8859_1_charset_is_honoured() -> None:
    body = "<x:getState xmlns:x='http://x-road.eu/xsd/xroad.xsd'>\u00e4</x:getState>"
    raw = _read("getstate.query").replace(
        b'<?xml version="1.0" encoding="utf-8"?>',
        b'<?xml version="1.0" encoding="ISO-8859-1"?>',
    )
    raw = re.sub(rb"<xroad:getState>.*</xroad:getState>", body.encode("latin-1"), raw)
    message = soap.parse_soap(raw, "text/xml; charset=ISO-8859-1")
    assert isinstance(message, soap.SoapMessage) and message.charset == "ISO-8859-1"


@pytest.mark.parametrize(
    ("raw", "content_type", "error"),
    [
        (b"<a/>", "text/html", InvalidContentType),
        (b"<a/>", "text/xml", InvalidSoap),
        (b"<a", "text/xml", InvalidXml),
        (b'<!DOCTYPE a [<!ENTITY x "y">]><a/>', "text/xml", InvalidXml),
    ],
    ids=["html", "not-envelope", "malformed", "doctype"],
)
def test_parse_errors(raw: bytes, content_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        soap.parse_soap(raw, content_type)


def test_duplicate_header_field() -> None:
    raw = _read("simple.query").replace(
        b"<xroad:id>1234567890</xroad:id>",
        b"<xroad:id>1234567890</xroad:id><xroad:id>2</xroad:id>",
    )
    with pytest.raises(XRoadError) as caught:
        soap.parse_soap(raw, TEXT_XML)
    assert caught.value.code == "DuplicateHeaderField"


def test_bad_object_type_is_invalid_xml() -> None:
    raw = _read("simple.query").replace(
        b'client id:objectType="MEMBER"', b'client id:objectType="SERVICE"'
    )
    with pytest.raises(InvalidXml):
        soap.parse_soap(raw, TEXT_XML)


def test_empty_id_is_missing() -> None:
    raw = _read("simple.query").replace(
        b"<xroad:id>1234567890</xroad:id>", b"<xroad:id/>"
    )
    with pytest.raises(MissingHeaderField):
        soap.parse_soap(raw, TEXT_XML)


# -- SOAPAction -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, "", '""', '"urn:x-road:getState"', '"http://a/b?c#d"', '"rel/path"']
)
def test_soap_action_allowed(value: str | None) -> None:
    assert soap.check_soap_action(value) is None


@pytest.mark.parametrize("value", ["foo", '"a b"', '"1x:y"', '"%zz"', "'x'"])
def test_soap_action_refused(value: str) -> None:
    with pytest.raises(InvalidSoapAction):
        soap.check_soap_action(value)


# -- requestHash ------------------------------------------------------------------


def _hash_after_id(out: bytes) -> etree._Element:
    root = etree.fromstring(out)
    header = root.find(f"{{{soap.SOAP_ENV_NS}}}Header")
    assert header is not None
    hashes = header.findall("{http://x-road.eu/xsd/xroad.xsd}requestHash")
    assert len(hashes) == 1
    previous = hashes[0].getprevious()
    assert previous is not None and etree.QName(previous).localname == "id"
    return hashes[0]


@pytest.mark.parametrize(
    "name", ["getstate.answer", "requesthash.answer", "simple.answer"]
)
def test_insert_request_hash(name: str) -> None:
    hashed = soap.request_hash(b"request bytes")
    out = soap.insert_request_hash(_read(name), hashed)
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    element = _hash_after_id(out)
    assert element.text == hashed and element.get("algorithmId") == SHA512_URI
    assert element.prefix == "xroad"
    assert b"<xroad:requestHash" in out and b">foo<" not in out


def test_insert_request_hash_keeps_comments_and_cdata() -> None:
    hashed = soap.request_hash(b"x")
    commented = soap.insert_request_hash(_read("simple-comment.answer"), hashed)
    assert b"<!-- multiline\n        comment -->" in commented
    cdata = soap.insert_request_hash(_read("cdata.answer"), hashed)
    assert cdata.count(b"<![CDATA[<a><b><c>12345678</c></b></a>]]>") == 2


def test_insert_request_hash_indents_like_the_header() -> None:
    out = soap.insert_request_hash(_read("getstate.answer"), "H")
    assert b"</xroad:id>\n        <xroad:requestHash" in out
    assert b'sha512">H</xroad:requestHash>\n        <xroad:issue/>' in out


def test_insert_request_hash_other_prefix_for_id() -> None:
    raw = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
        b'xmlns:a="http://x-road.eu/xsd/xroad.xsd"><e:Header>'
        b'<b:id xmlns:b="http://x-road.eu/xsd/xroad.xsd">1</b:id></e:Header>'
        b"<e:Body/></e:Envelope>"
    )
    out = soap.insert_request_hash(raw, "H")
    assert b"<b:requestHash" in out


def test_check_response_with_hash() -> None:
    request_raw = _read("getstate.query")
    request = soap.parse_soap(request_raw, TEXT_XML)
    assert isinstance(request, soap.SoapMessage)
    hashed = soap.request_hash(request_raw)

    good = soap.parse_soap(
        soap.insert_request_hash(_read("getstate.answer"), hashed), TEXT_XML
    )
    assert isinstance(good, soap.SoapMessage)
    assert soap.check_response(request.header, good, hashed) is None

    wrong = soap.insert_request_hash(
        _read("getstate.answer"), soap.request_hash(b"other")
    )
    parsed_wrong = soap.parse_soap(wrong, TEXT_XML)
    assert isinstance(parsed_wrong, soap.SoapMessage)
    with pytest.raises(InconsistentResponse):
        soap.check_response(request.header, parsed_wrong, hashed)

    absent = soap.parse_soap(_read("getstate.answer"), TEXT_XML)
    assert isinstance(absent, soap.SoapMessage)
    with pytest.raises(InconsistentResponse):
        soap.check_response(request.header, absent, hashed)


# -- building ----------------------------------------------------------------------


def test_build_fault_exact_shape() -> None:
    out = soap.build_fault("Server.ServerProxy.AccessDenied", "a < b & c", "5d0e")
    assert out == (
        b'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV='
        b'"http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        b"<faultcode>Server.ServerProxy.AccessDenied</faultcode><faultstring>a &lt; b "
        b'&amp; c</faultstring><faultactor></faultactor><detail><faultDetail xmlns="">'
        b"5d0e</faultDetail></detail></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    fault = soap.parse_fault(out)
    assert (fault.code, fault.string, fault.actor, fault.detail) == (
        "Server.ServerProxy.AccessDenied",
        "a < b & c",
        "",
        "5d0e",
    )


def test_build_fault_replaces_control_characters() -> None:
    fault = soap.parse_fault(soap.build_fault("Client.X", "bad\x00\x1b", "d"))
    assert fault.string == "bad??"


def test_parse_fault_refuses_normal_message() -> None:
    with pytest.raises(InvalidSoap):
        soap.parse_fault(_read("simple.query"))


def test_build_soap_request_round_trip() -> None:
    client = ClientId("INST", "GOV", "1234", "SUBSYS")
    service = ServiceId(ClientId("INST", "COM", "5678", "REGISTRY"), "getPerson", "v2")
    raw = soap.build_soap_request(
        client,
        service,
        "q-1",
        b'<r:getPerson xmlns:r="urn:example"/>',
        user_id="XX380",
        issue="CASE",
        represented_party=(None, "P1"),
    )
    message = soap.parse_soap(raw, TEXT_XML)
    assert isinstance(message, soap.SoapMessage)
    header = message.header
    assert (header.client, header.service, header.query_id) == (client, service, "q-1")
    assert (header.user_id, header.issue, header.represented_party) == (
        "XX380",
        "CASE",
        (None, "P1"),
    )
    assert message.body_tag == "{urn:example}getPerson"


def test_insert_request_hash_reads_the_declared_charset() -> None:
    envelope = (
        '<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:x="http://x-road.eu/xsd/xroad.xsd"><e:Header><x:id>1</x:id></e:Header>'
        "<e:Body><answer>caf\u00e9</answer></e:Body></e:Envelope>"
    ).encode("iso-8859-1")

    rewritten = soap.insert_request_hash(
        envelope, "aGFzaA==", "text/xml; charset=ISO-8859-1"
    )

    root = etree.fromstring(rewritten)
    assert root.findtext(".//answer") == "caf\u00e9"
    assert root.findtext(".//{http://x-road.eu/xsd/xroad.xsd}requestHash") == "aGFzaA=="
