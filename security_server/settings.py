"""Store: the security server's own settings file (``server.json`` in its data directory)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from protocol.errors import XRoadError
from protocol.identifiers import ClientId, SecurityServerId

SETTINGS_FILE = "server.json"


@dataclass(frozen=True, slots=True)
class Ports:
    """Listening ports; X-Road's own numbers are the defaults (DESIGN.md)."""

    client_http: int = 8080
    server_proxy: int = 5500
    ocsp: int = 5577


@dataclass(frozen=True, slots=True)
class ServerSettings:
    instance: str
    owner_class: str
    owner_code: str
    server_code: str
    bind_host: str = "0.0.0.0"
    ports: Ports = field(default_factory=Ports)
    # Limits on what comes from outside.
    max_body_bytes: int = 50 * 1024 * 1024
    # REST bodies are logged up to this size (message-log.md §2,
    # ``max-loggable-message-body-size``); a larger body fails the exchange
    # unless ``truncated_body_allowed``. Allowing truncation means the log no
    # longer holds the whole signed body, so its signature cannot be rechecked.
    max_loggable_body_bytes: int = 10 * 1024 * 1024
    truncated_body_allowed: bool = False
    max_header_line_bytes: int = 8190  # request line and each header field
    max_header_count: int = 128
    service_timeout_seconds: float = 60.0
    peer_timeout_seconds: float = 60.0
    # Background task periods.
    conf_refresh_seconds: float = 60.0
    ocsp_refresh_seconds: float = 1200.0
    timestamp_interval_seconds: float = 60.0
    # acceptable-timestamp-failure-period (message-log.md §1): once time-stamping
    # has failed this long, the server stops mediating traffic; 0 never stops.
    timestamp_failure_period_seconds: float = 14400.0
    # timestamp-immediately (message-log.md §1, §5): each logged message is
    # stamped on its own before the exchange goes on, and a failed stamp fails
    # the exchange. Costs one TSA round trip per message and makes every
    # exchange depend on the TSA being up; the failure period is then unused.
    timestamp_immediately: bool = False
    # message-body-logging (message-log.md §1). Off: SOAP bodies, REST bodies
    # and REST paths and queries are stripped before logging, so the logged
    # records can no longer prove what was sent (their signatures fail). A
    # per-subsystem switch in serverconf overrides this for one client.
    log_bodies: bool = True
    # keep-records-for (message-log.md §7): archived records older than this
    # are deleted from the live log; unarchived records are never deleted.
    keep_records_days: int = 30
    # A command run with each new archive's path appended, e.g. to copy it to
    # object storage or another host; archiving waits for it and logs failures.
    archive_transfer_command: tuple[str, ...] = ()
    # archive-interval (message-log.md §7): how often the background archiver
    # writes stamped records to ``archive_dir`` (default ``<data dir>/archive``)
    # and then applies retention.
    archive_interval_seconds: float = 21600.0
    archive_dir: str | None = None
    # Legacy ``GET /wsdl`` on the client proxy (metaservices.md §4.1). Off by
    # default, as in X-Road 7. Turning it on lets anyone who can reach the
    # client proxy read WSDLs on behalf of ``legacy_wsdl_client``, which must
    # be one of our client subsystems (slash form); never the owner member.
    legacy_wsdl: bool = False
    legacy_wsdl_client: str | None = None
    # Batch signatures (transport.md §7.2): sign requests for one member that
    # arrive within the window share one signature over a hash tree, and each
    # message carries its own hash chain. Saves signing work under load at the
    # cost of up to one window of added latency per message. Peers must accept
    # multi-level chains (the spec requires it); off by default.
    batch_signatures: bool = False
    batch_signature_window_ms: float = 5.0

    @property
    def owner(self) -> ClientId:
        return ClientId(self.instance, self.owner_class, self.owner_code)

    @property
    def server_id(self) -> SecurityServerId:
        return SecurityServerId(self.owner, self.server_code)

    def with_ports(self, **changes: int) -> ServerSettings:
        return replace(self, ports=replace(self.ports, **changes))

    def save(self, directory: Path) -> None:
        path = directory / SETTINGS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> ServerSettings:
        """Read the settings file.

        :raises ServerNotInitialized: there is no readable settings file.
        """
        try:
            raw = json.loads((directory / SETTINGS_FILE).read_text())
            ports = Ports(**raw.pop("ports", {}))
            command = tuple(raw.pop("archive_transfer_command", ()))
            return cls(ports=ports, archive_transfer_command=command, **raw)
        except (OSError, ValueError, TypeError) as exc:
            raise ServerNotInitialized(
                f"{directory} holds no security server settings ({SETTINGS_FILE}):"
                " run 'xgate server init' first"
            ) from exc


class ServerNotInitialized(XRoadError):
    code = "ServerNotInitialized"
