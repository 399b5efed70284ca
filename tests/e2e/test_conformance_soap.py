"""Conformance: the SOAP rows of the reference MANIFEST that need running proxies.

Every ``soap`` row whose ``needs`` names the proxy test-suite harness becomes
one or more cases (a row may describe a fixture as a request, as a service
answer and as a server-proxy message). Each case sends a fixture ``.query``
through the consumer's client proxy, or straight to the provider's server
proxy, while ``fixture_service`` answers with a fixture ``.answer``.

The fixtures use instance EE; only their X-Road identifiers are rewritten to
the demo's (byte for byte elsewhere: comments, CDATA and escapes stay), and an
answer's header is made to mirror its request unless the case is about a
mismatch. Expected fault codes are in the manifest's snake case and compared
with :func:`protocol.errors.codes_equal`.
"""

from __future__ import annotations

import base64
import codecs
import csv
import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import aiohttp
import pytest
import pytest_asyncio
from lxml import etree

from demo.ecosystem import (
    BENEFITS_SUBSYSTEM,
    HOST,
    INSTANCE,
    REGISTRY_SUBSYSTEM,
    Ecosystem,
    free_ports,
)
from protocol.digests import SHA512_URI
from protocol.errors import codes_equal, normalize_code
from protocol.identifiers import ClientId, ServiceId
from protocol.mime import MimePart, parse_content_type, parse_multipart
from security_server.serverconf import ServerConf

from .fixture_service import FixtureService

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
QUERIES = FIXTURES / "soap" / "queries"
HARNESS = "proxy test-suite harness"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="X-Road fixtures absent"),
]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XRD = "http://x-road.eu/xsd/xroad.xsd"
ID = "http://x-road.eu/xsd/identifiers"
BOM = codecs.BOM_UTF8

TEXT_XML = "text/xml; charset=UTF-8"
ISO_XML = "text/xml; charset=ISO-8859-1"
BOUNDARY = "jetty771207119h3h10dty"
MULTI = f"multipart/related; charset=UTF-8; boundary={BOUNDARY}"
MULTI_NO_CHARSET = f"multipart/related; boundary={BOUNDARY}"
MIXED = f"multipart/mixed; charset=UTF-8; boundary={BOUNDARY}"
MTOM = (
    'Multipart/Related; start-info="application/soap+xml"; '
    f'type="application/xop+xml"; boundary="{BOUNDARY}"'
)
MTOM_ANSWER = MTOM + ";charset=UTF-8"
NO_SIGNATURE = "multipart/mixed; boundary=jetty42534330h7vzfqv2;charset=ISO-8859-1"

# The service codes the fixtures call; all are offered by the demo registry.
SERVICE_CODES = ("testQuery", "getState", "test", "generateMtom")

EMULATED = (
    "needs an emulated provider server proxy answering the client proxy; ours "
    "authenticates the provider by its registered TLS key, which a test cannot fake"
)


# -- the cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One scenario of a manifest row."""

    query: str  # fixture the client sends
    query_type: str = TEXT_XML
    answer: str | None = None  # fixture the service answers with
    answer_type: str = TEXT_XML
    status: int = 200  # HTTP status of the service answer
    code: str | None = None  # expected fault code; None: a normal answer
    label: str = ""
    query_bom: bool = False
    answer_bom: bool = False
    mirror: bool = True  # make the answer header copy the request's
    server_proxy: bool = False  # post straight to the provider's server proxy
    add_ocsp: bool = False  # splice our auth OCSP response in (server proxy)
    deny: bool = False  # revoke the client's access right for the call
    suffix_only: bool = False  # the manifest gives only the end of the code
    checks: tuple[str, ...] = ()
    skip: str | None = None
    xfail: str | None = None


def _bom_variants(case: Case, label: str) -> list[Case]:
    plain = Case(**{**case.__dict__, "label": label})
    field = "answer_bom" if case.answer else "query_bom"
    bom = Case(**{**case.__dict__, "label": f"{label}-bom", field: True})
    return [plain, bom]


CASES: dict[tuple[str, str], list[Case]] = {
    ("simple-comment.answer", "accept"): [
        Case("simple.query", answer="simple-comment.answer", checks=("comment",))
    ],
    ("missing-protocolVersion.query", "reject"): [
        Case("missing-protocolVersion.query", code="client.missing_header_field")
    ],
    ("malformed-protocolVersion.query", "reject"): [
        Case("malformed-protocolVersion.query", code="client.invalid_protocol_version")
    ],
    ("malformed-body2.query", "reject"): [
        Case("malformed-body2.query", code="client.invalid_body", label="request"),
        Case(
            "getstate.query",
            answer="malformed-body2.query",
            code="server.serverproxy.service_failed.invalid_body",
            label="answer",
        ),
    ],
    ("missing-org.query", "reject"): [
        Case("missing-org.query", code="server.clientproxy.unknown_member")
    ],
    ("notAllowed.query", "reject"): [
        Case(
            "notAllowed.query",
            answer="attachm.answer",
            deny=True,
            code="server.serverproxy.access_denied",
        )
    ],
    ("xml.query", "reject"): [
        Case(
            "xml.query",
            answer="getstate.query",
            mirror=False,
            code="server.clientproxy.service_failed.inconsistent_response",
        )
    ],
    ("proxyemulator.query", "accept"): [
        # The service echoes the request, which mirrors its header exactly.
        Case("proxyemulator.query", answer="proxyemulator.query")
    ],
    ("getstate-subsystem.query", "accept"): _bom_variants(
        Case(
            "getstate-subsystem.query",
            answer="getstate-subsystem.answer",
            checks=("request-bytes",),
        ),
        "",
    ),
    ("getstate-subsystem.answer", "accept"): _bom_variants(
        Case("getstate-subsystem.query", answer="getstate-subsystem.answer"), ""
    ),
    ("getstate-iso88591.answer", "accept"): [
        Case(
            "getstate.query",
            answer="getstate-iso88591.answer",
            answer_type=ISO_XML,
            checks=("iso-8859-1",),
        )
    ],
    ("cdata.query", "accept"): [
        Case("cdata.query", answer="cdata.answer", checks=("request-bytes",))
    ],
    ("cdata.answer", "accept"): [
        Case("cdata.query", answer="cdata.answer", checks=("cdata",))
    ],
    ("nowhitespace.query", "accept"): [
        Case(
            "nowhitespace.query",
            answer="nowhitespace.answer",
            checks=("request-bytes",),
        )
    ],
    ("nowhitespace.answer", "accept"): [
        Case("nowhitespace.query", answer="nowhitespace.answer")
    ],
    ("xmlencoded.query", "accept"): [
        Case("xmlencoded.query", answer="xmlencoded.answer", checks=("request-bytes",))
    ],
    ("xmlencoded.answer", "accept"): [
        Case("xmlencoded.query", answer="xmlencoded.answer", checks=("escapes",))
    ],
    ("requesthash.answer", "accept"): [
        Case("getstate.query", answer="requesthash.answer")
    ],
    ("fault.query", "reject"): [
        Case(
            "fault.query",
            code="client.code",
            label="as-request",
        )
    ],
    ("fault.query", "accept"): [
        Case(
            "simple.query",
            answer="fault.query",
            status=500,
            code="CODE",
            label="from-service",
            checks=("verbatim",),
        )
    ],
    ("faulty-fault.answer", "accept"): [
        Case(
            "simple.query",
            answer="faulty-fault.answer",
            status=500,
            code="soap:Server",
            checks=("verbatim",),
        )
    ],
    ("empty.query", "reject"): [
        *_bom_variants(Case("empty.query", code="client.invalid_soap"), "request"),
        *_bom_variants(
            Case("empty.query", query_type=MULTI, code="client.missing_soap"),
            "multipart-request",
        ),
        *_bom_variants(
            Case(
                "getstate.query",
                answer="empty.query",
                code="server.serverproxy.service_failed.invalid_soap",
            ),
            "answer",
        ),
        *_bom_variants(
            Case(
                "getstate.query",
                answer="empty.query",
                answer_type=MULTI,
                code="server.serverproxy.service_failed.invalid_message",
            ),
            "multipart-answer",
        ),
        Case(
            "getstate.query",
            code="server.clientproxy.service_failed.invalid_soap",
            label="from-server-proxy",
            skip=EMULATED,
        ),
    ],
    ("attachm.query", "accept"): [
        Case(
            "attachm.query",
            query_type=MULTI,
            answer="attachm.answer",
            checks=("parts-at-service",),
        )
    ],
    ("attachm.answer", "accept"): [
        Case("attachm.query", query_type=MULTI, answer="attachm.answer")
    ],
    ("attachm2.query", "accept"): [
        Case(
            "attachm2.query",
            query_type=MULTI_NO_CHARSET,
            answer="attachm2.answer",
            answer_type=MULTI,
            checks=("parts-at-service",),
        )
    ],
    ("attachm2.answer", "accept"): [
        Case(
            "attachm2.query",
            query_type=MULTI_NO_CHARSET,
            answer="attachm2.answer",
            answer_type=MULTI,
        )
    ],
    ("attachments.query", "accept"): [
        Case(
            "attachments.query",
            query_type=MULTI,
            answer="attachments.answer",
            answer_type=MULTI,
            checks=("parts-at-service",),
        )
    ],
    ("attachments.answer", "accept"): [
        Case(
            "attachments.query",
            query_type=MULTI,
            answer="attachments.answer",
            answer_type=MULTI,
        )
    ],
    ("attachm-mtom.query", "accept"): [
        Case(
            "attachm-mtom.query",
            query_type=MTOM,
            answer="attachm-mtom.answer",
            answer_type=MTOM_ANSWER,
            checks=("parts-at-service", "content-id"),
        )
    ],
    ("attachm-mtom.answer", "accept"): [
        Case(
            "attachm-mtom.query",
            query_type=MTOM,
            answer="attachm-mtom.answer",
            answer_type=MTOM_ANSWER,
        )
    ],
    ("mimesoap.query", "accept"): [
        Case(
            "mimesoap.query",
            query_type=MULTI,
            answer="mimesoap.answer",
            answer_type=MULTI,
            checks=("parts-at-service",),
        )
    ],
    ("mimesoap.answer", "accept"): [
        Case(
            "mimesoap.query",
            query_type=MULTI,
            answer="mimesoap.answer",
            answer_type=MULTI,
        )
    ],
    ("soapfault-mtom.query", "accept"): [
        Case(
            "soapfault-mtom.query",
            query_type=MTOM,
            answer="soapfault-mtom.answer",
            answer_type=MTOM_ANSWER,
            code="soap:Server",
            checks=("parts-at-service",),
        )
    ],
    ("soapfault-mtom.answer", "accept"): [
        Case(
            "soapfault-mtom.query",
            query_type=MTOM,
            answer="soapfault-mtom.answer",
            answer_type=MTOM_ANSWER,
            code="soap:Server",
            checks=("fault-detail",),
        )
    ],
    ("attachm-error.query", "reject"): [
        Case(
            "attachm-error.query",
            query_type=MULTI,
            code="client.invalid_content_type",
            label="request",
        ),
        Case(
            "getstate.query",
            answer="attachm-error.query",
            answer_type=MULTI,
            code="server.serverproxy.service_failed.invalid_content_type",
            label="answer",
        ),
        Case(
            "getstate.query",
            code="server.clientproxy.service_failed.invalid_content_type",
            label="from-server-proxy",
            skip=EMULATED,
        ),
        Case(
            "attachm-error.query",
            query_type=MIXED,
            server_proxy=True,
            code="invalid_content_type",
            suffix_only=True,
            label="proxy-message",
        ),
    ],
    ("attachm-faulty-soap.query", "reject"): [
        Case(
            "attachm-faulty-soap.query",
            query_type=MULTI,
            code="client.missing_header_field",
            label="request",
        ),
        Case(
            "attachm.query",
            query_type=MULTI,
            answer="attachm-faulty-soap.query",
            answer_type=MULTI,
            code="server.serverproxy.service_failed.missing_header_field",
            label="answer",
        ),
    ],
    ("faulty-multipart.query", "reject"): [
        Case(
            "getstate.query",
            answer="faulty-multipart.query",
            answer_type=MULTI,
            code="server.serverproxy.service_failed.invalid_message",
        )
    ],
    ("no-signature.query", "reject"): [
        Case(
            "no-signature.query",
            query_type=NO_SIGNATURE,
            server_proxy=True,
            add_ocsp=True,
            code="server.serverproxy.missing_signature",
            label="server-proxy",
        ),
        Case(
            "getstate.query",
            code="server.clientproxy.missing_signature",
            label="from-server-proxy",
            skip=EMULATED,
        ),
    ],
    ("no-soap.query", "reject"): [
        Case(
            "no-soap.query",
            query_type=MIXED,
            server_proxy=True,
            code="server.serverproxy.service_failed.invalid_soap",
        )
    ],
}


def _harness_rows() -> list[dict[str, str]]:
    if not FIXTURES.is_dir():
        return []
    with open(FIXTURES / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r for r in rows if r["topic"] == "soap" and HARNESS in r["needs"]]


def _row_key(row: dict[str, str]) -> tuple[str, str]:
    return row["path"].rsplit("/", 1)[-1], row["expected"]


def _params() -> list[object]:
    params = []
    for row in _harness_rows():
        name = _row_key(row)[0]
        for case in CASES.get(_row_key(row), []):
            marks = []
            if case.skip:
                marks.append(pytest.mark.skip(reason=case.skip))
            if case.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=case.xfail))
            case_id = f"{name}/{case.label}" if case.label else name
            params.append(pytest.param(row, case, id=case_id, marks=marks))
    return params


# -- rewriting fixtures to the demo's identifiers --------------------------------

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, strip_cdata=False
)
_ENVELOPE_START = re.compile(rb"<(?:\?xml|[\w.-]+:Envelope\b|Envelope\b)")
_ENVELOPE_END = re.compile(rb"</(?:[\w.-]+:)?Envelope>")

# (objectType, [(local name, value), ...]) of a client or service element.
Ident = tuple[str, list[tuple[str, str]]]


def _envelope(data: bytes) -> etree._Element | None:
    """The SOAP envelope inside a fixture (plain or the first MIME part)."""
    start = _ENVELOPE_START.search(data)
    ends = list(_ENVELOPE_END.finditer(data))
    if start is None or not ends:
        return None
    try:
        return etree.fromstring(data[start.start() : ends[-1].end()], _PARSER)
    except etree.XMLSyntaxError:
        return None


def _header(data: bytes) -> etree._Element | None:
    envelope = _envelope(data)
    return None if envelope is None else envelope.find(f"{{{SOAP_ENV}}}Header")


def _demo_client(member_code: str, subsystem_code: str | None) -> ClientId:
    if member_code == "consumer":
        return BENEFITS_SUBSYSTEM
    if member_code == "producer":
        return REGISTRY_SUBSYSTEM
    return ClientId(INSTANCE, "GOV", member_code, subsystem_code)


def _demo_ident(element: etree._Element) -> Ident:
    values = {etree.QName(c).localname: c.text or "" for c in _children(element)}
    owner = _demo_client(values["memberCode"], values.get("subsystemCode"))
    parts = [
        ("xRoadInstance", owner.instance),
        ("memberClass", owner.member_class),
        ("memberCode", owner.member_code),
    ]
    if owner.subsystem_code:
        parts.append(("subsystemCode", owner.subsystem_code))
    if etree.QName(element).localname == "client":
        return owner.object_type.value, parts
    parts.append(("serviceCode", values["serviceCode"]))
    if "serviceVersion" in values:
        parts.append(("serviceVersion", values["serviceVersion"]))
    return "SERVICE", parts


def _ident_of(element: etree._Element) -> Ident:
    pairs = [(etree.QName(c).localname, c.text or "") for c in _children(element)]
    return element.get(f"{{{ID}}}objectType") or "", pairs


def _children(element: etree._Element) -> list[etree._Element]:
    return [c for c in element if isinstance(c.tag, str)]


def _qname(element: etree._Element) -> bytes:
    local = etree.QName(element).localname
    return (f"{element.prefix}:{local}" if element.prefix else local).encode()


def _replace_ident(data: bytes, element: etree._Element, ident: Ident) -> bytes:
    """Rewrite one identifier element in place; every other byte stays."""
    qname = _qname(element)
    start = re.search(b"<" + re.escape(qname) + rb"[\s>]", data)
    assert start is not None, qname
    open_end = data.index(b">", start.start()) + 1
    close = data.index(b"</" + qname + b">", open_end)

    object_type, parts = ident
    start_tag = re.sub(
        rb"(objectType=)([\"'])\w+\2",
        b'\\1"' + object_type.encode() + b'"',
        data[start.start() : open_end],
    )
    children = _children(element)
    prefix = f"{children[0].prefix}:" if children and children[0].prefix else ""
    indent = (element.text or "").encode()
    closing = (children[-1].tail or "").encode() if children else b""
    inner = b"".join(
        indent + f"<{prefix}{name}>{escape(value)}</{prefix}{name}>".encode()
        for name, value in parts
    )
    return data[: start.start()] + start_tag + inner + closing + data[close:]


def _replace_text(data: bytes, element: etree._Element, value: str) -> bytes:
    qname = re.escape(_qname(element))
    pattern = b"<" + qname + rb"(\s[^>]*)?(?:/>|>.*?</" + qname + b">)"
    match = re.search(pattern, data, re.S)
    assert match is not None, qname
    attrs = match.group(1) or b""
    new = b"<" + _qname(element) + attrs + b">" + escape(value).encode()
    return (
        data[: match.start()]
        + new
        + b"</"
        + _qname(element)
        + b">"
        + data[match.end() :]
    )


def rewrite_query(data: bytes) -> bytes:
    """Give a fixture request the demo's client and service identifiers."""
    header = _header(data)
    if header is None:
        return data
    for name in ("service", "client"):
        element = header.find(f"{{{XRD}}}{name}")
        if element is not None:
            data = _replace_ident(data, element, _demo_ident(element))
    return data


def rewrite_answer(data: bytes, request: bytes, *, mirror: bool) -> bytes:
    """Give a fixture answer the demo identifiers, or the request's header values."""
    if not mirror:
        return rewrite_query(data)
    header, wanted = _header(data), _header(request)
    if header is None or wanted is None:
        return rewrite_query(data)
    for name in ("service", "client"):
        element, source = (
            header.find(f"{{{XRD}}}{name}"),
            wanted.find(f"{{{XRD}}}{name}"),
        )
        if element is not None and source is not None:
            data = _replace_ident(data, element, _ident_of(source))
    for name in ("id", "userId", "issue"):
        element, source = (
            header.find(f"{{{XRD}}}{name}"),
            wanted.find(f"{{{XRD}}}{name}"),
        )
        if element is None or source is None:
            continue
        if (element.text or "") != (source.text or ""):
            data = _replace_text(data, element, source.text or "")
            header = _header(data)
            assert header is not None
    return data


# -- sending and reading back ------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the caller got back: HTTP status, Content-Type and body."""

    status: int
    content_type: str
    body: bytes

    def soap_part(self) -> bytes:
        mime_type, params = parse_content_type(self.content_type)
        if mime_type == "multipart/related":
            return parse_multipart(self.body, params["boundary"])[0].body
        return self.body

    def parts(self) -> list[MimePart]:
        _, params = parse_content_type(self.content_type)
        return parse_multipart(self.body, params["boundary"])


def fault_code(soap: bytes) -> str | None:
    envelope = etree.fromstring(_no_bom(soap), _PARSER)
    fault = envelope.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    return None if fault is None else (fault.findtext("faultcode") or "").strip()


def _no_bom(data: bytes) -> bytes:
    return data[len(BOM) :] if data.startswith(BOM) else data


def first_part_body(data: bytes, boundary: str) -> bytes:
    """The SOAP part of a fixture multipart, cut by hand (the hashed bytes)."""
    delimiter = b"--" + boundary.encode()
    start = data.index(delimiter) + len(delimiter)
    start = data.index(b"\n", start) + 1
    blank = re.compile(rb"\r?\n\r?\n").search(data, start - 1)
    assert blank is not None
    body_start = blank.end()
    end = data.index(b"\n" + delimiter, body_start)
    return data[body_start : end - 1 if data[end - 1 : end] == b"\r" else end]


def soap_of(data: bytes, content_type: str) -> bytes:
    mime_type, params = parse_content_type(content_type)
    if mime_type.startswith("multipart/"):
        return first_part_body(data, params["boundary"])
    return data


async def post_client_proxy(ecosystem: Ecosystem, body: bytes, content_type: str):
    async with aiohttp.ClientSession() as session:
        async with session.post(
            ecosystem.client_proxy_url + "/",
            data=body,
            headers={"Content-Type": content_type},
        ) as response:
            return Outcome(
                response.status,
                response.headers.get("Content-Type", ""),
                await response.read(),
            )


async def post_server_proxy(
    ecosystem: Ecosystem, body: bytes, content_type: str, *, add_ocsp: bool
) -> Outcome:
    """Send raw bytes to the provider's server proxy over the consumer's mTLS."""
    runtime = ecosystem.agency_server.runtime
    assert runtime is not None and runtime.peers is not None
    if add_ocsp:
        body = _with_ocsp(body, runtime.auth_ocsp_responses()[0])
    now = runtime.clock()
    reply = await runtime.peers.send(
        runtime.global_conf(now),
        REGISTRY_SUBSYSTEM,
        None,
        {
            "Content-Type": content_type,
            "x-hash-algorithm": "SHA-512",
            "x-proxy-version": "7.7.0",
            "x-road-request-id": str(uuid.uuid4()),
        },
        body,
        now=now,
    )
    assert reply.fault is not None, "the server proxy accepted a broken message"
    return Outcome(200, TEXT_XML, reply.fault)


def _with_ocsp(message: bytes, ocsp_der: bytes) -> bytes:
    """Put an OCSP part before the fixture's first part, keeping its framing."""
    first_line_end = message.index(b"\n") + 1
    delimiter_line = message[:first_line_end]
    ocsp_part = b"Content-Type: application/ocsp-response\n\n" + ocsp_der + b"\n"
    return delimiter_line + ocsp_part + message


@dataclass(frozen=True)
class Sent:
    query: bytes
    answer: bytes | None


async def run_case(
    ecosystem: Ecosystem, service: FixtureService, case: Case
) -> tuple[Outcome, Sent]:
    query = rewrite_query((QUERIES / case.query).read_bytes())
    if case.query_bom:
        query = BOM + query
    answer = None
    if case.answer is not None:
        answer = rewrite_answer(
            (QUERIES / case.answer).read_bytes(), query, mirror=case.mirror
        )
        if case.answer_bom:
            answer = BOM + answer
        service.answer_with(answer, case.answer_type, case.status)
    else:
        service.reset()

    if case.server_proxy:
        outcome = await post_server_proxy(
            ecosystem, query, case.query_type, add_ocsp=case.add_ocsp
        )
    elif case.deny:
        test_service = ServiceId(REGISTRY_SUBSYSTEM, _service_code(query))
        _set_access(ecosystem, test_service, allowed=False)
        try:
            outcome = await post_client_proxy(ecosystem, query, case.query_type)
        finally:
            _set_access(ecosystem, test_service, allowed=True)
    else:
        outcome = await post_client_proxy(ecosystem, query, case.query_type)
    return outcome, Sent(query, answer)


def _service_code(query: bytes) -> str:
    header = _header(query)
    assert header is not None
    return header.findtext(f"{{{XRD}}}service/{{{ID}}}serviceCode") or ""


def _set_access(ecosystem: Ecosystem, service_id: ServiceId, *, allowed: bool) -> None:
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        if allowed:
            serverconf.grant(service_id, BENEFITS_SUBSYSTEM)
        else:
            serverconf.revoke(service_id, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()


# -- what a delivered answer must look like -------------------------------------


def _canonical(soap: bytes, charset: str | None = None) -> bytes:
    """C14N (with comments) of a SOAP message, without any requestHash."""
    parser = _PARSER
    if charset:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            strip_cdata=False,
            encoding=charset,
        )
    root = etree.fromstring(_no_bom(soap), parser)
    for element in list(root.iter(f"{{{XRD}}}requestHash")):
        element.getparent().remove(element)  # its tail goes with it
    return etree.tostring(root, method="c14n", with_comments=True)


def check_delivered(outcome: Outcome, case: Case, sent: Sent) -> None:
    """A normal answer: the service's message, requestHash set, parts intact."""
    assert sent.answer is not None
    assert outcome.status == 200, outcome.body[:300]
    delivered = outcome.soap_part()
    assert fault_code(delivered) is None, delivered[:400]

    header = etree.fromstring(_no_bom(delivered), _PARSER).find(f"{{{SOAP_ENV}}}Header")
    hashes = header.findall(f"{{{XRD}}}requestHash")
    assert len(hashes) == 1, delivered[:600]
    assert hashes[0].get("algorithmId") == SHA512_URI
    request_soap = soap_of(sent.query, case.query_type)
    expected = hashlib.sha512(request_soap).digest()
    assert base64.b64decode(hashes[0].text) == expected

    answer_type, answer_params = parse_content_type(case.answer_type)
    sent_soap = soap_of(sent.answer, case.answer_type)
    charset = None
    if not answer_type.startswith("multipart/"):
        charset = answer_params.get("charset")
    assert _canonical(delivered) == _canonical(sent_soap, charset)

    if answer_type.startswith("multipart/"):
        mime_type, params = parse_content_type(outcome.content_type)
        assert mime_type == "multipart/related", outcome.content_type
        assert params["boundary"] == answer_params["boundary"]
        sent_parts = parse_multipart(sent.answer, BOUNDARY, lenient_end=True)
        assert _part_view(outcome.parts()[1:]) == _part_view(sent_parts[1:])
    else:
        assert parse_content_type(outcome.content_type)[0] == "text/xml"


def _part_view(parts: list[MimePart]) -> list[tuple[object, ...]]:
    """Parts as comparable values: header names fold case, order is free."""
    return [
        (sorted((k.lower(), v) for k, v in part.headers), part.body) for part in parts
    ]


def check_extra(name: str, outcome: Outcome, sent: Sent, service: FixtureService):
    delivered = outcome.soap_part() if outcome.status == 200 else b""
    if name == "comment":
        assert b"<!-- multiline\n        comment -->" in delivered
    elif name == "cdata":
        assert delivered.count(b"<![CDATA[<a><b><c>12345678</c></b></a>]]>") == 2
    elif name == "escapes":
        root = etree.fromstring(_no_bom(delivered), _PARSER)
        user_id = root.findtext(f".//{{{XRD}}}userId")
        assert user_id == "<\"EE37702211234\" & 'xml encoded'>"
        assert root.find(f".//{{{XRD}}}protocolVersion").get("test") == "#"
        answer = root.find(".//answer")
        assert (answer.get("foo"), answer.text) == ("&", ">foo< & bar")
    elif name == "iso-8859-1":
        root = etree.fromstring(_no_bom(delivered), _PARSER)
        # The service's bytes "a" EF BF BD, read as ISO-8859-1 as it declared.
        assert root.findtext(".//response") == b"a\xef\xbf\xbd".decode("iso-8859-1")
    elif name == "verbatim":
        assert outcome.body == sent.answer
    elif name == "fault-detail":
        error = b"<error>Unable to create payload, try increasing the size</error>"
        assert error in outcome.body
    elif name == "request-bytes":
        assert [r.body for r in service.received] == [sent.query]
    elif name == "parts-at-service":
        check_parts_at_service(service, sent)
    elif name == "content-id":
        (received,) = service.received
        sent_ids = [p.header("Content-ID") for p in _query_parts(sent)]
        assert all(sent_ids), sent_ids
        assert [p.header("Content-ID") for p in _received_parts(received)] == sent_ids
    else:  # pragma: no cover - a typo in the case table
        raise AssertionError(f"unknown check {name!r}")


def _query_parts(sent: Sent) -> list[MimePart]:
    return parse_multipart(sent.query, BOUNDARY, lenient_end=True)


def _received_parts(received) -> list[MimePart]:  # type: ignore[no-untyped-def]
    mime_type, params = parse_content_type(received.header("Content-Type"))
    assert mime_type == "multipart/related", mime_type
    assert params["boundary"] == BOUNDARY  # re-framed with the original boundary
    return parse_multipart(received.body, params["boundary"])


def check_parts_at_service(service: FixtureService, sent: Sent) -> None:
    (received,) = service.received
    parts = _received_parts(received)
    assert parts[0].body == first_part_body(sent.query, BOUNDARY)
    assert _part_view(parts[1:]) == _part_view(_query_parts(sent)[1:])


# -- fixtures ------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service(ecosystem: Ecosystem):
    (port,) = free_ports(1)
    fixture_service = FixtureService(HOST, port)
    await fixture_service.start()
    serverconf = ServerConf(ecosystem.register_server.directory)
    try:
        for code in SERVICE_CODES:
            service_id = ServiceId(REGISTRY_SUBSYSTEM, code)
            serverconf.add_service(service_id, kind="SOAP", url=fixture_service.url)
            serverconf.grant(service_id, BENEFITS_SUBSYSTEM)
    finally:
        serverconf.close()
    yield fixture_service
    await fixture_service.stop()


# -- tests ---------------------------------------------------------------------


async def test_every_harness_row_has_a_case() -> None:
    keys = [_row_key(row) for row in _harness_rows()]
    assert len(keys) >= 30
    assert [k for k in keys if k not in CASES] == []
    assert [k for k in CASES if k not in keys] == []


async def test_rewriting_keeps_every_other_byte() -> None:
    original = (QUERIES / "xmlencoded.query").read_bytes()
    rewritten = rewrite_query(original)

    header = _header(rewritten)
    assert header is not None
    names = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode")
    client = list(zip(names, BENEFITS_SUBSYSTEM.parts(), strict=True))
    assert _ident_of(header.find(f"{{{XRD}}}client")) == ("SUBSYSTEM", client)
    provider = list(zip(names, REGISTRY_SUBSYSTEM.parts(), strict=True))
    service = ("SERVICE", [*provider, ("serviceCode", "testQuery")])
    assert _ident_of(header.find(f"{{{XRD}}}service")) == service
    tail = original[original.index(b"</xroad:service>") :]
    assert rewritten.endswith(tail)
    assert rewritten.startswith(original[: original.index(b"<xroad:client")])


async def test_answer_header_is_made_to_mirror_the_request() -> None:
    request = rewrite_query((QUERIES / "attachm-mtom.query").read_bytes())
    original = (QUERIES / "attachm-mtom.answer").read_bytes()
    answer = rewrite_answer(original, request, mirror=True)

    assert _header(answer).findtext(f"{{{XRD}}}id") == "1234567890"
    assert original.count(b"9876543210") == 1 and b"9876543210" not in answer
    assert answer.endswith(original[original.index(b"<xroad:issue>") :])


@pytest.mark.parametrize(("row", "case"), _params())
async def test_manifest_row(
    ecosystem: Ecosystem, service: FixtureService, row: dict[str, str], case: Case
) -> None:
    if row["expected"] == "reject":
        assert case.code is not None
        # The expected code must be one the manifest row names.
        assert normalize_code(case.code) in normalize_code(row["expected_error"])

    outcome, sent = await run_case(ecosystem, service, case)

    if case.code is None:
        check_delivered(outcome, case, sent)
    else:
        assert outcome.status == 200, outcome.body[:300]
        code = fault_code(outcome.soap_part())
        assert code is not None, outcome.body[:400]
        if case.suffix_only:
            assert normalize_code(code).endswith(normalize_code(case.code)), code
        else:
            assert codes_equal(code, case.code), code
    for name in case.checks:
        check_extra(name, outcome, sent, service)
