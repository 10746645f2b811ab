"""ICE servers for the server's peer connections, from the settings file.

The server's peers gather host candidates always; a STUN server (RFC 8489)
adds the public address of a node behind NAT, and a TURN server (RFC 8656)
relays for schools whose firewalls allow nothing else. The settings give them
as the browser's ``RTCIceServer`` dictionaries do, so one list serves both the
server and the clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from rooms.errors import ConfigError

#: URI schemes of RFC 7064 (STUN) and RFC 7065 (TURN).
SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server, with its credentials for TURN."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("an ICE server needs at least one URL", self.urls)
        for url in self.urls:
            if not url.startswith(SCHEMES):
                raise ConfigError("not a stun:, stuns:, turn: or turns: URL", url)
            if url.startswith(("turn:", "turns:")) and (
                self.username is None or self.credential is None
            ):
                raise ConfigError("a TURN server needs username and credential", url)

    @classmethod
    def from_config(cls, entry: Mapping[str, object]) -> IceServer:
        """An ICE server from ``{"urls": ..., "username": ..., "credential": ...}``."""
        if "urls" not in entry:
            raise ConfigError("an ICE server needs urls", dict(entry))
        urls = entry["urls"]
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ConfigError("ICE server urls must be a string or strings", urls)
        username = entry.get("username")
        credential = entry.get("credential")
        for name, value in (("username", username), ("credential", credential)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"ICE server {name} must be a string", value)
        unknown = set(entry) - {"urls", "username", "credential"}
        if unknown:
            raise ConfigError("unknown ICE server keys", sorted(unknown))
        return cls(
            urls=tuple(urls),
            username=username if isinstance(username, str) else None,
            credential=credential if isinstance(credential, str) else None,
        )


def ice_servers(entries: Iterable[Mapping[str, object]]) -> tuple[IceServer, ...]:
    """The ICE servers of a settings list."""
    return tuple(IceServer.from_config(entry) for entry in entries)


def rtc_configuration(servers: Iterable[IceServer]) -> RTCConfiguration:
    """aiortc's configuration for ``servers``.

    The list is always given, even empty: aiortc falls back to Google's
    public STUN server when it is None, which a school's node must not call.

    Every m-line shares one transport (max-bundle, RFC 9143 section 4.1).
    Under aiortc's default, "balanced", the second transceiver of a kind
    other than the first m-line's keeps a transport that the BUNDLE group
    then discards, so a second video m-line after an audio one would never
    connect. Every browser offers BUNDLE.
    """
    return RTCConfiguration(
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceServers=[
            RTCIceServer(
                urls=list(server.urls),
                username=server.username,
                credential=server.credential,
            )
            for server in servers
        ],
    )
