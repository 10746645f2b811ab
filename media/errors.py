"""The errors the media layer raises, under lophoc's one exception base."""

from __future__ import annotations

from rooms.errors import LophocError


class MediaError(LophocError):
    """Base of every error of the media layer; keeps the failing value."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.value is None else f"{text}: {self.value!r}"


class UnknownParticipant(MediaError):
    """No media participant of that id in this room."""

    def __init__(self, participant: str) -> None:
        super().__init__("no media participant", participant)
        self.participant = participant


class BadOffer(MediaError):
    """An SDP offer the server cannot answer (unparseable, no Opus audio, ...)."""


class BadCandidate(MediaError):
    """An ICE candidate line that does not parse (RFC 8839 section 5.1)."""


class RoomClosed(MediaError):
    """The media room was closed while, or before, the call was made."""


class RecordingError(MediaError):
    """A recording could not be started or finished."""
