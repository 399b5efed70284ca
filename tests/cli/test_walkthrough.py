"""CLI, end to end: a whole deployment made with nothing but ``xgate`` commands.

Every role runs in its own process on free ports of 127.0.0.1, in the order an
operator would follow: central server and TSA, members and security servers,
anchor, CSRs, certificates, registrations, local services and access rights,
then a SOAP and a REST call through the consumer's client proxy.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from protocol.xml import parse_xml

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
INSTANCE = "TEST"
PIN = "walkthrough-pin"
WAIT_SECONDS = 20.0
COMMAND_SECONDS = 30.0

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XRD = "http://x-road.eu/xsd/xroad.xsd"
REGISTER_NS = "urn:xgate:demo:population-register"
PERSON = "38001010000"

SOAP_REQUEST = f"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:xrd="{XRD}"
    xmlns:id="http://x-road.eu/xsd/identifiers" xmlns:pr="{REGISTER_NS}">
  <SOAP-ENV:Header>
    <xrd:client id:objectType="SUBSYSTEM">
      <id:xRoadInstance>{INSTANCE}</id:xRoadInstance>
      <id:memberClass>GOV</id:memberClass>
      <id:memberCode>2002</id:memberCode>
      <id:subsystemCode>BENEFITS</id:subsystemCode>
    </xrd:client>
    <xrd:service id:objectType="SERVICE">
      <id:xRoadInstance>{INSTANCE}</id:xRoadInstance>
      <id:memberClass>GOV</id:memberClass>
      <id:memberCode>1001</id:memberCode>
      <id:subsystemCode>REGISTRY</id:subsystemCode>
      <id:serviceCode>checkDigitalId</id:serviceCode>
      <id:serviceVersion>v1</id:serviceVersion>
    </xrd:service>
    <xrd:id>walkthrough-soap-1</xrd:id>
    <xrd:userId>EE{PERSON}</xrd:userId>
    <xrd:protocolVersion>4.0</xrd:protocolVersion>
  </SOAP-ENV:Header>
  <SOAP-ENV:Body>
    <pr:checkDigitalId><pr:personCode>{PERSON}</pr:personCode></pr:checkDigitalId>
  </SOAP-ENV:Body>
</SOAP-ENV:Envelope>
"""

# The provider's information system is the demo's, in a process of its own.
PROVIDER_SCRIPT = """\
import sys
from aiohttp import web
from demo.provider import provider_app
web.run_app(provider_app(), host=sys.argv[1], port=int(sys.argv[2]), print=None)
"""

CODED_ERROR = re.compile(r"^Error: \[(?P<code>[\w.]+)\] \S", re.MULTILINE)


def xgate_command() -> list[str]:
    """The installed entry point, as a user runs it."""
    script = Path(sys.executable).with_name("xgate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cli.main"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Deployment:
    """Runs ``xgate`` in a working directory and owns the background processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = {**os.environ, "XGATE_PIN": PIN}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def xgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*xgate_command(), *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )

    def ok(self, *args: str) -> str:
        done = self.xgate(*args)
        assert done.returncode == 0, f"xgate {' '.join(args)}:\n{done.stderr}"
        return done.stdout

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("wb")
        with log:
            process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def serve(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, *xgate_command(), *args)

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def wait_for_port(self, name: str, port: int) -> None:
        """Poll until ``port`` accepts connections; fail early if ``name`` died."""
        process = self.processes[name]
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{name} exited {process.returncode}:\n{self.log(name)}")
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"{name} did not listen on {port}:\n{self.log(name)}")

    def stop(self) -> dict[str, int]:
        """SIGTERM everything still running, newest first; kill what hangs."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    running = Deployment(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def http(
    method: str, url: str, body: bytes | None = None, **headers: str
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    # A proxy from the environment must not see traffic to 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=WAIT_SECONDS) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def wait_for_publication(conf_url: str, rounds: int = 2) -> None:
    """Wait until the central server published ``rounds`` new configurations.

    The second new one was certainly generated after everything registered so
    far; a security server started now downloads it.
    """
    seen = http("GET", conf_url)[2]
    deadline = time.monotonic() + WAIT_SECONDS
    while rounds and time.monotonic() < deadline:
        time.sleep(0.1)
        current = http("GET", conf_url)[2]
        if current != seen:
            seen, rounds = current, rounds - 1
    assert rounds == 0, "the central server published no new configuration"


def coded_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    match = CODED_ERROR.search(done.stderr)
    assert match, done.stderr
    return match["code"]


REGISTER = ("GOV/1001", "Population Register", "REGISTRY", "ss-register")
AGENCY = ("GOV/2002", "Benefits Agency", "BENEFITS", "ss-agency")
PORT_NAMES = (
    "conf ocsp tsa provider ss-register:client ss-register:proxy ss-register:ocsp"
    " ss-agency:client ss-agency:proxy ss-agency:ocsp"
).split()


def set_up_instance(deployment: Deployment, port: dict[str, int]) -> None:
    """The governing authority: instance, TSA, members, servers, anchor."""
    xgate = deployment.ok
    xgate(
        *("central", "init", "--dir", "central", "--instance", INSTANCE),
        *("--authority", "GOV/0001", "--authority-name", "Test Authority"),
        *("--address", HOST, "--conf-port", str(port["conf"])),
        *("--ocsp-port", str(port["ocsp"])),
    )
    xgate("tsa", "init", "--dir", "tsa", "--name", "TEST TSA")
    xgate(
        *("central", "tsa-add", "--dir", "central", "--name", "TEST TSA"),
        *("--url", f"http://{HOST}:{port['tsa']}/", "--cert", "tsa/tsa-cert.pem"),
    )
    for member, name, subsystem, server in (REGISTER, AGENCY):
        xgate("central", "member-add", "--dir", "central", member, "--name", name)
        xgate("central", "subsystem-add", "--dir", "central", f"{member}/{subsystem}")
        xgate(
            *("central", "server-add", "--dir", "central", f"{member}/{server}"),
            *("--address", f"{HOST}:{port[f'{server}:proxy']}"),
        )
    xgate("central", "anchor-export", "--dir", "central", "--out", "anchor.xml")


def start_authorities(deployment: Deployment, port: dict[str, int]) -> None:
    """Central server, TSA and the provider's information system."""
    deployment.serve(
        "central",
        *("central", "serve", "--dir", "central", "--host", HOST),
        *("--generation-interval", "1"),
    )
    deployment.serve(
        "tsa",
        "tsa",
        "serve",
        "--dir",
        "tsa",
        "--host",
        HOST,
        "--port",
        str(port["tsa"]),
    )
    deployment.start(
        "provider", sys.executable, "-c", PROVIDER_SCRIPT, HOST, str(port["provider"])
    )
    for name, number in (("central", "conf"), ("tsa", "tsa"), ("provider", "provider")):
        deployment.wait_for_port(name, port[number])


def join(
    deployment: Deployment, port: dict[str, int], who: tuple[str, str, str, str]
) -> None:
    """A member installs a security server; the authority certifies it."""
    member, _, subsystem, server = who
    xgate = deployment.ok
    out = xgate(
        *("server", "init", "--dir", server, "--anchor", "anchor.xml"),
        *("--owner", member, "--code", server, "--bind", HOST),
        *("--client-port", str(port[f"{server}:client"])),
        *("--server-port", str(port[f"{server}:proxy"])),
        *("--ocsp-port", str(port[f"{server}:ocsp"])),
    )
    auth_csr = re.search(r"^authentication CSR: *(\S+)$", out, re.MULTILINE)
    sign_csr = re.search(r"^signing CSR: *(\S+)$", out, re.MULTILINE)
    assert auth_csr and sign_csr, out

    central = ("central", "cert-issue", "--dir", "central")
    xgate(*central, auth_csr[1], "--kind", "auth", "--out", f"{server}-auth.pem")
    xgate(
        *central,
        sign_csr[1],
        "--kind",
        "sign",
        "--member",
        member,
        *("--out", f"{server}-sign.pem"),
    )
    for kind in ("auth", "sign"):
        xgate("server", "cert-import", "--dir", server, f"{server}-{kind}.pem")

    xgate(
        "central",
        "auth-cert-add",
        "--dir",
        "central",
        f"{member}/{server}",
        f"{server}-auth.pem",
    )
    xgate(
        "central",
        "client-register",
        "--dir",
        "central",
        f"{member}/{server}",
        f"{member}/{subsystem}",
    )
    xgate("server", "client-add", "--dir", server, member)
    xgate("server", "client-add", "--dir", server, f"{member}/{subsystem}")


def offer_services(deployment: Deployment, provider_url: str) -> None:
    """The register publishes a SOAP and a REST service to the agency."""
    xgate = deployment.ok
    local = ("--dir", "ss-register", "--provider", "GOV/1001/REGISTRY")
    xgate(
        *("server", "service-add", *local, "--code", "checkDigitalId"),
        *("--version", "v1", "--kind", "SOAP"),
        *("--url", f"{provider_url}/population-register"),
    )
    xgate(
        *("server", "service-add", *local, "--code", "digital-id"),
        *("--kind", "REST", "--url", f"{provider_url}/api"),
    )
    xgate(
        *("server", "acl-add", *local, "--code", "checkDigitalId"),
        *("--subject", "GOV/2002/BENEFITS"),
    )
    xgate(
        *("server", "acl-add", *local, "--code", "digital-id"),
        *("--subject", "GOV/2002/BENEFITS", "--method", "GET"),
        *("--path", "/v1/persons/*/digital-id"),
    )


def check_mistakes(deployment: Deployment) -> None:
    """Mistakes end in a coded one-line error and a non-zero status."""
    unknown = deployment.xgate(
        *("central", "client-register", "--dir", "central"),
        *("GOV/1001/ss-register", "GOV/9999/NOBODY"),
    )
    assert coded_error(unknown) == "UnknownMember"

    wrong_pin = deployment.xgate(
        *("server", "cert-import", "--dir", "ss-agency", "--pin", "not-the-pin"),
        "ss-agency-sign.pem",
    )
    assert coded_error(wrong_pin) == "PinIncorrect"

    foreign_csr = deployment.xgate(
        *("central", "cert-issue", "--dir", "central"),
        *("ss-agency/csr/sign-GOV-2002.csr", "--kind", "sign"),
        *("--member", "GOV/1001", "--out", "stolen.pem"),
    )
    assert coded_error(foreign_csr) == "InvalidCsr"
    assert not (deployment.directory / "stolen.pem").exists()


def check_soap_call(client_proxy: str) -> None:
    status, _, body = http(
        "POST",
        client_proxy + "/",
        SOAP_REQUEST.encode(),
        Content_Type="text/xml; charset=UTF-8",
        SOAPAction='""',
    )
    assert status == 200, body

    envelope = parse_xml(body)
    answer = envelope.find(f".//{{{REGISTER_NS}}}checkDigitalIdResponse")
    assert answer is not None, body
    assert answer.findtext(f"{{{REGISTER_NS}}}known") == "true"
    assert envelope.findtext(f".//{{{XRD}}}requestHash")


def check_rest_call(client_proxy: str) -> None:
    service = f"{INSTANCE}/GOV/1001/REGISTRY/digital-id"
    status, headers, body = http(
        "GET",
        f"{client_proxy}/r1/{service}/v1/persons/{PERSON}/digital-id",
        X_Road_Client=f"{INSTANCE}/GOV/2002/BENEFITS",
        X_Road_Id="walkthrough-rest-1",
        Accept="application/json",
    )
    assert status == 200, body
    assert headers.get_content_type() == "application/json"
    assert json.loads(body)["personCode"] == PERSON

    assert headers["X-Road-Id"] == "walkthrough-rest-1"
    assert headers["X-Road-Client"] == f"{INSTANCE}/GOV/2002/BENEFITS"
    assert headers["X-Road-Service"] == service
    assert headers["X-Road-Request-Id"]
    assert headers["X-Road-Request-Hash"]


def test_walkthrough(deployment: Deployment) -> None:
    port = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    set_up_instance(deployment, port)
    start_authorities(deployment, port)
    join(deployment, port, REGISTER)
    join(deployment, port, AGENCY)
    check_mistakes(deployment)
    offer_services(deployment, f"http://{HOST}:{port['provider']}")

    # Servers read the configuration at start: let the registrations out first.
    wait_for_publication(f"http://{HOST}:{port['conf']}/internalconf?version=6")
    for server in ("ss-register", "ss-agency"):
        deployment.serve(server, "server", "serve", "--dir", server)
    deployment.wait_for_port("ss-register", port["ss-register:proxy"])
    deployment.wait_for_port("ss-agency", port["ss-agency:client"])

    client_proxy = f"http://{HOST}:{port['ss-agency:client']}"
    check_soap_call(client_proxy)
    check_rest_call(client_proxy)

    # SIGTERM is a clean stop for every xgate server.
    codes = deployment.stop()
    del codes["provider"]
    assert codes == {"central": 0, "tsa": 0, "ss-register": 0, "ss-agency": 0}
