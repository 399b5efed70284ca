"""External and intermediate CAs at the central server: registry, CA, CLI.

Specs: global-configuration.md §7 (approvedCA with intermediateCA and per-CA
OCSP), certificates-ocsp.md §1 and §6.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from central_server.ca import CertificateAuthority
from central_server.registry import IntermediateCA, Registry, _approved_ca
from cli.main import main
from protocol import ocsp, pki

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _der(ca: CertificateAuthority) -> bytes:
    return ca.ca_cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def cas(tmp_path: Path) -> tuple[CertificateAuthority, CertificateAuthority]:
    top = CertificateAuthority.create(
        tmp_path / "top", "EXT", NOW, name="Ext Top", ocsp_url="http://top.example/"
    )
    issuing = CertificateAuthority.create(
        tmp_path / "int",
        "EXT",
        NOW,
        name="Ext Issuing",
        ocsp_url="http://int.example/",
        issuer=top,
    )
    return top, issuing


def test_intermediate_ca_is_recorded_and_answered_by_its_issuer(cas) -> None:
    top, issuing = cas
    assert issuing.ca_cert.issuer == top.ca_cert.subject
    assert pki.is_signed_by(issuing.ca_cert, top.ca_cert)
    request = ocsp.build_ocsp_request(issuing.ca_cert, top.ca_cert)
    verdict = ocsp.verify_ocsp_response(
        top.ocsp_response(request, NOW),
        issuing.ca_cert,
        top.ca_cert,
        at=NOW,
        freshness_seconds=600,
    )
    assert verdict.status is ocsp.OCSPCertStatus.GOOD
    reopened = CertificateAuthority.open(issuing.directory)
    assert reopened.ca_cert == issuing.ca_cert


def test_registry_publishes_intermediates_with_their_ocsp(tmp_path: Path, cas) -> None:
    top, issuing = cas
    registry = Registry.create(tmp_path / "reg", "DEMO")
    try:
        registry.add_approved_ca(
            "Ext",
            _der(top),
            profile=pki.EJBCA_PROFILE,
            ocsp_url="http://top.example/",
            intermediates=[IntermediateCA(_der(issuing), "http://int.example/")],
        )
        (record,) = registry.list_approved_cas()
        assert [i.cert for i in record.intermediates] == [_der(issuing)]
    finally:
        registry.close()
    (approved,) = [_approved_ca(r) for r in [record]]
    assert approved.intermediates == (issuing.ca_cert,)
    assert approved.ocsp_for(issuing.ca_cert)[0].url == "http://int.example/"
    assert approved.ocsp[0].url == "http://top.example/"


def test_registry_refuses_an_intermediate_of_another_ca(tmp_path: Path, cas) -> None:
    top, _ = cas
    stranger = CertificateAuthority.create(tmp_path / "x", "EXT", NOW, name="Other")
    registry = Registry.create(tmp_path / "reg", "DEMO")
    try:
        with pytest.raises(pki.CannotCreateCertPath) as info:
            registry.add_approved_ca(
                "Ext",
                _der(top),
                profile=pki.EJBCA_PROFILE,
                intermediates=[IntermediateCA(_der(stranger))],
            )
        assert info.value.code == "CannotCreateCertPath"
        assert registry.list_approved_cas() == []
    finally:
        registry.close()


def test_cli_ca_add_approves_an_external_ca(tmp_path: Path, cas) -> None:
    top, issuing = cas
    Registry.create(tmp_path / "reg", "DEMO").close()
    top_pem, int_pem = tmp_path / "top.pem", tmp_path / "int.pem"
    top_pem.write_bytes(top.ca_cert.public_bytes(serialization.Encoding.PEM))
    int_pem.write_bytes(issuing.ca_cert.public_bytes(serialization.Encoding.PEM))
    responder = tmp_path / "responder.pem"
    responder.write_bytes(top.ocsp_cert.public_bytes(serialization.Encoding.PEM))

    args = ["central", "ca-add", "--dir", str(tmp_path / "reg"), "--name", "Ext"]
    args += ["--cert", str(top_pem), "--intermediate", str(int_pem)]
    args += ["--ocsp-url", "http://top.example/", "--ocsp-cert", str(responder)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output

    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0
    assert "[DuplicateEntry]" in again.output

    registry = Registry.open(tmp_path / "reg")
    try:
        (record,) = registry.list_approved_cas()
    finally:
        registry.close()
    assert record.profile == pki.EJBCA_PROFILE
    assert record.ocsp_cert == top.ocsp_cert.public_bytes(serialization.Encoding.DER)
    assert [i.ocsp_url for i in record.intermediates] == ["http://top.example/"]
