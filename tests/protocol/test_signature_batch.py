"""Tests for protocol.signature.sign_batch: one signature over many messages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from protocol.errors import MalformedSignature, XRoadError
from protocol.hashchain import HASHCHAIN_NS
from protocol.signature import sign_batch, sign_parts, verify_signature

SIGNING_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def make_cert(key) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batch signer")])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(77)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module", params=["rsa", "ec"])
def signer(request: pytest.FixtureRequest):
    if request.param == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key, make_cert(key)


def message_parts(index: int, attachments: int) -> list[tuple[str, bytes]]:
    """Part digests of message ``index``: its body and ``attachments`` more."""
    parts = [("/message.xml", sha512(b"<m>%d</m>" % index))]
    parts += [
        (f"/attachment{n}", sha512(b"attachment %d of %d" % (n, index)))
        for n in range(1, attachments + 1)
    ]
    return parts


def batch(signer, messages):
    key, cert = signer
    return sign_batch(
        messages,
        key=key,
        cert=cert,
        ocsp_responses=[b"ocsp"],
        signing_time=SIGNING_TIME,
    )


def verify(signed, parts):
    return verify_signature(
        signed.signature,
        dict(parts),
        hash_chain_result=signed.hash_chain_result,
        hash_chain=signed.hash_chain,
    )


# Attachment counts per message: plain, with attachments, and mixed batches.
SHAPES = {
    "two-plain": [0, 0],
    "three-plain": [0, 0, 0],
    "five-mixed": [0, 2, 0, 1, 0],
    "four-attachments": [1, 1, 3, 2],
    "seven-mixed": [1, 0, 0, 0, 2, 0, 0],
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_each_message_verifies_with_its_own_parts(signer, shape) -> None:
    messages = [message_parts(i, count) for i, count in enumerate(shape)]

    signed = batch(signer, messages)

    assert len(signed) == len(messages)
    assert len({s.signature for s in signed}) == 1
    assert len({s.hash_chain_result for s in signed}) == 1
    assert len({s.hash_chain for s in signed}) == len(messages)
    for one, parts in zip(signed, messages, strict=True):
        verified = verify(one, parts)
        assert verified.data_reference == "/sig-hashchainresult.xml"
        assert verified.signing_cert == signer[1]


def test_chains_are_multi_level(signer) -> None:
    signed = batch(signer, [message_parts(i, 0) for i in range(4)])

    # Four leaves: two steps, the top one pointing at the next by StepRef.
    chain = signed[0].hash_chain
    assert chain.count(b"HashStep ") == 2
    assert b"StepRef" in chain and HASHCHAIN_NS.encode() in chain


@pytest.mark.parametrize("attachments", [0, 2], ids=["plain", "attachments"])
def test_a_batch_of_one_is_signed_as_today(attachments) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = (key, make_cert(key))  # RSA PKCS#1 v1.5 is deterministic
    parts = message_parts(0, attachments)

    [signed] = batch(signer, [parts])

    expected = sign_parts(
        parts,
        key=key,
        cert=signer[1],
        ocsp_responses=[b"ocsp"],
        signing_time=SIGNING_TIME,
    )
    assert signed == expected


@pytest.mark.parametrize("shape", [[0, 0, 0], [2, 0, 1]], ids=["plain", "mixed"])
def test_tampering_one_message_fails_only_that_one(signer, shape) -> None:
    messages = [message_parts(i, count) for i, count in enumerate(shape)]
    signed = batch(signer, messages)
    tampered = [("/message.xml", sha512(b"<m>forged</m>"))] + messages[1][1:]

    with pytest.raises(XRoadError) as excinfo:
        verify(signed[1], tampered)

    assert excinfo.value.code == MalformedSignature.code
    assert excinfo.value.detail == "InvalidHashChain"
    for index in (0, 2):
        assert verify(signed[index], messages[index]).signing_cert == signer[1]


def test_a_chain_does_not_fit_another_message(signer) -> None:
    messages = [message_parts(i, 0) for i in range(3)]
    signed = batch(signer, messages)

    with pytest.raises(MalformedSignature):
        verify(signed[0], messages[1])


def test_an_attachment_left_out_of_the_chain_is_refused(signer) -> None:
    messages = [message_parts(0, 1), message_parts(1, 0)]
    signed = batch(signer, messages)
    extra = messages[1] + [("/attachment1", sha512(b"smuggled"))]

    with pytest.raises(MalformedSignature) as excinfo:
        verify(signed[1], extra)

    assert excinfo.value.detail == "HashChainUnusedInputs"


def test_an_empty_or_misordered_batch_is_refused(signer) -> None:
    with pytest.raises(MalformedSignature):
        batch(signer, [])
    with pytest.raises(MalformedSignature):
        batch(signer, [message_parts(0, 0), [("/attachment1", sha512(b"x"))]])
