"""Core: the error tree and its stable X-Road fault codes (soap-message.md §10).

Every error raised on purpose is an :class:`XRoadError`. The core raises bare
codes (``InvalidXml``, ``SignatureVerification.InvalidSignatureValue``); the
adapter that turns an error into a fault adds the origin prefix once
(``Client``, ``Server.ClientProxy``, ``Server.ServerProxy``)::

    XRoadError                       code
    ├── ClientRequestError           (bad input from an information system)
    │   ├── InvalidXml               InvalidXml
    │   ├── InvalidSoap              InvalidSoap
    │   ├── MissingHeader            MissingHeader
    │   ├── MissingHeaderField       MissingHeaderField
    │   ├── DuplicateHeaderField     DuplicateHeaderField
    │   ├── InvalidProtocolVersion   InvalidProtocolVersion
    │   ├── MissingBody / InvalidBody / InconsistentHeaders
    │   ├── InvalidContentType       InvalidContentType
    │   ├── MimeParsingFailed        MimeParsingFailed
    │   ├── InvalidSoapAction        InvalidSoapAction
    │   ├── InvalidHttpMethod        InvalidHttpMethod
    │   ├── InvalidRequest           InvalidRequest
    │   ├── BadRequest               BadRequest
    │   └── MissingSoap / MissingRest / MissingSignature
    ├── RoutingError
    │   ├── UnknownMember            UnknownMember
    │   ├── UnknownService           UnknownService
    │   ├── ServiceType              ServiceType
    │   ├── InvalidClientIdentifier  InvalidClientIdentifier
    │   └── InvalidSecurityServer    InvalidSecurityServer
    ├── AccessDenied                 AccessDenied
    ├── GlobalConfError              MalformedGlobalConf
    │   └── OutdatedGlobalConf       OutdatedGlobalConf
    ├── SslAuthenticationFailed      SslAuthenticationFailed
    ├── TransportError
    │   ├── NetworkError             NetworkError
    │   ├── XRoadIOError             IOError
    │   └── HttpError                HttpError
    ├── InconsistentResponse         InconsistentResponse
    ├── SignatureVerificationError   SignatureVerification.<detail>
    ├── CertificateError             CertValidation (and others, see class)
    ├── HashChainError               InvalidHashChain (and others)
    ├── TimestampError               TimestamperFailed
    ├── LoggingFailed                LoggingFailed.<detail>
    ├── InternalError                InternalError
    ├── ServiceFailed                ServiceFailed.<code of the failure>
    └── RemoteFault                  any code, already prefixed by the peer

A code is part of our API: it is never renamed, and a retired one stays here.
"""

from __future__ import annotations

from typing import ClassVar

CLIENT = "Client"
CLIENT_PROXY = "Server.ClientProxy"
SERVER_PROXY = "Server.ServerProxy"


class XRoadError(Exception):
    """An error with a stable X-Road code; ``str(err)`` is the human message."""

    code: ClassVar[str] = "InternalError"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # An optional sub-code appended to the class code, e.g.
        # SignatureVerification + InvalidSignatureValue.
        self.detail = detail

    @property
    def full_code(self) -> str:
        """The code without origin prefix, sub-code included."""
        return f"{self.code}.{self.detail}" if self.detail else self.code

    def fault_code(self, prefix: str) -> str:
        """The code as sent to a client: ``prefix.code[.detail]``."""
        return f"{prefix}.{self.full_code}"


class ClientRequestError(XRoadError, ValueError):
    """The information system sent something this protocol does not allow."""

    code = "InvalidRequest"


class InvalidXml(ClientRequestError):
    code = "InvalidXml"


class InvalidSoap(ClientRequestError):
    code = "InvalidSoap"


class MissingHeader(ClientRequestError):
    code = "MissingHeader"


class MissingHeaderField(ClientRequestError):
    code = "MissingHeaderField"


class DuplicateHeaderField(ClientRequestError):
    code = "DuplicateHeaderField"


class InvalidProtocolVersion(ClientRequestError):
    code = "InvalidProtocolVersion"


class MissingBody(ClientRequestError):
    code = "MissingBody"


class InvalidBody(ClientRequestError):
    code = "InvalidBody"


class InconsistentHeaders(ClientRequestError):
    code = "InconsistentHeaders"


class InvalidContentType(ClientRequestError):
    code = "InvalidContentType"


class MimeParsingFailed(ClientRequestError):
    code = "MimeParsingFailed"


class InvalidSoapAction(ClientRequestError):
    code = "InvalidSoapAction"


class InvalidHttpMethod(ClientRequestError):
    code = "InvalidHttpMethod"


class InvalidRequest(ClientRequestError):
    code = "InvalidRequest"


class BadRequest(ClientRequestError):
    code = "BadRequest"


class MissingSoap(ClientRequestError):
    code = "MissingSoap"


class MissingRest(ClientRequestError):
    code = "MissingRest"


class MissingSignature(ClientRequestError):
    code = "MissingSignature"


class InvalidMessage(ClientRequestError):
    code = "InvalidMessage"


class RequestTooLarge(ClientRequestError):
    code = "RequestTooLarge"


class RoutingError(XRoadError):
    code = "UnknownMember"


class UnknownMember(RoutingError):
    code = "UnknownMember"


class UnknownService(RoutingError):
    code = "UnknownService"


class ServiceType(RoutingError):
    code = "ServiceType"


class InvalidClientIdentifier(RoutingError):
    code = "InvalidClientIdentifier"


class InvalidSecurityServer(RoutingError):
    code = "InvalidSecurityServer"


class ServiceMissingUrl(RoutingError):
    code = "ServiceMissingUrl"


class AccessDenied(XRoadError):
    code = "AccessDenied"


class GlobalConfError(XRoadError):
    code = "MalformedGlobalConf"


class OutdatedGlobalConf(GlobalConfError):
    code = "OutdatedGlobalConf"  # the verified snapshot is past its Expire-date


class InvalidSignatureOnConf(GlobalConfError):
    code = "InvalidSignature"


class SslAuthenticationFailed(XRoadError):
    code = "SslAuthenticationFailed"


class TransportError(XRoadError):
    code = "NetworkError"


class NetworkError(TransportError):
    code = "NetworkError"


class XRoadIOError(TransportError):
    code = "IOError"


class HttpError(TransportError):
    code = "HttpError"


class InconsistentResponse(XRoadError):
    code = "InconsistentResponse"


class SignatureVerificationError(XRoadError):
    """A message signature failed to verify; ``detail`` says which check."""

    code = "SignatureVerification"


class MalformedSignature(XRoadError):
    code = "MalformedSignature"


class InvalidSignatureValue(XRoadError):
    code = "InvalidSignatureValue"


class IncorrectCertificate(XRoadError):
    code = "IncorrectCertificate"


class CertificateError(XRoadError):
    """A certificate or its OCSP evidence is not acceptable."""

    code = "CertValidation"


class IncorrectValidationInfo(CertificateError):
    code = "IncorrectValidationInfo"  # OCSP response unusable (certificates-ocsp.md §5)


class CertNotApproved(CertificateError):
    code = "InternalError"  # X-Road reports an unknown issuer as an internal error


class HashChainError(XRoadError):
    code = "InvalidHashChain"


class InvalidHashChainRef(HashChainError):
    code = "InvalidHashChainRef"


class HashChainUnusedInputs(HashChainError):
    code = "HashChainUnusedInputs"


class TimestampError(XRoadError):
    code = "TimestamperFailed"


class LoggingFailed(XRoadError):
    code = "LoggingFailed"


class InternalError(XRoadError):
    code = "InternalError"


class DatabaseError(XRoadError):
    code = "DatabaseError"


class ServiceFailed(XRoadError):
    """The other side failed; ``detail`` carries the code of what went wrong."""

    code = "ServiceFailed"

    @classmethod
    def wrap(cls, err: XRoadError) -> ServiceFailed:
        wrapped = cls(err.message, detail=err.full_code)
        wrapped.__cause__ = err
        return wrapped


class RemoteFault(XRoadError):
    """A fault produced by a peer; its code already carries the origin prefix."""

    code = "RemoteFault"

    def __init__(self, fault_code: str, message: str, detail_id: str = "") -> None:
        super().__init__(message)
        self.remote_code = fault_code
        self.detail_id = detail_id

    @property
    def full_code(self) -> str:
        return self.remote_code

    def fault_code(self, prefix: str) -> str:
        return self.remote_code


def normalize_code(code: str) -> str:
    """Fold a fault code for comparison: X-Road 7.8+ writes snake case.

    ``Server.ClientProxy.SslAuthenticationFailed`` and
    ``server.clientproxy.ssl_authentication_failed`` fold to the same string;
    the one reworded code (``OutdatedGlobalConf``) is mapped explicitly.
    """
    folded = code.lower().replace("_", "")
    return folded.replace("globalconfoutdated", "outdatedglobalconf")


def codes_equal(a: str, b: str) -> bool:
    """Compare two fault codes in either the classic or the snake-case form."""
    return normalize_code(a) == normalize_code(b)


def is_client_fault(code: str) -> bool:
    """True for codes an information system caused (REST status 400)."""
    return normalize_code(code).startswith("client.")
