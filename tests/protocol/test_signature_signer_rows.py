"""MANIFEST.tsv signature rows that judge the signer's identity (the trust layer)."""

from __future__ import annotations

import csv
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from protocol import pki
from protocol.digests import sha512
from protocol.errors import SignatureVerificationError, codes_equal
from protocol.globalconf import ApprovedCA, GlobalConf
from protocol.identifiers import ClientId
from protocol.trust import SignedParts, verify_message_signature
from security_server.confclient import load_conf_dir

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "xroad"
# The rows' validation date: 2014-10-30, before the test PKI expired.
AT = datetime(2014, 10, 30, tzinfo=UTC)


def signer_rows() -> list[dict[str, str]]:
    manifest = FIXTURES / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        r
        for r in rows
        if r["topic"] == "signature"
        and r["expected_error"].startswith("incorrect_certificate")
    ]


def conf_with_test_ca() -> GlobalConf:
    """globalconf_good_v4 with the EE CA lookup pointed at root-ca.p12, as the row says."""
    conf = load_conf_dir(FIXTURES / "globalconf" / "dirs" / "globalconf_good_v4")
    p12 = (FIXTURES / "certs" / "common-test" / "root-ca.p12").read_bytes()
    _, root, _ = pkcs12.load_key_and_certificates(p12, b"test")
    assert root is not None
    approved = ApprovedCA(
        name="root", top_ca=root, intermediates=(), ocsp=(), profile=pki.TEST_PROFILE
    )
    shared = dataclasses.replace(conf.shared["EE"], approved_cas=(approved,))
    return dataclasses.replace(conf, shared={**conf.shared, "EE": shared})


@pytest.mark.parametrize("row", signer_rows(), ids=lambda r: r["expected_error"][:40])
def test_signature_of_another_member_is_an_incorrect_certificate(
    row: dict[str, str],
) -> None:
    claimed = row["expected_error"].split("claimed signer ")[1].split()[0]
    signer = ClientId(*claimed.split("/"))
    folder = FIXTURES / "signatures"
    parts = SignedParts(
        (folder / Path(row["path"]).name).read_bytes(),
        {"/message.xml": sha512((folder / "message-0.xml").read_bytes())},
    )

    with pytest.raises(SignatureVerificationError) as caught:
        verify_message_signature(
            parts, signer=signer, global_conf=conf_with_test_ca(), at=AT
        )

    assert caught.value.detail is not None
    assert codes_equal(caught.value.detail, row["expected_error"].split()[0])


def test_the_row_table_is_not_empty() -> None:
    if not (FIXTURES / "MANIFEST.tsv").is_file():
        pytest.skip("X-Road fixtures are not available")
    assert signer_rows()
