"""Join tokens: HS256 JSON Web Tokens (RFC 7519) signed with the node key.

A token names one person (or classroom device), their role, school and
class, and the rooms it opens. Only HS256 is accepted: a token whose header
asks for another algorithm, ``none`` included, is refused before its
signature is looked at (RFC 8725 §3.1).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt

from client_sdk.protocol import CloseCode, Member, Role
from rooms.errors import LophocError

ALGORITHM = "HS256"
ISSUER = "lophoc"
#: Clock difference tolerated between the node that minted a token and the
#: node that checks it.
LEEWAY_SECONDS = 5
REQUIRED_CLAIMS = ["exp", "iat", "sub", "role", "iss"]
ROOM_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


class TokenRefused(LophocError):
    """A token that does not open the connection; carries the close code."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code.value} {self.reason}"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says about its holder."""

    user: str
    name: str
    role: Role
    school: str
    class_: str
    rooms: tuple[str, ...]
    expires_at: int

    def member(self) -> Member:
        """The holder as other members of a room see them."""
        return Member(
            user=self.user,
            name=self.name,
            role=self.role,
            school=self.school,
            class_=self.class_,
        )

    def may_enter(self, room: str) -> bool:
        """Whether the token covers ``room``."""
        return room in self.rooms


def mint(
    secret: str,
    *,
    user: str,
    role: Role,
    rooms: list[str],
    name: str = "",
    school: str = "",
    class_: str = "",
    ttl_seconds: int = 3600,
    not_before: int | None = None,
    now: int | None = None,
) -> str:
    """A signed token for ``user`` in ``rooms``, valid for ``ttl_seconds``."""
    if not rooms:
        raise ValueError("a token must name at least one room")
    for room in rooms:
        if not ROOM_PATTERN.fullmatch(room) or len(room) > 64:
            raise ValueError(
                f"room id {room!r} must be 1 to 64 letters, digits or _ . : -"
            )
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    issued = int(time.time()) if now is None else now
    payload: dict[str, object] = {
        "iss": ISSUER,
        "sub": user,
        "name": name or user,
        "role": role.value,
        "school": school,
        "class": class_,
        "room": rooms[0],
        "rooms": rooms,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if not_before is not None:
        payload["nbf"] = not_before
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str | None) -> Claims:
    """Check ``token``; raise :class:`TokenRefused` with the close code if bad."""
    if not token:
        raise TokenRefused(CloseCode.TOKEN_MISSING, "no token")
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRefused(CloseCode.TOKEN_EXPIRED, "token expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenRefused(
            CloseCode.TOKEN_NOT_YET_VALID, "token not yet valid"
        ) from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenRefused(
            CloseCode.TOKEN_INVALID, "token algorithm not allowed"
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRefused(CloseCode.TOKEN_INVALID, "token signature invalid") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRefused(CloseCode.TOKEN_INVALID, f"token invalid: {exc}") from exc
    return _claims(payload)


def _claims(payload: dict[str, object]) -> Claims:
    try:
        role = Role(str(payload["role"]))
    except ValueError as exc:
        raise TokenRefused(CloseCode.TOKEN_INVALID, "token role unknown") from exc
    rooms = payload.get("rooms")
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        room = payload.get("room")
        rooms = [room] if isinstance(room, str) else []
    if not rooms:
        raise TokenRefused(CloseCode.TOKEN_INVALID, "token names no room")
    exp = payload["exp"]
    return Claims(
        user=str(payload["sub"]),
        name=str(payload.get("name") or payload["sub"]),
        role=role,
        school=str(payload.get("school", "")),
        class_=str(payload.get("class", "")),
        rooms=tuple(rooms),
        expires_at=int(exp) if isinstance(exp, int | float) else 0,
    )
