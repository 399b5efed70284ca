"""Demo: make the two calls through the ecosystem and tell what happened.

The evidence printed at the end is read back from each security server's
message log and checked again: the signature of every record against the
logged bytes, and its timestamp token against the approved TSA.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from lxml import etree

from protocol.auditor import verify_container
from protocol.errors import XRoadError
from protocol.identifiers import ClientId
from protocol.soap import build_soap_request
from protocol.xml import parse_xml
from security_server.logexport import build_record_container
from security_server.server import SecurityServer

from .ecosystem import (
    BENEFITS_SUBSYSTEM,
    HOST,
    INSTANCE,
    REST_SERVICE,
    SOAP_SERVICE,
    Ecosystem,
    wait_for_timestamps,
)
from .provider import NS

APPLICANT = "38001010000"

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Answers:
    soap_query_id: str
    soap_status: int
    soap_body: bytes
    rest_query_id: str
    rest_status: int
    rest_body: bytes


def soap_example(query_id: str = "demo-soap-1") -> bytes:
    body = etree.Element(f"{{{NS}}}checkDigitalId", nsmap={"pr": NS})
    etree.SubElement(body, f"{{{NS}}}personCode").text = APPLICANT
    return build_soap_request(
        BENEFITS_SUBSYSTEM, SOAP_SERVICE, query_id, body, user_id="EE38001010000"
    )


def rest_example() -> str:
    return f"/r1/{REST_SERVICE.slash()}/v1/persons/{APPLICANT}/digital-id"


async def make_calls(ecosystem: Ecosystem) -> Answers:
    soap_id = f"demo-soap-{uuid.uuid4()}"
    rest_id = f"demo-rest-{uuid.uuid4()}"
    url = ecosystem.client_proxy_url
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + "/",
            data=soap_example(soap_id),
            headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'},
        ) as response:
            soap_status, soap_body = response.status, await response.read()
        async with session.get(
            url + rest_example(),
            headers={
                "X-Road-Client": BENEFITS_SUBSYSTEM.slash(),
                "X-Road-Id": rest_id,
                "Accept": "application/json",
            },
        ) as response:
            rest_status, rest_body = response.status, await response.read()
    return Answers(soap_id, soap_status, soap_body, rest_id, rest_status, rest_body)


def describe_soap_answer(body: bytes) -> str:
    try:
        envelope = parse_xml(body)
    except XRoadError:
        return body[:200].decode("utf-8", "replace")
    fault = envelope.find(".//{http://schemas.xmlsoap.org/soap/envelope/}Fault")
    if fault is not None:
        return f"fault {fault.findtext('faultcode')}: {fault.findtext('faultstring')}"
    name = envelope.findtext(f".//{{{NS}}}name")
    valid = envelope.findtext(f".//{{{NS}}}digitalIdValid")
    until = envelope.findtext(f".//{{{NS}}}validUntil")
    state = f"valid until {until}" if valid == "true" else "NOT valid"
    return f"{name}: digital ID {state}"


async def tell_evidence(server: SecurityServer, title: str, say: Say) -> int:
    """Print each record the server logged; return how many fully checked out.

    Each record is exported as an ASiC-E container and judged by the same
    verifier an auditor uses (``xgate log verify``), against the server's
    current global configuration.
    """
    assert server.runtime is not None
    conf = server.runtime.conf_client.current
    records = await server.runtime.message_log.find(limit=1000)
    say(f"  {title}")
    good = 0
    for record in sorted(records, key=lambda r: r.id):
        kind = "response" if record.response else "request "
        say(f"    #{record.id} {kind} query {record.query_id}")
        if record.timestamp_token is None or conf is None:
            say("        not timestamped yet")
            continue
        try:
            verdict = verify_container(build_record_container(record), conf)
        except XRoadError as err:
            say(f"        evidence INVALID [{err.full_code}] {err.message}")
            continue
        signer = verdict.signing_cert.subject.rfc4514_string()
        how = "batch" if verdict.batch_timestamp else "single"
        say(
            f"        signature verified ({signer}); "
            f"timestamped {verdict.timestamp_time.isoformat()} ({how})"
        )
        good += 1
    return good


def demo_json(ecosystem: Ecosystem) -> dict[str, object]:
    ports = ecosystem.ports
    return {
        "instance": INSTANCE,
        "client_proxy_url": ecosystem.client_proxy_url,
        "client": BENEFITS_SUBSYSTEM.slash(),
        "soap_service": "/".join(SOAP_SERVICE.parts()),
        "rest_service": REST_SERVICE.slash(),
        "soap_example": soap_example("demo-soap-example").decode("utf-8"),
        "rest_example": rest_example(),
        "ports": ports,
        "central_conf_url": f"http://{HOST}:{ports['central_conf']}/internalconf?version=6",
        "ocsp_url": f"http://{HOST}:{ports['central_ocsp']}/",
        "tsa_url": f"http://{HOST}:{ports['tsa']}/",
        "ca_cert": str(ecosystem.ca_cert),
        "tsa_cert": str(ecosystem.tsa_cert),
        "anchor": str(ecosystem.anchor),
        "server_proxy_addresses": {
            "ss-register": f"{HOST}:{ports['register_server_proxy']}",
            "ss-agency": f"{HOST}:{ports['agency_server_proxy']}",
        },
        "directory": str(ecosystem.directory),
    }


async def tell_story(ecosystem: Ecosystem, say: Say) -> bool:
    """Make both calls and print the story; True when everything checked out."""
    say(
        f"xgate demo: instance {INSTANCE}, everything on {HOST}, state in {ecosystem.directory}"
    )
    say("")
    say(
        f"The Social Protection Agency ({BENEFITS_SUBSYSTEM.slash()}) is about to pay a benefit"
    )
    say(f"to applicant {APPLICANT}. It asks the Population Register")
    say(
        f"({SOAP_SERVICE.provider.slash()}) whether the applicant's digital ID is valid,"
    )
    say("once over SOAP and once over REST, through its own security server.")
    say("")
    answers = await make_calls(ecosystem)
    say(f"1. SOAP {SOAP_SERVICE}")
    say(f"   HTTP {answers.soap_status}: {describe_soap_answer(answers.soap_body)}")
    say(f"2. REST GET {rest_example()}")
    say(
        f"   HTTP {answers.rest_status}: {answers.rest_body.decode('utf-8', 'replace')}"
    )
    say("")
    await wait_for_timestamps(ecosystem)
    say("What each security server wrote to its message log before answering:")
    consumer = await tell_evidence(
        ecosystem.agency_server, "ss-agency (consumer side)", say
    )
    provider = await tell_evidence(
        ecosystem.register_server, "ss-register (provider side)", say
    )
    soap_ok = (
        answers.soap_status == 200 and b"checkDigitalIdResponse" in answers.soap_body
    )
    rest_ok = (
        answers.rest_status == 200
        and json.loads(answers.rest_body or b"{}").get("digitalIdValid") is True
    )
    ok = soap_ok and rest_ok and consumer == 4 and provider == 4
    say("")
    say(
        "Every message signed, verified, logged and timestamped."
        if ok
        else "Something did not check out: see above."
    )
    return ok


def tell_serving(ecosystem: Ecosystem, json_path: Path, say: Say) -> None:
    info = demo_json(ecosystem)
    say("")
    say(f"Serving. Details for scripts: {json_path}")
    say("Try by hand (Ctrl-C stops everything):")
    say(
        f"  curl -s -H 'X-Road-Client: {info['client']}' "
        f"'{info['client_proxy_url']}{info['rest_example']}'"
    )
    say(
        f"  python -c \"import json;print(json.load(open('{json_path}'))['soap_example'])\""
        f" | curl -s -H 'Content-Type: text/xml; charset=UTF-8' --data-binary @- "
        f"{info['client_proxy_url']}/"
    )


async def serve_forever() -> None:
    await asyncio.Event().wait()


__all__ = ["ClientId", "demo_json", "tell_serving", "tell_story"]
