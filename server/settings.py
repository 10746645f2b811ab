"""Settings of a lophoc node: defaults, then a file, then the environment.

Each setting is read, in increasing order of precedence, from its default
below, from a TOML settings file (``config/lophoc.toml`` in the source tree
or the file named by ``--config`` or ``LOPHOC_CONFIG``), from an environment
variable ``LOPHOC_<NAME>`` (``LOPHOC_PORT=9000``), and from the command line.
The merged values are validated by msgspec against :class:`Settings`, so a
bad value is refused with the name of the setting and where it came from.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from media.ice import IceServer
from rooms.errors import ConfigError

ENV_PREFIX = "LOPHOC_"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "lophoc.toml"

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class IceServerSetting(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A STUN or TURN server handed to clients and used by the server."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything a node needs to run; see ``config/lophoc.toml``."""

    host: str = "127.0.0.1"
    port: Port = 8765
    #: ``memory://`` (one process) or ``redis://host:port/db``.
    broker_url: str = "memory://"
    #: ``sqlite://`` (a file in ``data_dir``), ``sqlite:///path``, ``memory://``
    #: or ``redis://host:port/db``.
    store_url: str = "sqlite://"
    data_dir: str = "data"
    #: Origins allowed to open the WebSocket. Empty: only pages served by
    #: this node itself (Origin equal to the Host header) and non-browser
    #: clients that send no Origin. ``*`` allows every origin.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    #: HS256 key for join tokens; read from ``<data_dir>/secret`` when empty.
    secret: str = ""
    #: Name of this node in logs and metrics; random when empty.
    node: str = ""
    max_frame_bytes: Positive = 65_536
    messages_per_second: PositiveFloat = 20.0
    burst: Positive = 40
    send_queue: Positive = 1024
    ping_interval: PositiveFloat = 20.0
    ping_timeout: PositiveFloat = 20.0
    #: Frames that fail to decode within ten seconds before the connection
    #: is closed.
    max_bad_frames: Positive = 20
    lease_ms: Positive = 10_000
    #: On SIGTERM: seconds the node may take to send its clients elsewhere
    #: and hand its rooms over before it exits.
    drain_seconds: PositiveFloat = 10.0
    #: STUN and TURN servers for WebRTC audio, as ``[[lophoc.ice_servers]]``
    #: tables with ``urls`` (and ``username``, ``credential`` for TURN).
    ice_servers: list[IceServerSetting] = msgspec.field(default_factory=list)
    #: Where turn recordings go; ``<data_dir>/recordings`` when empty.
    recordings_dir: str = ""
    log_level: str = "info"

    def with_secret(self) -> Settings:
        """These settings with ``secret`` filled from the data directory."""
        if self.secret:
            return self
        return msgspec.structs.replace(self, secret=load_or_create_secret(self))


def load_or_create_secret(settings: Settings) -> str:
    """The node's token key, created on first use with owner-only access."""
    path = Path(settings.data_dir) / "secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting together must not write two keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError("settings file not found", str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from exc
    section = data.get("lophoc", data)
    if not isinstance(section, dict):
        raise ConfigError("the [lophoc] section must be a table", str(path))
    return section


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    names = {f.encode_name for f in msgspec.structs.fields(Settings)}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in names:
            raise ConfigError("unknown setting in the environment", key)
        if name == "allowed_origins":
            values[name] = [o.strip() for o in value.split(",") if o.strip()]
        else:
            values[name] = value
    return values


def load_settings(
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the settings file, the environment and ``overrides``."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    path = config or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        merged.update(_from_file(Path(path)))
    elif DEFAULT_CONFIG.exists():
        merged.update(_from_file(DEFAULT_CONFIG))
    merged.update(_from_env(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    for index, entry in enumerate(settings.ice_servers):
        try:
            IceServer.from_config(msgspec.to_builtins(entry))
        except ConfigError as exc:
            raise ConfigError(f"invalid settings: ice_servers[{index}]: {exc}") from exc
    return settings
