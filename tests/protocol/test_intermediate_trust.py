"""Intermediate CAs in the trust decisions (certificates-ocsp.md §1, §6), sans-io.

A top CA certifies an intermediate CA, which issues the member's signing
certificate. Peers anchor at the known CA cert that issued the end entity (the
intermediate); a stricter verifier anchoring at the top CA needs the embedded
intermediate and its OCSP response, which the signer therefore includes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from protocol import ocsp, pki
from protocol.digests import digest
from protocol.errors import SignatureVerificationError
from protocol.globalconf import (
    ApprovedCA,
    GlobalConf,
    Member,
    OCSPInfo,
    SharedParameters,
    build_shared_params,
    parse_shared_params,
)
from protocol.identifiers import ClientId
from protocol.signature import sign_parts
from protocol.trust import SignedParts, verify_message_signature

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
START = NOW - timedelta(days=30)
INSTANCE = "INST"
MEMBER = ClientId(INSTANCE, "GOV", "1234")
MESSAGE = b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"/>'
PARTS = {"/message.xml": digest(MESSAGE)}


@dataclass(frozen=True)
class Chain:
    top_key: object
    top: x509.Certificate
    top_responder_key: object
    top_responder: x509.Certificate
    int_key: object
    intermediate: x509.Certificate
    int_responder_key: object
    int_responder: x509.Certificate
    leaf_key: object
    leaf: x509.Certificate


@pytest.fixture(scope="module")
def chain() -> Chain:
    top_key = pki.generate_key()
    top = pki.build_ca("External Top CA", top_key, START, 3650)
    top_responder_key = pki.generate_key()
    top_responder = pki.build_ocsp_signer_cert(
        top_key, top, top_responder_key, START, 365
    )
    int_key = pki.generate_key()
    intermediate = pki.build_intermediate_ca(
        "External Issuing CA", int_key, top_key, top, START, 1825
    )
    int_responder_key = pki.generate_key()
    int_responder = pki.build_ocsp_signer_cert(
        int_key, intermediate, int_responder_key, START, 365
    )
    leaf_key = pki.generate_key()
    csr = pki.build_csr(leaf_key, pki.sign_subject(MEMBER))
    leaf = pki.issue_certificate(csr, "sign", int_key, intermediate, 77, START, 365)
    return Chain(
        top_key,
        top,
        top_responder_key,
        top_responder,
        int_key,
        intermediate,
        int_responder_key,
        int_responder,
        leaf_key,
        leaf,
    )


def _approved(chain: Chain, *, with_intermediate: bool = True) -> ApprovedCA:
    return ApprovedCA(
        "External",
        chain.top,
        (chain.intermediate,) if with_intermediate else (),
        (OCSPInfo("http://ocsp.top.example", chain.top_responder),),
        pki.EJBCA_PROFILE,
        intermediate_ocsp=(
            ((OCSPInfo("http://ocsp.int.example", chain.int_responder),),)
            if with_intermediate
            else ()
        ),
    )


def _conf(approved: ApprovedCA) -> GlobalConf:
    shared = SharedParameters(
        instance=INSTANCE,
        sources=(),
        approved_cas=(approved,),
        approved_tsas=(),
        members=(Member(MEMBER, "Tax Office"),),
        security_servers=(),
        global_groups=(),
        member_classes=(("GOV", "Government"),),
        ocsp_freshness_seconds=600,
    )
    return GlobalConf(INSTANCE, None, {INSTANCE: shared}, NOW + timedelta(hours=1))


def _leaf_ocsp(chain: Chain) -> bytes:
    return ocsp.build_ocsp_response(
        issuer=chain.intermediate,
        cert=chain.leaf,
        status="good",
        this_update=NOW,
        responder_key=chain.int_responder_key,
        responder_cert=chain.int_responder,
    )


def _intermediate_ocsp(chain: Chain) -> bytes:
    return ocsp.build_ocsp_response(
        issuer=chain.top,
        cert=chain.intermediate,
        status="good",
        this_update=NOW,
        responder_key=chain.top_responder_key,
        responder_cert=chain.top_responder,
    )


def _signed(chain: Chain, *, embed: bool = True) -> SignedParts:
    responses = [_leaf_ocsp(chain)]
    if embed:
        responses.append(_intermediate_ocsp(chain))
    signed = sign_parts(
        list(PARTS.items()),
        key=chain.leaf_key,  # type: ignore[arg-type]
        cert=chain.leaf,
        ocsp_responses=responses,
        signing_time=NOW,
        extra_certs=[chain.intermediate] if embed else (),
    )
    return SignedParts(signed.signature, PARTS)


def test_intermediate_ca_cert_is_a_ca_below_the_top(chain: Chain) -> None:
    assert pki.find_issuer(chain.intermediate, [chain.top]) == chain.top
    constraints = chain.intermediate.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value
    assert constraints.ca and constraints.path_length == 0
    path = pki.build_cert_path(chain.leaf, [chain.intermediate], [chain.top])
    assert path == [chain.leaf, chain.intermediate, chain.top]


def test_peer_anchors_at_the_intermediate_that_issued_the_signer(
    chain: Chain,
) -> None:
    verified = verify_message_signature(
        _signed(chain), signer=MEMBER, global_conf=_conf(_approved(chain)), at=NOW
    )
    assert verified.signing_cert == chain.leaf
    assert verified.extra_certs == [chain.intermediate]
    assert len(verified.ocsp_responses) == 2


def test_embedded_intermediate_lets_a_top_anchored_verifier_validate(
    chain: Chain,
) -> None:
    verified = verify_message_signature(
        _signed(chain), signer=MEMBER, global_conf=_conf(_approved(chain)), at=NOW
    )
    results = pki.verify_cert_path(
        verified.signing_cert,
        verified.extra_certs,
        anchors=[chain.top],
        ocsp_responses=verified.ocsp_responses,
        at=NOW,
        freshness_seconds=600,
        ocsp_responder_certs=[chain.top_responder, chain.int_responder],
    )
    assert [r.cert for r in results] == [chain.leaf, chain.intermediate]


def test_top_anchored_verifier_needs_the_intermediate_ocsp(chain: Chain) -> None:
    with pytest.raises(pki.InvalidCertPath) as info:
        pki.verify_cert_path(
            chain.leaf,
            [chain.intermediate],
            anchors=[chain.top],
            ocsp_responses=[_leaf_ocsp(chain)],
            at=NOW,
            freshness_seconds=600,
        )
    assert info.value.code == "InvalidCertPath"


def test_signer_from_unlisted_intermediate_is_not_approved(chain: Chain) -> None:
    conf = _conf(_approved(chain, with_intermediate=False))
    with pytest.raises(SignatureVerificationError) as info:
        verify_message_signature(
            _signed(chain), signer=MEMBER, global_conf=conf, at=NOW
        )
    assert info.value.detail == "CertValidation"
    assert "not issued by approved" in info.value.message


def test_intermediates_and_their_ocsp_survive_shared_params(chain: Chain) -> None:
    conf = _conf(_approved(chain))
    parsed = parse_shared_params(build_shared_params(conf.shared[INSTANCE]))
    (approved,) = parsed.approved_cas
    assert approved.intermediates == (chain.intermediate,)
    assert [i.url for i in approved.ocsp_for(chain.intermediate)] == [
        "http://ocsp.int.example"
    ]
    assert approved.ocsp_for(chain.top)[0].url == "http://ocsp.top.example"
