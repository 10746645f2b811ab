"""The exception base of lophoc and the errors the room layer raises."""

from __future__ import annotations

from client_sdk.protocol import ErrorCode


class LophocError(Exception):
    """Base of every exception lophoc raises on purpose."""


class ConfigError(LophocError):
    """A setting or backend URL that cannot be used; keeps the bad value."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.value is None else f"{text}: {self.value!r}"


class BackendError(LophocError):
    """A broker or store could not do what was asked (connection lost, ...)."""


class StaleWriter(BackendError):
    """An append was refused because another writer moved the room on.

    Raised by a store when the expected epoch or next offset does not match
    what it holds: this node is no longer the room's single writer.
    """

    def __init__(self, room: str, expected: str) -> None:
        super().__init__(f"room {room!r}: store expected {expected}")
        self.room = room
        self.expected = expected


class Refused(LophocError):
    """A command the room refused; becomes an ``error`` frame for the client."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.code}: {self.message}{where}"
