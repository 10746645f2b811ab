"""The Python client SDK of lophoc, and the protocol it shares with the server.

:class:`Client` is the asyncio client; :mod:`client_sdk.protocol` defines
every message of the wire protocol, the most used of which are re-exported
here for convenience (the rest are in :mod:`client_sdk.protocol`).
:class:`AudioPeer` joins a lesson's live audio (:mod:`client_sdk.audio`),
:class:`VideoPeer` its audio and video (:mod:`client_sdk.video`).
"""

from typing import TYPE_CHECKING, Any

from .backoff import Backoff
from .client import Client
from .clock import ClockOffset, ClockSample
from .errors import (
    ClientClosed,
    ClientError,
    CommandError,
    CommandTimeout,
    ConnectFailed,
    ConnectionLost,
    ConnectionRefused,
    ProtocolViolation,
)
from .events import (
    ClientEvent,
    ConnectionState,
    Disconnected,
    Reconnected,
    RejoinFailed,
    Resumed,
    Resynced,
    RoomNotice,
)
from .protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Ack,
    ActivityChanged,
    AnswerResult,
    AnswerTally,
    Broadcast,
    BroadcastEvent,
    CloseCode,
    ErrorCode,
    Hello,
    Join,
    Joined,
    Leave,
    LeaveReason,
    LessonEnded,
    LessonSnapshot,
    Member,
    MemberJoined,
    MemberLeft,
    Ping,
    Pong,
    QuestionClosed,
    QuestionOpened,
    QuestionRevealed,
    Role,
    RoomEvent,
)

if TYPE_CHECKING:
    from .audio import AudioPeer, AudioPeerError, ReceivedFrame, ToneTrack
    from .video import PatternTrack, ReceivedPicture, VideoPeer

#: Imported on first use: aiortc and PyAV add a quarter of a second and some
#: 35 MB to every process, which a text-only client never needs.
_AUDIO = frozenset({"AudioPeer", "AudioPeerError", "ReceivedFrame", "ToneTrack"})
_VIDEO = frozenset({"PatternTrack", "ReceivedPicture", "VideoPeer"})


def __getattr__(name: str) -> Any:
    """The media names (:mod:`.audio`, :mod:`.video`), imported when first asked for."""
    if name in _AUDIO:
        from . import audio

        return getattr(audio, name)
    if name in _VIDEO:
        from . import video

        return getattr(video, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "JSON_SUBPROTOCOL",
    "MSGPACK_SUBPROTOCOL",
    "Ack",
    "ActivityChanged",
    "AnswerResult",
    "AnswerTally",
    "AudioPeer",
    "AudioPeerError",
    "Backoff",
    "Broadcast",
    "BroadcastEvent",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientEvent",
    "ClockOffset",
    "ClockSample",
    "CloseCode",
    "CommandError",
    "CommandTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "ConnectionRefused",
    "ConnectionState",
    "Disconnected",
    "ErrorCode",
    "Hello",
    "Join",
    "Joined",
    "Leave",
    "LeaveReason",
    "LessonEnded",
    "LessonSnapshot",
    "Member",
    "MemberJoined",
    "MemberLeft",
    "PatternTrack",
    "Ping",
    "Pong",
    "ProtocolViolation",
    "QuestionClosed",
    "QuestionOpened",
    "QuestionRevealed",
    "ReceivedFrame",
    "ReceivedPicture",
    "Reconnected",
    "RejoinFailed",
    "Resumed",
    "Resynced",
    "Role",
    "RoomEvent",
    "RoomNotice",
    "ToneTrack",
    "VideoPeer",
]
