"""Exceptions of the Python client: one base, each keeping the failing value.

Everything the client raises on purpose derives from :class:`ClientError`;
errors of the WebSocket library and of the operating system are translated
into these with ``raise ... from``, so callers catch one family.
"""

from __future__ import annotations

from .protocol import CloseCode, ErrorCode


def close_code_name(code: int) -> str:
    """``4002 (TOKEN_INVALID)`` for a code the protocol names, else ``4999``."""
    try:
        return f"{code} ({CloseCode(code).name})"
    except ValueError:
        return str(code)


class ClientError(Exception):
    """Base of every error the lophoc client raises."""


class CommandError(ClientError):
    """The server answered a command with an ``error`` frame.

    ``code`` is the stable :class:`ErrorCode`; ``field`` names the offending
    field of the command when the server could tell which one it was.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.id = id

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"command {self.id!r} refused: {self.code.value}: {self.message}{where}"


class ConnectionRefused(ClientError):
    """The server refused this client for good: it must not try again.

    Either the server closed the connection before ``hello`` with a 4xxx
    code (a bad or expired token, a wrong room, a refused origin), or it
    closed an open connection with 4013 because a teacher removed this
    person. Neither goes away by trying again, so the client never retries.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection refused: {close_code_name(self.code)} {self.reason}"


class ConnectionLost(ClientError):
    """The connection ended and the client did not, or could not, restore it.

    ``code`` and ``reason`` are those of the last close; 1006 means the
    connection dropped without a close frame.
    """

    def __init__(self, code: int, reason: str, attempts: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.attempts = attempts

    def __str__(self) -> str:
        text = f"connection lost: {close_code_name(self.code)} {self.reason}".rstrip()
        if self.attempts:
            text += f"; gave up after {self.attempts} reconnect attempts"
        return text


class ConnectFailed(ClientError):
    """The server could not be reached, or the WebSocket handshake failed."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot connect to {self.url}: {self.reason}"


class ClientClosed(ClientError):
    """The application closed the client; it takes no more commands."""

    def __str__(self) -> str:
        return "the client is closed"


class CommandTimeout(ClientError, TimeoutError):
    """No reply to command ``id`` after every attempt the client was allowed."""

    def __init__(self, id: str, attempts: int) -> None:
        super().__init__(id)
        self.id = id
        self.attempts = attempts

    def __str__(self) -> str:
        return f"no reply to command {self.id!r} after {self.attempts} attempts"


class ProtocolViolation(ClientError):
    """The server sent something protocol version 1 does not allow here."""
