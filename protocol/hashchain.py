"""Core: X-Road hash chains (transport.md §7.3, message-log.md §4).

A hash chain proves that a digest belongs to a signed or time-stamped tree
top. Each ``HashStep`` lists digests; its value is the digest of the DER
encoding of that list (a ``DigestList`` of ``SingleDigest``). A
``HashChainResult`` names the top step and carries the expected value.

How verification works here: the chain is evaluated with every caller-given
input digest substituted for the matching ``DataRef``; the top must equal the
result (else ``InvalidHashChain``). Only then are the ``DataRef`` values
written in the chain compared with the inputs (``InvalidHashChainRef``), and
every input must have been referenced (``HashChainUnusedInputs``).
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from asn1crypto import core
from lxml import etree

from .digests import DIGEST_URIS, SHA512_URI, b64, digest, unb64
from .errors import (
    ClientRequestError,
    HashChainError,
    HashChainUnusedInputs,
    InvalidHashChainRef,
)
from .xml import parse_xml

HASHCHAIN_NS = "http://cyber.ee/hashchain"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"

SIG_HASH_CHAIN = "/sig-hashchain.xml"
SIG_HASH_CHAIN_RESULT = "/sig-hashchainresult.xml"
MESSAGE = "/message.xml"

# Canonicalisation transforms accepted on a DataRef: URI -> (exclusive, comments).
C14N_TRANSFORMS = {
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315": (False, False),
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments": (False, True),
    "http://www.w3.org/2001/10/xml-exc-c14n#": (True, False),
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": (True, True),
}

_HC = "{" + HASHCHAIN_NS + "}"
_DS = "{" + DS_NS + "}"
_NSMAP = {"hc": HASHCHAIN_NS, "ds": DS_NS}
_XML_DECL = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


class Transforms(core.SequenceOf):
    """Always empty in X-Road, even when the DataRef has XML transforms."""

    _child_spec = core.UTF8String


class SingleDigest(core.Sequence):
    _fields = [
        ("digest", core.OctetString),
        ("method", core.UTF8String),
        ("transforms", Transforms),
    ]


class DigestList(core.SequenceOf):
    _child_spec = SingleDigest


@dataclass(frozen=True, slots=True)
class HashChainFiles:
    """The two documents of a hash-chain signature, as bytes to ship."""

    result: bytes
    chain: bytes


@dataclass(frozen=True, slots=True)
class BatchChains:
    """One shared result document and one chain document per leaf."""

    result: bytes
    chains: list[bytes]


@dataclass(frozen=True, slots=True)
class DataRefReport:
    """A DataRef met during verification.

    ``verified`` is False when no input was given for ``uri``: its digest was
    then taken at face value from the chain.
    """

    uri: str
    digest: bytes
    verified: bool


def encode_digest_list(digests: Sequence[bytes], method_uri: str = SHA512_URI) -> bytes:
    """DER-encode a step: one SingleDigest per value, all with ``method_uri``."""
    return _encode_entries([(value, method_uri) for value in digests])


def step_digest(digests: Sequence[bytes], method_uri: str = SHA512_URI) -> bytes:
    """Return H(DER(DigestList)) of the given digests, H named by ``method_uri``."""
    return digest(encode_digest_list(digests, method_uri), method_uri)


def _encode_entries(entries: Sequence[tuple[bytes, str]]) -> bytes:
    items = [
        SingleDigest({"digest": value, "method": method, "transforms": []})
        for value, method in entries
    ]
    return bytes(DigestList(items).dump())


# -- building -----------------------------------------------------------------


def build_message_chain(
    part_digests: list[tuple[str, bytes]],
    method_uri: str = SHA512_URI,
    *,
    chain_uri: str = SIG_HASH_CHAIN,
) -> HashChainFiles:
    """Build the one-step chain of a message with attachments (transport.md §7.3).

    :param part_digests: ``(name, digest)`` pairs in part order, starting with
        ``/message.xml``; each digest is H(raw part bytes) with ``method_uri``.
    """
    if not part_digests:
        raise HashChainError("a hash chain needs at least one part digest")

    step = _step_element("STEP0")
    for name, value in part_digests:
        step.append(_data_ref(name, value))
    top = step_digest([value for _, value in part_digests], method_uri)
    return HashChainFiles(
        result=_result_document(chain_uri + "#STEP0", top, method_uri),
        chain=_chain_document([step], method_uri),
    )


Leaf = bytes | Sequence[tuple[str, bytes]]


def build_batch_chains(
    leaves: list[Leaf],
    data_ref_uri: str,
    result_uri: str,
    method_uri: str = SHA512_URI,
) -> BatchChains:
    """Build the Merkle tree of message-log.md §4 and one chain per leaf.

    :param leaves: a leaf is either a digest (referenced as ``data_ref_uri``)
        or a multi-part message given as ``(name, digest)`` pairs, which
        becomes the leaf H(DL(parts)) plus a final step of DataRefs.
    :param result_uri: the ``URI`` of the result, e.g. ``/ts-hashchain.xml#STEP0``.
    """
    if not leaves:
        raise HashChainError("a batch hash chain needs at least one leaf")
    if len(leaves) == 1 and isinstance(leaves[0], bytes | bytearray):
        raise HashChainError("a batch of one is only allowed for a multi-part leaf")

    tree = _MerkleTree([_leaf_value(leaf, method_uri) for leaf in leaves], method_uri)
    chains = [
        _chain_document(_leaf_steps(tree, i, leaves[i], data_ref_uri), method_uri)
        for i in range(len(leaves))
    ]
    return BatchChains(
        result=_result_document(result_uri, tree.root(), method_uri), chains=chains
    )


def _leaf_value(leaf: Leaf, method_uri: str) -> bytes:
    if isinstance(leaf, bytes | bytearray):
        return bytes(leaf)
    return step_digest([value for _, value in leaf], method_uri)


class _MerkleTree:
    """The array tree of message-log.md §4: slot k has children 2k+1, 2k+2.

    A node is *set* when both of its subtrees hold a value; an internal node
    whose right subtree is empty is left unset and inherits its left value.
    """

    def __init__(self, leaves: list[bytes], method_uri: str) -> None:
        self.method_uri = method_uri
        self.leaf_count = len(leaves)
        height = math.ceil(math.log2(len(leaves))) if len(leaves) > 1 else 0
        self.first_leaf = 2**height - 1
        self.slots: list[bytes | None] = [None] * self.first_leaf + list(leaves)
        self.slots += [None] * (2 * self.first_leaf + 1 - len(self.slots))
        self._resolve(0)

    def _resolve(self, k: int) -> bytes | None:
        if k >= len(self.slots):
            return None
        if k >= self.first_leaf or self.slots[k] is not None:
            return self.slots[k]
        left = self._resolve(2 * k + 1)
        right = self._resolve(2 * k + 2)
        if left is None or right is None:
            return left  # inherited from the left child, not stored
        self.slots[k] = step_digest([left, right], self.method_uri)
        return self.slots[k]

    def value(self, k: int) -> bytes:
        found = self._resolve(k)
        if found is None:  # pragma: no cover - callers only ask for filled subtrees
            raise HashChainError(f"empty subtree at slot {k}")
        return found

    def root(self) -> bytes:
        return self.value(0)

    def is_set(self, k: int) -> bool:
        return k < self.first_leaf and self.slots[k] is not None

    def path(self, index: int) -> list[int]:
        """Slots from the root down to leaf ``index``."""
        slot = self.first_leaf + index
        nodes = [slot]
        while slot > 0:
            slot = (slot - 1) // 2
            nodes.append(slot)
        return nodes[::-1]


def _leaf_steps(
    tree: _MerkleTree, index: int, leaf: Leaf, data_ref_uri: str
) -> list[etree._Element]:
    multi_part = not isinstance(leaf, bytes | bytearray)
    path = tree.path(index)
    set_nodes = [k for k in path[:-1] if tree.is_set(k)]
    steps: list[etree._Element] = []

    for number, k in enumerate(set_nodes):
        step = _step_element(f"STEP{number}")
        own_is_leaf = number == len(set_nodes) - 1
        own = path[path.index(k) + 1]
        for child in (2 * k + 1, 2 * k + 2):
            if child != own:
                step.append(_hash_value(tree.value(child)))
            elif own_is_leaf and not multi_part:
                step.append(_data_ref(data_ref_uri, tree.value(path[-1])))
            else:
                step.append(_step_ref(f"#STEP{number + 1}"))
        steps.append(step)

    if not isinstance(leaf, bytes | bytearray):
        final = _step_element(f"STEP{len(steps)}")
        for name, value in leaf:
            final.append(_data_ref(name, value))
        steps.append(final)
    return steps


def _step_element(step_id: str) -> etree._Element:
    return etree.Element(_HC + "HashStep", {"id": step_id}, nsmap=_NSMAP)


def _digest_value(parent: etree._Element, value: bytes) -> None:
    etree.SubElement(parent, _DS + "DigestValue").text = b64(value)


def _data_ref(uri: str, value: bytes) -> etree._Element:
    element = etree.Element(_HC + "DataRef", {"URI": uri}, nsmap=_NSMAP)
    _digest_value(element, value)
    return element


def _hash_value(value: bytes) -> etree._Element:
    element = etree.Element(_HC + "HashValue", nsmap=_NSMAP)
    _digest_value(element, value)
    return element


def _step_ref(uri: str) -> etree._Element:
    return etree.Element(_HC + "StepRef", {"URI": uri}, nsmap=_NSMAP)


def _chain_document(steps: list[etree._Element], method_uri: str) -> bytes:
    root = etree.Element(_HC + "HashChain", nsmap=_NSMAP)
    etree.SubElement(root, _HC + "DefaultDigestMethod", {"Algorithm": method_uri})
    root.extend(steps)
    return _XML_DECL + bytes(etree.tostring(root))


def _result_document(uri: str, top: bytes, method_uri: str) -> bytes:
    root = etree.Element(_HC + "HashChainResult", {"URI": uri}, nsmap=_NSMAP)
    etree.SubElement(root, _DS + "DigestMethod", {"Algorithm": method_uri})
    _digest_value(root, top)
    return _XML_DECL + bytes(etree.tostring(root))


# -- verifying ------------------------------------------------------------------


def verify_hash_chain(
    result_xml: bytes,
    resolve_chain: Callable[[str], bytes],
    inputs: Mapping[str, bytes],
    method_default: str = SHA512_URI,
    *,
    data: Mapping[str, bytes] | None = None,
) -> list[DataRefReport]:
    """Check that a hash chain leads from its inputs to the result's digest.

    :param resolve_chain: returns the bytes of a chain file given its URI
        without fragment (e.g. ``/sig-hashchain.xml``); may raise ``KeyError``.
    :param inputs: data URI -> digest already computed by the caller, with the
        digest method of the DataRef that names it.
    :param data: data URI -> raw bytes; the digest is computed here, after the
        DataRef's canonicalisation transforms if it has any.
    :param method_default: digest method when the documents name none.
    :raises HashChainError: ``InvalidHashChain`` when the top does not match,
        ``InvalidHashChainRef`` for a bad reference or DataRef digest,
        ``HashChainUnusedInputs`` when an input is never referenced.
    """
    result = _parse_root(result_xml, "HashChainResult")
    uri = result.get("URI")
    if not uri or "#" not in uri:
        raise InvalidHashChainRef(f"hash chain result URI {uri!r} names no step")
    method = _method_of(result, _DS + "DigestMethod", method_default)
    expected = _required_digest(result)

    walker = _ChainWalker(resolve_chain, inputs, data or {}, method_default)
    chain_file, step_id = uri.split("#", 1)
    top = digest(walker.step_der(chain_file, step_id), method)
    if top != expected:
        raise HashChainError("hash chain does not lead to the digest in its result")

    walker.check_references()
    unused = walker.unused()
    if unused:
        raise HashChainUnusedInputs(f"hash chain leaves inputs unused: {unused!r}")
    return walker.reports


class _ChainWalker:
    """Evaluates steps across chain files, remembering what it used."""

    def __init__(
        self,
        resolve_chain: Callable[[str], bytes],
        inputs: Mapping[str, bytes],
        data: Mapping[str, bytes],
        method_default: str,
    ) -> None:
        self.resolve_chain = resolve_chain
        self.inputs = inputs
        self.data = data
        self.method_default = method_default
        self.documents: dict[str, tuple[dict[str, etree._Element], str]] = {}
        self.active: set[tuple[str, str]] = set()
        self.used: set[str] = set()
        self.mismatches: list[str] = []
        self.reports: list[DataRefReport] = []

    def step_der(self, chain_file: str, step_id: str) -> bytes:
        steps, default = self._document(chain_file)
        step = steps.get(step_id)
        if step is None:
            raise InvalidHashChainRef(f"no hash step {step_id!r} in {chain_file!r}")
        key = (chain_file, step_id)
        if key in self.active:
            raise HashChainError(f"hash chain loops through {chain_file}#{step_id}")

        self.active.add(key)
        entries = [self._entry(item, chain_file, default) for item in step]
        self.active.discard(key)
        if not entries:
            raise HashChainError(f"hash step {step_id!r} is empty")
        return _encode_entries(entries)

    def _document(self, chain_file: str) -> tuple[dict[str, etree._Element], str]:
        if chain_file not in self.documents:
            try:
                raw = self.resolve_chain(chain_file)
            except (KeyError, LookupError) as exc:
                raise InvalidHashChainRef(
                    f"hash chain file {chain_file!r} cannot be resolved"
                ) from exc
            root = _parse_root(raw, "HashChain")
            default = _method_of(root, _HC + "DefaultDigestMethod", self.method_default)
            steps: dict[str, etree._Element] = {}
            for step in root.iterchildren(_HC + "HashStep"):
                step_id = step.get("id")
                if not step_id or step_id in steps:
                    raise HashChainError(
                        f"hash step id {step_id!r} missing or repeated"
                    )
                steps[step_id] = step
            self.documents[chain_file] = (steps, default)
        return self.documents[chain_file]

    def _entry(
        self, item: etree._Element, chain_file: str, default: str
    ) -> tuple[bytes, str]:
        method = _method_of(item, _DS + "DigestMethod", default)
        if item.tag == _HC + "HashValue":
            return _required_digest(item), method
        if item.tag == _HC + "StepRef":
            target_file, step_id = _split_step_uri(item.get("URI"), chain_file)
            return digest(self.step_der(target_file, step_id), method), method
        if item.tag == _HC + "DataRef":
            return self._data_ref(item, method), method
        if not isinstance(item.tag, str):  # comments and processing instructions
            raise HashChainError("unexpected non-element content in a hash step")
        raise HashChainError(f"unexpected element {item.tag!r} in a hash step")

    def _data_ref(self, item: etree._Element, method: str) -> bytes:
        uri = item.get("URI")
        if not uri:
            raise InvalidHashChainRef("DataRef without URI")
        written = _required_digest(item)
        transforms = _transforms_of(item)

        if uri in self.data:
            actual = digest(_apply_transforms(self.data[uri], transforms), method)
        elif uri in self.inputs:
            if transforms:
                raise HashChainError(
                    f"DataRef {uri!r} has transforms; its raw data is needed, "
                    "a precomputed digest is not supported"
                )
            actual = self.inputs[uri]
        else:
            self.reports.append(DataRefReport(uri, written, verified=False))
            return written

        self.used.add(uri)
        if actual != written:
            self.mismatches.append(uri)
        self.reports.append(DataRefReport(uri, actual, verified=True))
        return actual

    def check_references(self) -> None:
        if self.mismatches:
            raise InvalidHashChainRef(
                f"DataRef digest differs from the input for {self.mismatches[0]!r}"
            )

    def unused(self) -> list[str]:
        return sorted((set(self.inputs) | set(self.data)) - self.used)


def _parse_root(raw: bytes, local_name: str) -> etree._Element:
    try:
        root = parse_xml(raw)
    except ClientRequestError as exc:
        raise HashChainError(f"hash chain document is not XML: {exc}") from exc
    if root.tag != _HC + local_name:
        raise HashChainError(f"expected hashchain {local_name}, found {root.tag!r}")
    return root


def _method_of(element: etree._Element, tag: str, default: str) -> str:
    found = element.find(tag)
    if found is None:
        return default
    method = found.get("Algorithm", "")
    if method not in DIGEST_URIS:
        raise HashChainError(f"unsupported digest method {method!r}")
    return str(method)


def _required_digest(element: etree._Element) -> bytes:
    found = element.find(_DS + "DigestValue")
    if found is None:
        raise HashChainError(f"{etree.QName(element).localname} has no DigestValue")
    try:
        return unb64(found.text or "")
    except (ClientRequestError, binascii.Error) as exc:
        raise HashChainError("DigestValue is not base64") from exc


def _split_step_uri(uri: str | None, current_file: str) -> tuple[str, str]:
    if not uri or "#" not in uri:
        raise InvalidHashChainRef(f"StepRef URI {uri!r} names no step")
    chain_file, step_id = uri.split("#", 1)
    return chain_file or current_file, step_id


def _transforms_of(item: etree._Element) -> list[str]:
    container = item.find(_DS + "Transforms")
    if container is None:
        return []
    algorithms = [
        t.get("Algorithm", "") for t in container.iterchildren(_DS + "Transform")
    ]
    for algorithm in algorithms:
        if algorithm not in C14N_TRANSFORMS:
            raise HashChainError(f"DataRef transform {algorithm!r} is not supported")
    return algorithms


def _apply_transforms(raw: bytes, transforms: list[str]) -> bytes:
    """Canonicalise XML data as the DataRef's transforms say (LIBRARIES.md §2)."""
    result = raw
    for algorithm in transforms:
        exclusive, comments = C14N_TRANSFORMS[algorithm]
        try:
            root = parse_xml(result)
        except ClientRequestError as exc:
            raise HashChainError(f"transformed DataRef data is not XML: {exc}") from exc
        result = etree.tostring(
            root.getroottree(),
            method="c14n",
            exclusive=exclusive,
            with_comments=comments,
        )
    return result
