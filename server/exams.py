"""Creating exam rooms, handing out their tokens, reading results and logs.

Used by the HTTP API and by ``lophoc exam``; both work on the store, so an
exam created on one node is sat on any other. The paper and its key stay
in the store: what the examiner gets back is the room's tokens, and what
students and proctors get is only what the exam room sends them.

The node's signing key for exam logs lives in ``<data_dir>/audit.key``
(created on first use, readable by its owner only). Every node of one
deployment must hold the same key file, so that an exported log's
checkpoints all verify with the one public key in its header.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.protocol import Role
from rooms.audit import Checkpoint, LogEntry, public_key_hex
from rooms.exam_results import ExamResults, build_results, export_log
from rooms.exam_room import AUDIT, CHECKPOINTS, SpokenAnswer
from rooms.exam_setup import EXAM, ExamSetup, parse_exam
from rooms.store import Store
from rooms.writer import LESSON, load_room

from . import auth
from .exam_speaking import RECORDING, recording_key
from .lessons import Access

#: Exam tokens last from creation until a day after the exam's end.
TOKEN_MARGIN = 24 * 3600

_encoder = msgspec.msgpack.Encoder()
_setup_decoder = msgspec.msgpack.Decoder(ExamSetup)
_entry_decoder = msgspec.msgpack.Decoder(LogEntry)
_point_decoder = msgspec.msgpack.Decoder(Checkpoint)


class ExamExists(ValueError):
    """An exam room with this id was created before."""


class CreatedExam(msgspec.Struct, frozen=True):
    """What the examiner gets back: the room's times and every token."""

    id: str
    title: str
    opens_at: int
    ends_at: int
    students: list[Access]
    proctors: list[Access]


async def create_exam(
    store: Store, secret: str, text: str | bytes, filename: str, now_s: int
) -> CreatedExam:
    """Check and store an exam file; return the tokens of its room.

    Raises :class:`rooms.plan.PlanError` for a bad file and
    :class:`ExamExists` when its id is taken (by an exam or a lesson).
    """
    setup = parse_exam(text, filename)
    taken = await store.load_document(EXAM, setup.id) is not None
    if taken or await store.load_document(LESSON, setup.id) is not None:
        raise ExamExists(f"room {setup.id!r} exists already")
    await store.save_document(EXAM, setup.id, _encoder.encode(setup))

    longest = setup.duration_ms + max(setup.extra_ms.values(), default=0)
    ends_at = setup.opens_at + longest
    ttl = max(ends_at // 1000 - now_s, 0) + TOKEN_MARGIN

    def access(user: str, name: str, role: Role, school: str, klass: str) -> Access:
        token = auth.mint(
            secret,
            user=user,
            name=name,
            role=role,
            rooms=[setup.id],
            school=school,
            class_=klass,
            ttl_seconds=ttl,
        )
        return Access(user=user, name=name, role=role, token=token)

    return CreatedExam(
        id=setup.id,
        title=setup.title,
        opens_at=setup.opens_at,
        ends_at=ends_at,
        students=[
            access(c.user, c.name, Role.STUDENT, c.school, c.class_)
            for c in setup.students
        ],
        proctors=[
            access(p.user, p.name or p.user, Role.PROCTOR, "", "")
            for p in setup.proctors
        ],
    )


async def load_setup(store: Store, exam_id: str) -> ExamSetup | None:
    """The stored setup of an exam room, or ``None``."""
    data = await store.load_document(EXAM, exam_id)
    return None if data is None else _setup_decoder.decode(data)


def may_read(claims: auth.Claims, setup: ExamSetup) -> bool:
    """Whether a token may read results and the log: admins, named examiners."""
    if claims.role is Role.ADMIN:
        return True
    return claims.role is Role.TEACHER and claims.user in setup.examiners


async def exam_results(store: Store, exam_id: str, now: int) -> ExamResults | None:
    """The graded attempts of an exam room as the store holds them at ``now``.

    An attempt whose deadline passed counts as submitted at it, even when
    no writer was there to submit it (nobody left in the room).
    """
    room = await load_room(store, exam_id)
    if room.exam is None:
        return None
    # A copy read from the store: what the tick adds is never written.
    room.exam.tick(now)
    return build_results(room.exam)


async def exam_recordings(store: Store, exam_id: str) -> list[SpokenAnswer]:
    """The stored spoken answers of an exam room, in the order of its log."""
    room = await load_room(store, exam_id)
    return [] if room.exam is None else list(room.exam.recordings)


async def exam_recording(store: Store, exam_id: str, file: str) -> bytes | None:
    """The audio of one spoken answer the room's log lists, or ``None``.

    Only a name the log lists is looked up, so no request reaches any other
    document of the store.
    """
    listed = {spoken.file for spoken in await exam_recordings(store, exam_id)}
    if file not in listed:
        return None
    return await store.load_document(RECORDING, recording_key(exam_id, file))


async def exam_log(store: Store, exam_id: str, key: Ed25519PrivateKey) -> bytes:
    """The room's log in the format ``lophoc verify-log`` reads."""
    entries = await store.load_records(exam_id, AUDIT)
    points = await store.load_records(exam_id, CHECKPOINTS)
    return export_log(
        exam_id,
        public_key_hex(key),
        [_entry_decoder.decode(entries[k]) for k in sorted(entries)],
        [_point_decoder.decode(data) for data in points.values()],
    )


def load_or_create_audit_key(data_dir: Path) -> Ed25519PrivateKey:
    """The node's Ed25519 key for exam logs, created on first use."""
    path = data_dir / "audit.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        # O_EXCL: two processes starting together must not write two keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(seed.hex() + "\n")
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
