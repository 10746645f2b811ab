"""``lophoc verify-log`` on a real exported exam log catches every kind of tampering.

An examiner exports the log of a sat exam over HTTP; each case here edits a
copy the way someone covering up would (change, remove, insert, reorder,
cut the end, forge a signature, move an entry from another room, re-sign
with another key) and checks that the command names it and exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.protocol.exam import ExamValue
from rooms.audit import AuditChain, public_key_hex
from tests.lessons.conftest import Crowd, ServerProcess

from .conftest import ExamApi, exam_file, seated, verify_log

Lines = list[dict[str, object]]


def entries_of(lines: Lines) -> list[int]:
    """Indexes of the entry lines."""
    return [i for i, line in enumerate(lines) if line.get("type") == "entry"]


def change(lines: Lines) -> str:
    """An answer's value is changed."""
    at = next(i for i in entries_of(lines) if lines[i]["kind"] == "answer")
    data = dict(lines[at]["data"])  # type: ignore[call-overload]
    data["value"] = '"hot"'
    lines[at] = {**lines[at], "data": data}
    return "changed"


def remove(lines: Lines) -> str:
    """An entry in the middle is deleted."""
    del lines[entries_of(lines)[2]]
    return "missing"


def insert(lines: Lines) -> str:
    """A copy of an entry is slipped in again later."""
    first = entries_of(lines)
    lines.insert(first[3], dict(lines[first[1]]))
    return "out of order or repeated"


def reorder(lines: Lines) -> str:
    """Two entries trade places."""
    one, two = entries_of(lines)[1:3]
    lines[one], lines[two] = lines[two], lines[one]
    return "out of order"


def truncate(lines: Lines) -> str:
    """The entries after the first few are cut, their checkpoint kept."""
    for at in reversed(entries_of(lines)[3:]):
        del lines[at]
    return "truncated"


def forge(lines: Lines) -> str:
    """A checkpoint's signature is altered."""
    at = next(i for i, line in enumerate(lines) if line.get("type") == "checkpoint")
    signature = str(lines[at]["signature"])
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    lines[at] = {**lines[at], "signature": flipped}
    return "signature is not valid"


def foreign(lines: Lines) -> str:
    """An entry says it belongs to another room."""
    at = entries_of(lines)[1]
    lines[at] = {**lines[at], "room": "exam-elsewhere"}
    return "belongs to room"


def rekey(lines: Lines) -> str:
    """Every checkpoint re-signed with a forger's key, named in the header."""
    forger = Ed25519PrivateKey.generate()
    room = str(lines[0]["room"])
    lines[0] = {**lines[0], "public_key": public_key_hex(forger)}
    for at, line in enumerate(lines):
        if line.get("type") == "checkpoint":
            chain = AuditChain(room, int(line["seq"]), str(line["head"]))  # type: ignore[call-overload]
            point = chain.checkpoint(forger, int(line["at"]))  # type: ignore[call-overload]
            lines[at] = {**line, "signature": point.signature}
    return "signature is not valid"


TAMPERING: list[Callable[[Lines], str]] = [
    change,
    remove,
    insert,
    reorder,
    truncate,
    forge,
    foreign,
    rekey,
]


async def test_verify_log_catches_each_kind_of_tampering(
    server: ServerProcess, api: ExamApi, crowd: Crowd, tmp_path: Path
) -> None:
    """Each edit of an exported log is named by verify-log, which then exits 1."""
    room = "exam-tampering"
    _, (student,) = await seated(server, api, crowd, exam_file(room, 1))
    client = student.client
    await client.fetch_exam(room)
    answers: list[tuple[str, ExamValue]] = [
        ("q3", "cold"),
        ("q4", ["am"]),
        ("q1", 0),
        ("q2", [0, 1]),
    ]
    for item, value in answers:
        await client.save_answer(room, item, value)
    await client.submit_exam(room)

    exported = await api.log(room)
    assert exported.status_code == 200
    original = [json.loads(line) for line in exported.text.splitlines()]
    path = tmp_path / "intact.log"
    path.write_text(exported.text)
    intact = verify_log(path)
    assert intact.returncode == 0, intact.stdout
    public_key = str(original[0]["public_key"])

    # A forger's re-signed copy is consistent with its own header: only the
    # operator's published key shows it.
    path = tmp_path / "forged.log"
    lines = [dict(line) for line in original]
    rekey(lines)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert verify_log(path).returncode == 0

    for tamper in TAMPERING:
        lines = [dict(line) for line in original]
        expected = tamper(lines)
        path = tmp_path / f"{tamper.__name__}.log"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        found = verify_log(path, public_key)
        assert found.returncode == 1, (tamper.__name__, found.stdout)
        assert expected in found.stdout, (tamper.__name__, found.stdout)
        assert "tampered" in found.stdout
