"""The speaking-turn commands of the Python client.

:class:`TurnCommands` is mixed into :class:`client_sdk.client.Client`, like
:class:`client_sdk.lesson.LessonCommands`: one awaitable method per command,
returning the server's ``ack`` or raising
:class:`~client_sdk.errors.CommandError` with the error's stable code.

The queue itself arrives as ``hand_queue`` events holding the whole queue
in order, and the floor as ``floor_granted`` and ``floor_released`` events.
"""

from __future__ import annotations

from .protocol import (
    Ack,
    GrantFloor,
    LowerHand,
    Mute,
    QueuePolicy,
    RaiseHand,
    RevokeFloor,
    SetQueuePolicy,
    StartDrill,
    StopDrill,
)
from .requests import Requester


class TurnCommands(Requester):
    """Hands, the floor and drills, as methods of the client."""

    async def raise_hand(self, room: str) -> Ack:
        """Student: ask for the floor; a hand already up stays where it is."""
        return await self.request(RaiseHand(id=self.next_id(), room=room))

    async def lower_hand(self, room: str, user: str | None = None) -> Ack:
        """Lower one's own hand, or (a teacher) the hand of ``user``."""
        return await self.request(LowerHand(id=self.next_id(), room=room, user=user))

    async def set_queue_policy(self, room: str, policy: QueuePolicy) -> Ack:
        """Host: order the queue first come, round robin or least time first."""
        command = SetQueuePolicy(id=self.next_id(), room=room, policy=policy)
        return await self.request(command)

    async def grant_floor(
        self,
        room: str,
        user: str | None = None,
        seconds: int | None = None,
    ) -> Ack:
        """Host or co-teacher: give the floor to ``user`` or the next in queue.

        With ``seconds`` the server takes the floor back when they are up.
        """
        command = GrantFloor(id=self.next_id(), room=room, user=user, seconds=seconds)
        return await self.request(command)

    async def revoke_floor(self, room: str) -> Ack:
        """Host or the holder's co-teacher: take the floor back now."""
        return await self.request(RevokeFloor(id=self.next_id(), room=room))

    async def start_drill(
        self,
        room: str,
        prompt: str,
        seconds: int,
        pause_seconds: int = 3,
        users: list[str] | None = None,
    ) -> Ack:
        """Host: timed turns for ``users`` (or the queue), a pause between."""
        command = StartDrill(
            id=self.next_id(),
            room=room,
            prompt=prompt,
            seconds=seconds,
            pause_seconds=pause_seconds,
            users=users,
        )
        return await self.request(command)

    async def stop_drill(self, room: str) -> Ack:
        """Host: end the drill and its current turn."""
        return await self.request(StopDrill(id=self.next_id(), room=room))

    async def mute(self, room: str, user: str, muted: bool = True) -> Ack:
        """Host or co-teacher: mute (or unmute) a student of their school."""
        command = Mute(id=self.next_id(), room=room, user=user, muted=muted)
        return await self.request(command)
