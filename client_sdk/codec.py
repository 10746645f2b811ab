"""Encoding and decoding of protocol v1 frames in both subprotocols.

A :class:`Codec` turns a received frame into one of the typed messages of
:mod:`client_sdk.protocol`, or raises :class:`FrameError` carrying the error
code and the path of the offending field. Validation is done by msgspec from
the message classes themselves; nothing here inspects fields by hand.
"""

from __future__ import annotations

import re
from typing import Any, Final, Generic, TypeVar

import msgspec

from .protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    ClientMessage,
    ErrorCode,
    ServerMessage,
)

T = TypeVar("T")

# msgspec names the failing field as a JSONPath-like suffix: "- at `$.room`".
_FIELD_PATH: Final = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING_FIELD: Final = re.compile(r"missing required field `([^`]+)`")


class FrameError(Exception):
    """A frame that could not be turned into a message.

    ``code`` is :attr:`ErrorCode.MALFORMED` when the bytes are not valid
    MessagePack or JSON at all, :attr:`ErrorCode.UNKNOWN_TYPE` when ``type``
    names no known message, and :attr:`ErrorCode.INVALID` when a field is
    wrong; ``field`` then holds its path (``room``, ``limits.burst``).
    """

    def __init__(self, code: ErrorCode, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


def _translate(exc: Exception) -> FrameError:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        field: str | None = None
        match = _FIELD_PATH.search(text)
        if match:
            field = match.group(1) or None
            text = text[: match.start()]
        else:
            missing = _MISSING_FIELD.search(text)
            if missing:
                field = missing.group(1)
        if field == "type":
            return FrameError(ErrorCode.UNKNOWN_TYPE, text, field)
        if field is None and text.startswith("Expected `object`"):
            return FrameError(ErrorCode.MALFORMED, f"frame is not a map: {text}")
        return FrameError(ErrorCode.INVALID, text, field)
    if isinstance(exc, RecursionError):
        return FrameError(ErrorCode.MALFORMED, "frame is nested too deeply")
    return FrameError(ErrorCode.MALFORMED, text or type(exc).__name__)


class _IdOnly(msgspec.Struct):
    id: str | None = None


class Codec(Generic[T]):
    """Encode outgoing messages and decode incoming ones of type ``T``.

    ``binary`` tells whether frames of this codec travel as WebSocket binary
    frames (MessagePack) or text frames (JSON).
    """

    def __init__(self, subprotocol: str, incoming: Any) -> None:
        if subprotocol == MSGPACK_SUBPROTOCOL:
            self._decoder: Any = msgspec.msgpack.Decoder(incoming)
            self._id_decoder: Any = msgspec.msgpack.Decoder(_IdOnly)
            self._encoder: Any = msgspec.msgpack.Encoder()
            self.binary = True
        elif subprotocol == JSON_SUBPROTOCOL:
            self._decoder = msgspec.json.Decoder(incoming)
            self._id_decoder = msgspec.json.Decoder(_IdOnly)
            self._encoder = msgspec.json.Encoder()
            self.binary = False
        else:
            raise ValueError(f"unknown subprotocol: {subprotocol!r}")
        self.subprotocol = subprotocol

    def encode(self, message: object) -> bytes:
        """Serialize ``message`` to the bytes of one frame."""
        data: bytes = self._encoder.encode(message)
        return data

    def decode(self, frame: bytes | str) -> T:
        """Parse one frame; raise :class:`FrameError` if it does not fit."""
        try:
            message: T = self._decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise _translate(exc) from exc
        except (UnicodeDecodeError, ValueError, TypeError, OverflowError) as exc:
            raise _translate(exc) from exc
        return message

    def command_id(self, frame: bytes | str) -> str | None:
        """The ``id`` of a frame that failed to decode, if it has a readable one.

        Lets an error frame name the command it refuses even when another
        field of that command is wrong.
        """
        try:
            found: _IdOnly = self._id_decoder.decode(frame)
        except (msgspec.MsgspecError, RecursionError, ValueError, TypeError):
            return None
        return found.id


def server_codec(subprotocol: str) -> Codec[ClientMessage]:
    """The codec a server uses: it decodes client commands."""
    return Codec(subprotocol, ClientMessage)


def client_codec(subprotocol: str) -> Codec[ServerMessage]:
    """The codec a client uses: it decodes server messages."""
    return Codec(subprotocol, ServerMessage)
