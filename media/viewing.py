"""Who sees which video, read from a lesson room's members and its stage.

Like :mod:`media.floor` for audio, this turns room state into what
:meth:`media.relay.MediaRoom.set_video` takes: for each viewer, the
published tracks to show, first ones first. The rules:

- the host's camera and screen go to everyone;
- each classroom device's camera goes to the host and the co-teachers;
- the class on stage (``stage_changed``) goes to everyone: its classroom
  devices' cameras, then the cameras of its students;
- nothing else is forwarded: a student's camera is seen only while their
  class is on stage, a co-teacher publishes no video.
"""

from __future__ import annotations

from collections.abc import Mapping

from client_sdk.protocol import LinkedClass, Member, Role

from .video import VideoKind

#: A published track: whose, and which of their tracks.
VideoSource = tuple[str, VideoKind]

#: Roles that see every linked class.
SEES_ALL_CLASSES = (Role.TEACHER, Role.CO_TEACHER, Role.ADMIN)


def _class_order(member: Member) -> tuple[str, str, str]:
    return (member.school, member.class_, member.user)


def video_routes(
    members: Mapping[str, Member], host: str | None, stage: LinkedClass | None
) -> dict[str, list[VideoSource]]:
    """For each present member, the tracks they see, in order of priority.

    The order matters to viewers with fewer video slots than sources: the
    host's camera, the host's screen, the class on stage, then the other
    classes. Nobody is shown their own tracks.
    """
    everyone: list[VideoSource] = []
    if host is not None and host in members:
        everyone += [(host, VideoKind.CAMERA), (host, VideoKind.SCREEN)]
    present = sorted(members.values(), key=_class_order)
    if stage is not None:
        on_stage = [
            m for m in present if m.school == stage.school and m.class_ == stage.class_
        ]
        everyone += [
            (m.user, VideoKind.CAMERA) for m in on_stage if m.role is Role.CLASSROOM
        ]
        everyone += [
            (m.user, VideoKind.CAMERA) for m in on_stage if m.role is Role.STUDENT
        ]
    classes = [(m.user, VideoKind.CAMERA) for m in present if m.role is Role.CLASSROOM]
    routes: dict[str, list[VideoSource]] = {}
    for viewer in members.values():
        seen = everyone + classes if viewer.role in SEES_ALL_CLASSES else everyone
        routes[viewer.user] = [
            source for source in dict.fromkeys(seen) if source[0] != viewer.user
        ]
    return routes
