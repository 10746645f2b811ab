"""Live video end to end: the host reaches every class, the stage decides the rest."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pytest

from client_sdk.protocol import (
    SetStage,
    StageChanged,
    VideoLayer,
    VideoQualityChanged,
)
from client_sdk.video import Colour, VideoPeer
from tests.media.peer import eventually
from tests.media.video_peer import PacketLoss

from .conftest import Api, Crowd, ServerProcess, Watcher

pytestmark = pytest.mark.timeout(120)

RED: Colour = (220, 30, 30)
BLUE: Colour = (30, 30, 220)
GREEN: Colour = (30, 200, 30)
YELLOW: Colour = (230, 220, 30)
MAGENTA: Colour = (210, 40, 210)
WHITE: Colour = (235, 235, 235)

#: Small pictures at a low rate: a noisy 2-core machine runs every peer.
SMALL: dict[str, Any] = {"size": (160, 120), "fps": 10}


async def publish(
    watcher: Watcher, room: str, peers: list[VideoPeer], **options: Any
) -> VideoPeer:
    """Start a :class:`VideoPeer` on ``watcher``'s socket."""
    peer = VideoPeer(watcher.client, room, **SMALL, **options)
    peers.append(peer)
    await peer.start()
    return peer


@dataclass
class Linked:
    """A lesson of a host and three linked schools, the host's socket in it."""

    room: str
    body: dict[str, Any]
    host: Watcher

    async def device(self, crowd: Crowd, server: ServerProcess, n: int) -> Watcher:
        """The socket of the classroom device of linked class ``n``."""
        linked = self.body["classes"][n]
        token = linked["classroom"]["token"]
        return await crowd.enter(f"dev-{linked['school']}", server, token, self.room)


async def lesson(api: Api, crowd: Crowd, server: ServerProcess, title: str) -> Linked:
    """Create a linked lesson and bring its host in."""
    created = await api.create(
        {
            "id": f"{title}-{secrets.token_hex(3)}",
            "title": title,
            "host": {"user": "t-host"},
            "classes": [
                {"school": "A", "class": "7A", "co_teacher": {"user": "co-a"}},
                {"school": "B", "class": "7B"},
                {"school": "C", "class": "7C"},
            ],
        }
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    host = await crowd.enter("host", server, body["host"]["token"], body["id"])
    return Linked(body["id"], body, host)


async def test_host_reaches_every_class_and_the_stage_decides_the_rest(
    server: ServerProcess, api: Api, crowd: Crowd, peers: list[VideoPeer]
) -> None:
    """Host reaches B and C, classes reach the host, the stage reaches everyone."""
    linked = await lesson(api, crowd, server, "video")
    room, body, host_w = linked.room, linked.body, linked.host
    devices_w = [await linked.device(crowd, server, n) for n in range(3)]
    student_token = await api.student_token(body["classes"][0]["code"], "S")
    student_w = await crowd.enter("S", server, student_token, room)

    host = await publish(host_w, room, peers, camera=RED, screen=BLUE, video_slots=3)
    dev_a, dev_b, dev_c = [
        await publish(w, room, peers, camera=colour, video_slots=3)
        for w, colour in zip(devices_w, (GREEN, YELLOW, MAGENTA), strict=True)
    ]
    student = await publish(student_w, room, peers, camera=WHITE, video_slots=3)

    # The host's camera and screen reach the devices of two other schools,
    # decoded to the colours the host's pattern drew.
    for device in (dev_b, dev_c):
        await eventually(
            lambda d=device: d.seen.sees(RED) and d.seen.sees(BLUE),  # type: ignore[misc]
            15.0,
            f"the host's camera and screen at a device: {device.seen.describe()}",
        )
    # The host sees every linked class.
    await eventually(
        lambda: all(host.seen.sees(c) for c in (GREEN, YELLOW, MAGENTA)),
        10.0,
        f"every class at the host: {host.seen.describe()}",
    )

    # Nobody sees the student's camera, and classes do not see each other.
    settled = time.monotonic()
    await asyncio.sleep(1.5)
    for viewer in (host, dev_a, dev_b, dev_c):
        assert not viewer.seen.sees(WHITE, since=settled), viewer.seen.describe()
    assert not dev_b.seen.sees(GREEN)
    assert not dev_b.seen.sees(MAGENTA)
    assert not student.seen.sees(YELLOW), student.seen.describe()

    # Class A on stage: its device's camera goes to everyone.
    await host_w.client.request(SetStage(id="", room=room, school="A", class_="7A"))
    staged = await devices_w[1].wait(StageChanged)
    assert staged.stage is not None
    assert (staged.stage.school, staged.stage.class_) == ("A", "7A")
    for viewer in (dev_b, dev_c, student):
        await eventually(
            lambda v=viewer: v.seen.sees(GREEN),  # type: ignore[misc]
            5.0,
            f"class A on stage: {viewer.seen.describe()}",
        )

    # Taken off stage, it stops within a second.
    await host_w.client.request(SetStage(id="", room=room))
    await devices_w[1].wait(StageChanged, lambda e: e.stage is None)
    off = time.monotonic() + 0.5
    await asyncio.sleep(1.5)
    for viewer in (dev_b, dev_c):
        assert not viewer.seen.sees(GREEN, since=off), viewer.seen.describe()
        assert viewer.seen.sees(RED, since=off)
    assert host.seen.sees(GREEN, since=off)


async def test_a_late_joiner_sees_the_host_within_two_seconds(
    server: ServerProcess, api: Api, crowd: Crowd, peers: list[VideoPeer]
) -> None:
    """A student connecting mid-lesson decodes the host's camera within 2 s."""
    linked = await lesson(api, crowd, server, "late")
    await publish(linked.host, linked.room, peers, camera=RED)
    device_w = await linked.device(crowd, server, 1)
    device = await publish(device_w, linked.room, peers, video_slots=1)
    await eventually(lambda: device.seen.sees(RED), 15.0, "the host at the device")
    # The host's encoder now sends only deltas until someone asks for more.
    await asyncio.sleep(2.0)

    token = await api.student_token(linked.body["classes"][2]["code"], "Late")
    late_w = await crowd.enter("late", server, token, linked.room)
    late = await publish(late_w, linked.room, peers, video_slots=1)
    connected = time.monotonic()
    await eventually(lambda: late.seen.sees(RED), 4.0, "the host at the late joiner")
    first = late.seen.first_seen(RED)
    assert first is not None
    assert first - connected < 2.0


def heard_since(peer: VideoPeer, moment: float) -> bool:
    """Whether ``peer`` has heard audio that arrived after ``moment``."""
    last = peer.last_arrival()
    return last is not None and last > moment


async def host_at_devices(
    linked: Linked,
    crowd: Crowd,
    server: ServerProcess,
    peers: list[VideoPeer],
    *classes: int,
) -> list[tuple[Watcher, VideoPeer]]:
    """The host's red camera and 440 Hz voice, seen by the ``classes`` devices.

    Returns once every device (one video slot each) sees the camera: each
    device's socket and its peer.
    """
    await publish(linked.host, linked.room, peers, camera=RED, tone_hz=440.0)
    devices = []
    for n in classes:
        watcher = await linked.device(crowd, server, n)
        devices.append(
            (watcher, await publish(watcher, linked.room, peers, video_slots=1))
        )
    await eventually(
        lambda: all(peer.seen.sees(RED) for _, peer in devices),
        15.0,
        "the host at the devices",
    )
    return devices


async def test_a_weak_link_turns_video_off_and_keeps_the_audio(
    server: ServerProcess, api: Api, crowd: Crowd, peers: list[VideoPeer]
) -> None:
    """``low`` is told there is one layer; ``off`` stops video, not audio."""
    linked = await lesson(api, crowd, server, "weak")
    [(_, device)] = await host_at_devices(linked, crowd, server, peers, 1)

    low = await device.set_quality(VideoLayer.LOW)
    assert (low.requested, low.forwarded, low.layers) == (
        VideoLayer.LOW,
        VideoLayer.HIGH,
        1,
    )

    off = await device.set_quality(VideoLayer.OFF)
    assert off.forwarded is VideoLayer.OFF
    stopped = time.monotonic() + 0.5
    await asyncio.sleep(2.0)
    assert not device.seen.pictures(since=stopped), device.seen.describe(stopped)
    heard = device.last_arrival()
    assert heard is not None
    assert heard > stopped + 1.0
    assert device.dominant_frequency(since=stopped) == pytest.approx(440, abs=10)

    await device.set_quality(VideoLayer.HIGH)
    back = time.monotonic()
    await eventually(
        lambda: device.seen.sees(RED, since=back), 2.0, "the picture back within 2 s"
    )


async def test_a_lossy_link_gets_less_video_and_is_told_so(
    server: ServerProcess, api: Api, crowd: Crowd, peers: list[VideoPeer]
) -> None:
    """The node steps a losing device's video off, says so, and steps it back."""
    linked = await lesson(api, crowd, server, "lossy")
    (weak_w, weak), (steady_w, steady) = await host_at_devices(
        linked, crowd, server, peers, 1, 2
    )

    assert weak._pc is not None
    link = PacketLoss(weak._pc, "weak-device")
    link.lose(0.25)
    started = time.monotonic()
    reduced = await weak_w.wait(
        VideoQualityChanged, lambda n: n.reason == "loss", within=20.0, after=started
    )
    assert (reduced.requested, reduced.forwarded) == (VideoLayer.HIGH, VideoLayer.OFF)
    assert reduced.loss > 0.1
    off = time.monotonic() + 0.5
    # For a second and a half video is off at the weak device while the
    # host's voice still comes through the lossy link, and the steady
    # device keeps its picture.
    await eventually(
        lambda: (
            heard_since(weak, off + 1.5)
            and weak.dominant_frequency(since=off) == pytest.approx(440, abs=10)
        ),
        10.0,
        "the host's voice at the weak device",
    )
    assert not weak.seen.pictures(since=off), weak.seen.describe(off)
    await eventually(
        lambda: steady.seen.sees(RED, since=off), 3.0, "the host at the steady device"
    )
    assert not steady_w.all(VideoQualityChanged)

    link.lose(0.0)
    clean = time.monotonic()
    restored = await weak_w.wait(
        VideoQualityChanged, lambda n: n.reason == "recovered", within=30.0, after=clean
    )
    assert restored.forwarded is VideoLayer.HIGH
    await eventually(
        lambda: weak.seen.sees(RED, since=clean), 5.0, "the picture back at the device"
    )
