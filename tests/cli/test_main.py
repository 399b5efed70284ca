"""CLI: argument errors and the error funnel, with no server running."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import main
from security_server.settings import ServerSettings

INSTANCE = "TEST"


def xgate(*args: str, **env: str | None) -> Result:
    return CliRunner(env={"XGATE_PIN": None, **env}).invoke(main, list(args))


@pytest.fixture(scope="module")
def central_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "central"
    result = xgate(
        *("central", "init", "--dir", str(directory), "--instance", INSTANCE),
        *("--authority", "GOV/0001", "--address", "127.0.0.1"),
    )
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    """A security server's settings file, enough for the local commands."""
    ServerSettings(INSTANCE, "GOV", "1001", "ss1").save(tmp_path)
    return tmp_path


BAD_MEMBERS = {
    "no-code": "GOV",
    "too-many": "GOV/1001/X",
    "empty-code": "GOV/",
    "empty-class": "/1001",
    "space": "GOV/10 01",
    "colon": "GOV/10:01",
}


@pytest.mark.parametrize("member", BAD_MEMBERS.values(), ids=BAD_MEMBERS.keys())
def test_member_add_refuses_bad_forms(central_dir: Path, member: str) -> None:
    result = xgate(
        "central", "member-add", "--dir", str(central_dir), member, "--name", "x"
    )
    assert result.exit_code == 2, result.output
    assert repr(member) in result.output


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ("subsystem-add", "GOV/1001"),
        ("subsystem-add", "GOV/1001/A/B"),
        ("server-add", "GOV/1001"),
        ("server-add", "GOV//ss1"),
    ],
    ids=["subsystem-member", "subsystem-long", "server-short", "server-empty"],
)
def test_central_refuses_bad_forms(central_dir: Path, command: str, text: str) -> None:
    args = ["central", command, "--dir", str(central_dir), text]
    if command == "server-add":
        args += ["--address", "127.0.0.1"]
    result = xgate(*args)
    assert result.exit_code == 2, result.output


def test_client_register_refuses_bad_client(central_dir: Path) -> None:
    result = xgate(
        *("central", "client-register", "--dir", str(central_dir)),
        *("GOV/1001/ss1", "GOV/1001/A/B"),
    )
    assert result.exit_code == 2, result.output
    assert "CLASS/CODE[/SUBSYSTEM]" in result.output


def test_registry_errors_are_one_coded_line(central_dir: Path) -> None:
    result = xgate("central", "subsystem-add", "--dir", str(central_dir), "GOV/9/X")
    assert result.exit_code == 1
    assert result.output.startswith("Error: [UnknownMember] ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["client-add", "GOV//X"],
        ["client-add", "GOV/1001/X/Y"],
        ["service-add", "--provider", "GOV/", "--code", "c"],
        ["acl-add", "--provider", "GOV/1001/X", "--code", "c", "--subject", "GOV"],
    ],
    ids=["client-empty", "client-long", "provider-empty", "subject-short"],
)
def test_server_refuses_bad_forms(server_dir: Path, args: list[str]) -> None:
    if args[0] == "service-add":
        args = [*args, "--kind", "SOAP", "--url", "http://127.0.0.1/"]
    command, *rest = args
    result = xgate("server", command, "--dir", str(server_dir), *rest)
    assert result.exit_code == 2, result.output


def test_local_commands_need_an_initialised_server(tmp_path: Path) -> None:
    result = xgate("server", "client-add", "--dir", str(tmp_path), "GOV/1001")
    assert result.exit_code == 1
    assert "xgate server init" in result.output
    assert "Traceback" not in result.output


def test_sign_certificates_need_the_member(tmp_path: Path) -> None:
    csr = tmp_path / "sign.csr"
    csr.write_bytes(b"unused")
    result = xgate(
        *("central", "cert-issue", "--dir", str(tmp_path), str(csr)),
        *("--kind", "sign", "--out", str(tmp_path / "cert.pem")),
    )
    assert result.exit_code == 2
    assert "--member" in result.output


def test_pin_is_not_prompted_without_a_terminal(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"unused")
    result = xgate("server", "cert-import", "--dir", str(tmp_path), str(cert))
    assert result.exit_code == 2
    assert "XGATE_PIN" in result.output


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    assert xgate("tsa", "init", "--dir", str(tmp_path), "--name", "T").exit_code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = xgate(
            "tsa",
            "serve",
            "--dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            port,
        )
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output


def test_central_publish_writes_a_signed_directory(central_dir: Path) -> None:
    from central_server.publisher import ConfSigningKeys
    from protocol.confdir import parse_signed_directory

    result = xgate("central", "publish", "--dir", str(central_dir))

    assert result.exit_code == 0, result.output
    published = Path(result.output.strip().rsplit(" ", 1)[1])
    keys = ConfSigningKeys.open(central_dir)
    directory = parse_signed_directory(
        published.read_bytes(), list(keys.verification_certs())
    )
    assert {part.content_identifier for part in directory.parts} == {
        "PRIVATE-PARAMETERS",
        "SHARED-PARAMETERS",
    }


def test_server_command_on_uninitialised_directory_is_a_coded_error(
    tmp_path: Path,
) -> None:
    result = xgate("server", "client-add", "--dir", str(tmp_path), "GOV/1001/X")

    assert result.exit_code != 0
    assert "xgate server init" in result.output
