"""Configuration signing-key rotation and revocation, from the store and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from central_server.ca import CertificateAuthority
from central_server.publisher import (
    KEYS_DIR,
    ConfSigningKeys,
    SigningKeyInUse,
    SigningKeyStatus,
    UnknownSigningKey,
    export_anchor,
    generate,
)
from central_server.registry import Registry
from central_server.service import CA_DIR, CONF_DIR, init_central
from cli.main import main
from protocol.anchor import parse_anchor
from protocol.confdir import parse_signed_directory
from protocol.errors import GlobalConfError
from protocol.globalconf import parse_shared_params
from protocol.identifiers import ClientId
from protocol.ocsp import OCSPCertStatus

NOW = dt.datetime(2025, 1, 4, 9, 30, tzinfo=dt.UTC)
INST = "TEST"
AUTHORITY = ClientId(INST, "GOV", "0001")
SS_MEMBER = ClientId(INST, "GOV", "1001")


@pytest.fixture
def central_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "central"
    init_central(
        directory, INST, authority_member=AUTHORITY, address="127.0.0.1", now=NOW
    )
    return directory


def xgate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def publish(central_dir: Path, keys: ConfSigningKeys, now: dt.datetime) -> bytes:
    registry = Registry.open(central_dir)
    try:
        return generate(registry, keys, central_dir / CONF_DIR, now).read_bytes()
    finally:
        registry.close()


def published_certs(central_dir: Path, keys: ConfSigningKeys) -> list[x509.Certificate]:
    shared_dir = central_dir / CONF_DIR / "V6"
    newest = max(p for p in shared_dir.iterdir() if p.name.isdigit())
    shared = parse_shared_params((newest / "shared-params.xml").read_bytes())
    return [c for s in shared.sources for c in s.internal_verification_certs]


def test_new_key_is_published_at_once_and_signs_only_once_active(
    central_dir: Path,
) -> None:
    keys = ConfSigningKeys.open(central_dir)
    old = keys.active()

    new = keys.add(INST, NOW)
    directory = publish(central_dir, keys, NOW + dt.timedelta(seconds=1))

    assert keys.verification_certs() == (old.cert, new.cert)
    assert published_certs(central_dir, keys) == [old.cert, new.cert]
    assert parse_signed_directory(directory, [old.cert]).expire_at > NOW
    with pytest.raises(GlobalConfError):
        parse_signed_directory(directory, [new.cert])

    keys.activate(new.key_id)
    directory = publish(central_dir, keys, NOW + dt.timedelta(seconds=2))

    assert keys.active().key_id == new.key_id
    assert parse_signed_directory(directory, [new.cert]).expire_at > NOW
    with pytest.raises(GlobalConfError) as refused:
        parse_signed_directory(directory, [old.cert])
    assert refused.value.code == "GlobalConfMissingVerificationCert"


def test_retired_key_leaves_the_anchor_and_shared_params(central_dir: Path) -> None:
    keys = ConfSigningKeys.open(central_dir)
    old = keys.active()
    new = keys.add(INST, NOW)
    keys.activate(new.key_id)

    keys.retire(old.key_id)
    publish(central_dir, keys, NOW)
    registry = Registry.open(central_dir)
    try:
        anchor = parse_anchor(
            export_anchor(registry, keys, "http://127.0.0.1:8070", NOW)
        )
    finally:
        registry.close()

    assert published_certs(central_dir, keys) == [new.cert]
    assert anchor.verification_certs() == [new.cert]
    statuses = {i.key_id: i.status for i in ConfSigningKeys.open(central_dir).listing()}
    assert statuses == {
        new.key_id: SigningKeyStatus.ACTIVE,
        old.key_id: SigningKeyStatus.RETIRED,
    }


def test_active_unknown_and_retired_keys_are_refused_with_codes(
    central_dir: Path,
) -> None:
    keys = ConfSigningKeys.open(central_dir)
    old = keys.active()
    new = keys.add(INST, NOW)

    with pytest.raises(SigningKeyInUse) as in_use:
        keys.retire(old.key_id)
    with pytest.raises(UnknownSigningKey) as unknown:
        keys.activate("0123456789abcdef")
    keys.retire(new.key_id)
    with pytest.raises(UnknownSigningKey) as retired:
        keys.activate(new.key_id)

    assert in_use.value.code == "SigningKeyInUse"
    assert unknown.value.code == retired.value.code == "UnknownSigningKey"
    assert keys.active().key_id == old.key_id
    assert keys.verification_certs() == (old.cert,)


def test_running_publisher_follows_a_rotation_made_elsewhere(
    central_dir: Path,
) -> None:
    """A central server holds its keys open; the CLI changes them on disk."""
    running = ConfSigningKeys.open(central_dir)
    other = ConfSigningKeys.open(central_dir)
    new = other.add(INST, NOW)
    other.activate(new.key_id)

    directory = publish(central_dir, running, NOW)

    assert parse_signed_directory(directory, [new.cert]).signer_cert == new.cert
    assert running.active().key_id == new.key_id


def test_signing_key_files_stay_private(central_dir: Path) -> None:
    keys = ConfSigningKeys.open(central_dir)
    new = keys.add(INST, NOW)
    path = central_dir / KEYS_DIR / f"{new.key_id}.key.pem"

    assert path.stat().st_mode & 0o777 == 0o600
    index = json.loads((central_dir / KEYS_DIR / "keys.json").read_text())
    assert index["keys"] == [keys.active().key_id, new.key_id]


# -- the command line ----------------------------------------------------------


def test_cli_rotation_round_trip(central_dir: Path) -> None:
    before = ConfSigningKeys.open(central_dir).active()

    added = xgate("central", "signing-key-add", "--dir", str(central_dir))
    new_id = ConfSigningKeys.open(central_dir).listing()[-1].key_id
    listed = xgate("central", "signing-key-list", "--dir", str(central_dir))
    activated = xgate(
        "central", "signing-key-activate", "--dir", str(central_dir), new_id
    )
    relisted = xgate("central", "signing-key-list", "--dir", str(central_dir))

    assert added.exit_code == 0, added.output
    assert new_id in added.output
    assert f"{before.key_id}\tactive" in listed.output
    assert f"{new_id}\tstandby" in listed.output
    assert activated.exit_code == 0, activated.output
    assert f"{before.key_id}\tstandby" in relisted.output
    assert f"{new_id}\tactive" in relisted.output


def test_cli_activate_unknown_key_is_one_coded_line(central_dir: Path) -> None:
    result = xgate(
        "central", "signing-key-activate", "--dir", str(central_dir), "feedface"
    )

    assert result.exit_code == 1
    assert "[UnknownSigningKey]" in result.output


def issue_auth(central_dir: Path) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "EE"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GOV"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "1001"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    ca = CertificateAuthority.open(central_dir / CA_DIR)
    return ca.issue(csr.public_bytes(serialization.Encoding.PEM), "auth", NOW)


def test_cli_revoke_and_list(central_dir: Path) -> None:
    cert = issue_auth(central_dir)
    serial = f"{cert.serial_number:x}"

    listed = xgate("central", "cert-list", "--dir", str(central_dir))
    revoked = xgate(
        *("central", "cert-revoke", "--dir", str(central_dir), f"0x{serial}"),
        *("--reason", "keyCompromise"),
    )
    relisted = xgate("central", "cert-list", "--dir", str(central_dir))
    record = CertificateAuthority.open(central_dir / CA_DIR).status(cert.serial_number)

    assert f"{serial}\tauth\tgood" in listed.output
    assert revoked.exit_code == 0, revoked.output
    assert record is not None and record.status is OCSPCertStatus.REVOKED
    assert record.reason == "keyCompromise"
    assert f"{serial}\tauth\trevoked" in relisted.output


def test_cli_revoke_refuses_unknown_and_malformed_serials(central_dir: Path) -> None:
    unknown = xgate("central", "cert-revoke", "--dir", str(central_dir), "abc123")
    malformed = xgate("central", "cert-revoke", "--dir", str(central_dir), "xyz")

    assert unknown.exit_code == 1
    assert "[UnknownCertificate]" in unknown.output
    assert malformed.exit_code == 2
    assert "hexadecimal" in malformed.output
