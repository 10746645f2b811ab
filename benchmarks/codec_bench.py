"""Benchmark of the wire codec: msgspec against ``msgpack`` + pydantic v2.

lophoc validates every client frame against the typed messages of
:mod:`client_sdk.protocol` with msgspec, which decodes MessagePack straight
into its Structs. This script measures that choice against the usual
alternative: the ``msgpack`` package to unpack the frame into dicts, then a
pydantic v2 discriminated union on ``type`` (through a ``TypeAdapter``) to
validate them. The pydantic models are defined here, mirroring ``Join``,
``Leave``, ``Broadcast``, ``Ping``, ``MemberJoined`` and ``BroadcastEvent``
field for field, bound for bound.

Before timing anything, both sides are fed the same valid and invalid frames
and must accept and reject the same ones, decode valid ones to the same
values, and encode events to the same bytes; the outcome is printed, and the
script stops if they disagree in a way not explained in ``CASES``.

Measured, in operations per second, each the best of several ``timeit``
repeats (garbage collector off, as ``timeit`` does), msgspec's and pydantic's
repeats alternating so that both see the same machine:

* decode+validate a valid ``Join``;
* decode+validate a valid ``Broadcast`` with a 1 KiB body;
* decode+validate an invalid frame (``room`` is an int), up to the caught
  exception and its message text, which an ``Error`` frame carries back;
* encode a ``BroadcastEvent`` with a 200-byte body, and a ``MemberJoined``,
  from an already built object (building it is not measured).

Both sides reuse their decoder, adapter, encoder or packer across calls, as a
server does. The whole run takes about ``--budget`` seconds (20 by default).
Run from the repository root, with the ``bench`` extra installed::

    .venv/bin/python benchmarks/codec_bench.py

The table is printed and also written to ``benchmarks/results/codec.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import textwrap
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

import msgpack
import msgspec
import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from client_sdk.protocol import (
    BroadcastEvent,
    ClientMessage,
    Member,
    MemberJoined,
    Role,
)

RESULTS_PATH: Final = Path(__file__).parent / "results" / "codec.json"

# Fewer than three repeats makes "best of" meaningless, even on a tiny budget.
MIN_REPEATS: Final = 3


# The pydantic mirror of client_sdk.protocol ----------------------------------

# The same bounds as the protocol's CommandId, RoomId, Topic, Offset, Millis.
CommandIdField = Annotated[str, Field(min_length=1, max_length=64)]
RoomIdField = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
TopicField = Annotated[str, Field(min_length=1, max_length=64)]
OffsetField = Annotated[int, Field(ge=0)]
MillisField = Annotated[int, Field(ge=0)]


class CommandModel(BaseModel):
    """Mirror of ``Command``.

    Strict mode because msgspec never coerces: ``"5"`` is not an int and
    ``True`` is not one either. Unknown fields are ignored, as the protocol's
    compatibility rule requires.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    # Declared first so that every subclass keeps ``type`` in first place,
    # where msgspec puts the tag.
    type: str
    id: CommandIdField


class JoinModel(CommandModel):
    """Mirror of ``Join``."""

    type: Literal["join"] = "join"
    room: RoomIdField
    last_offset: OffsetField | None = None
    epoch: str | None = None


class LeaveModel(CommandModel):
    """Mirror of ``Leave``."""

    type: Literal["leave"] = "leave"
    room: RoomIdField


class BroadcastModel(CommandModel):
    """Mirror of ``Broadcast``."""

    type: Literal["broadcast"] = "broadcast"
    room: RoomIdField
    topic: TopicField
    body: bytes = b""


class PingModel(CommandModel):
    """Mirror of ``Ping``."""

    type: Literal["ping"] = "ping"
    client_time: MillisField


ClientMessageModel = Annotated[
    JoinModel | LeaveModel | BroadcastModel | PingModel, Field(discriminator="type")
]


class MemberModel(BaseModel):
    """Mirror of ``Member``; ``class`` is a keyword, hence the alias."""

    model_config = ConfigDict(frozen=True)

    user: str
    name: str
    role: Role
    school: str
    class_: str = Field(alias="class")


class EventModel(BaseModel):
    """Mirror of ``Event``; built by the server, so not strict."""

    model_config = ConfigDict(frozen=True)

    type: str
    room: str
    offset: int
    epoch: str
    at: int


class MemberJoinedModel(EventModel):
    """Mirror of ``MemberJoined``."""

    type: Literal["member_joined"] = "member_joined"
    member: MemberModel


class BroadcastEventModel(EventModel):
    """Mirror of ``BroadcastEvent``."""

    type: Literal["broadcast"] = "broadcast"
    sender: MemberModel
    topic: str
    body: bytes


# The two codecs under test ----------------------------------------------------


class FrameCodec(Protocol):
    """What the sanity check and the timings need from either side."""

    errors: tuple[type[Exception], ...]

    def decode(self, frame: bytes) -> Any: ...

    def encode(self, message: Any) -> bytes: ...

    def as_builtins(self, message: Any) -> dict[str, Any]: ...


class MsgspecCodec:
    """What lophoc does: msgspec decodes MessagePack into the protocol Structs."""

    errors: tuple[type[Exception], ...] = (msgspec.DecodeError,)

    def __init__(self) -> None:
        self._decoder = msgspec.msgpack.Decoder(ClientMessage)
        self._encoder = msgspec.msgpack.Encoder()

    def decode(self, frame: bytes) -> ClientMessage:
        """Decode and validate one client frame."""
        message: ClientMessage = self._decoder.decode(frame)
        return message

    def encode(self, message: Any) -> bytes:
        """Encode one server message."""
        return self._encoder.encode(message)

    def as_builtins(self, message: Any) -> dict[str, Any]:
        """The decoded message as plain values, for comparison."""
        data: dict[str, Any] = msgspec.to_builtins(message, builtin_types=(bytes,))
        return data


class PydanticCodec:
    """The alternative: ``msgpack`` unpacks to dicts, pydantic validates them."""

    # msgpack raises plain ValueError (or subclasses) for bad bytes, and
    # pydantic's ValidationError is a ValueError too.
    errors: tuple[type[Exception], ...] = (ValueError, msgpack.UnpackException)

    def __init__(self) -> None:
        self._adapter: TypeAdapter[Any] = TypeAdapter(ClientMessageModel)
        self._packer = msgpack.Packer()

    def decode(self, frame: bytes) -> Any:
        """Decode and validate one client frame."""
        return self._adapter.validate_python(msgpack.unpackb(frame))

    def encode(self, message: Any) -> bytes:
        """Encode one server message."""
        data: bytes = self._packer.pack(message.model_dump(by_alias=True))
        return data

    def as_builtins(self, message: Any) -> dict[str, Any]:
        """The decoded message as plain values, for comparison."""
        data: dict[str, Any] = message.model_dump(by_alias=True)
        return data


# Sample frames ----------------------------------------------------------------


def _frame(**fields: Any) -> bytes:
    data: bytes = msgpack.packb(fields)
    return data


# A fixed seed keeps the frames, hence their sizes, the same from run to run.
_RNG: Final = random.Random(1)
BODY_1K: Final = _RNG.randbytes(1024)
BODY_200: Final = _RNG.randbytes(200)

JOIN_FRAME: Final = _frame(type="join", id="c-17", room="lop-10a1.math")
BROADCAST_FRAME: Final = _frame(
    type="broadcast", id="c-18", room="lop-10a1.math", topic="slide", body=BODY_1K
)
INVALID_FRAME: Final = _frame(type="join", id="c-19", room=12345)


@dataclass(frozen=True)
class Case:
    """One frame fed to both codecs in the sanity check.

    ``valid`` is what the protocol means to allow. ``divergence``, when set,
    explains a known case where the two libraries do not agree with each
    other; any other disagreement stops the benchmark.
    """

    name: str
    frame: bytes
    valid: bool
    divergence: str = ""


CASES: Final = (
    Case("join", JOIN_FRAME, True),
    Case(
        "join resuming",
        _frame(type="join", id="c", room="r", last_offset=42, epoch="e1"),
        True,
    ),
    Case("join, id of 64 chars", _frame(type="join", id="x" * 64, room="r"), True),
    Case(
        "join, unknown field",
        _frame(type="join", id="c", room="r", future=[1, 2]),
        True,
    ),
    Case("leave", _frame(type="leave", id="c", room="r"), True),
    Case("broadcast, 1 KiB body", BROADCAST_FRAME, True),
    Case(
        "broadcast, no body",
        _frame(type="broadcast", id="c", room="r", topic="t"),
        True,
    ),
    Case("ping", _frame(type="ping", id="c", client_time=1_700_000_000_000), True),
    Case("room is an int", INVALID_FRAME, False),
    Case("room is nil", _frame(type="join", id="c", room=None), False),
    Case("id is empty", _frame(type="join", id="", room="r"), False),
    Case("id of 65 chars", _frame(type="join", id="x" * 65, room="r"), False),
    Case("room with a space", _frame(type="join", id="c", room="a b"), False),
    Case(
        "room with a final newline",
        _frame(type="join", id="c", room="abc\n"),
        False,
        divergence=(
            "msgspec accepts it: it checks patterns with re.search, where $ also "
            "matches before a final newline; pydantic's Rust regex does not"
        ),
    ),
    Case(
        "last_offset negative",
        _frame(type="join", id="c", room="r", last_offset=-1),
        False,
    ),
    Case(
        "last_offset is a str",
        _frame(type="join", id="c", room="r", last_offset="5"),
        False,
    ),
    Case("client_time is a float", _frame(type="ping", id="c", client_time=1.0), False),
    Case("client_time is a bool", _frame(type="ping", id="c", client_time=True), False),
    Case(
        "body is a str",
        _frame(type="broadcast", id="c", room="r", topic="t", body="hi"),
        False,
    ),
    Case("unknown type", _frame(type="shout", id="c", room="r"), False),
    Case("no type", _frame(id="c", room="r"), False),
    Case("leave without room", _frame(type="leave", id="c"), False),
    Case("array, not a map", msgpack.packb(["join", "c", "r"]), False),
    Case("truncated", JOIN_FRAME[:-3], False),
    Case("trailing bytes", JOIN_FRAME + b"\xc0", False),
)


def _sample_events() -> tuple[list[Any], list[BaseModel]]:
    """The same two events, as protocol Structs and as pydantic models."""
    teacher = Member(
        user="u-81",
        name="Nguyễn Thị Lan",
        role=Role.TEACHER,
        school="thpt-a",
        class_="10A1",
    )
    student = Member(
        user="u-4021",
        name="Trần Văn Minh",
        role=Role.STUDENT,
        school="thpt-b",
        class_="10B3",
    )
    structs: list[Any] = [
        BroadcastEvent(
            room="lop-10a1.math",
            offset=1289,
            epoch="e-7f3a",
            at=1_700_000_123_456,
            sender=teacher,
            topic="slide",
            body=BODY_200,
        ),
        MemberJoined(
            room="lop-10a1.math",
            offset=1290,
            epoch="e-7f3a",
            at=1_700_000_123_789,
            member=student,
        ),
    ]
    models: list[BaseModel] = [
        BroadcastEventModel.model_validate(
            msgspec.to_builtins(structs[0], builtin_types=(bytes,))
        ),
        MemberJoinedModel.model_validate(
            msgspec.to_builtins(structs[1], builtin_types=(bytes,))
        ),
    ]
    return structs, models


# Sanity check -----------------------------------------------------------------


def _outcome(codec: FrameCodec, frame: bytes) -> Any:
    """The decoded message as plain values, or None if the frame is refused."""
    try:
        message = codec.decode(frame)
    except codec.errors:
        return None
    return codec.as_builtins(message)


def sanity_check(
    ours: FrameCodec, theirs: FrameCodec
) -> tuple[list[dict[str, Any]], list[str]]:
    """Feed both codecs the same frames and events; return rows and failures."""
    rows: list[dict[str, Any]] = []
    failures: list[str] = []

    for case in CASES:
        a, b = _outcome(ours, case.frame), _outcome(theirs, case.frame)
        a_ok, b_ok = a is not None, b is not None
        if a_ok == b_ok == case.valid and a == b:
            verdict = "agree"
        elif case.divergence:
            verdict = "known divergence"
        else:
            verdict = "DISAGREE"
            failures.append(f"{case.name}: msgspec={a!r} pydantic={b!r}")
        rows.append(
            {
                "case": case.name,
                "valid": case.valid,
                "msgspec": "accept" if a_ok else "reject",
                "pydantic": "accept" if b_ok else "reject",
                "verdict": verdict,
                "note": case.divergence,
            }
        )

    # Same bytes, not just same values: both sides must do the same work.
    structs, models = _sample_events()
    for struct, model in zip(structs, models, strict=True):
        name = f"encode {type(struct).__name__}"
        ours_bytes, theirs_bytes = ours.encode(struct), theirs.encode(model)
        same = ours_bytes == theirs_bytes
        if not same:
            failures.append(f"{name}: {ours_bytes!r} != {theirs_bytes!r}")
        rows.append(
            {
                "case": name,
                "valid": True,
                "msgspec": f"{len(ours_bytes)} bytes",
                "pydantic": f"{len(theirs_bytes)} bytes",
                "verdict": "agree" if same else "DISAGREE",
                "note": "",
            }
        )

    return rows, failures


def print_sanity(rows: list[dict[str, Any]]) -> None:
    """Print the sanity check as a table, notes under the rows they explain."""
    print("Sanity check: the same frames through both codecs")
    width = max(len(row["case"]) for row in rows)
    for row in rows:
        print(
            f"  {row['case']:<{width}}  {row['msgspec']:>9}  {row['pydantic']:>9}  "
            f"{row['verdict']}"
        )
        if row["note"]:
            for line in textwrap.wrap(row["note"], 84 - width):
                print(f"  {'':<{width}}  {line}")
    print()


# Timing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Best rate of one operation, with the loop sizes that produced it."""

    ops_per_s: float
    number: int
    repeats: int


def _loops(timer: timeit.Timer, repeat_s: float) -> int:
    """How many calls make one repeat last about ``repeat_s``."""
    # Like timeit's autorange, but aiming at a given duration, so that a small
    # budget gives short repeats rather than fewer of them.
    number = 1
    while (elapsed := timer.timeit(number)) < repeat_s / 10:
        number *= 10
    return max(1, round(number * repeat_s / elapsed))


def measure_pair(
    first: Callable[[], object], second: Callable[[], object], budget_s: float
) -> tuple[Timing, Timing]:
    """Best-of-repeats rates of two operations, spending about ``budget_s``.

    Repeats of the two alternate, so that a slow spell of the machine (another
    process, a frequency change) hits both rather than only the one that
    happened to run then.
    """
    started = time.perf_counter()
    timers = (timeit.Timer(first), timeit.Timer(second))
    repeat_s = budget_s / 16
    numbers = [_loops(timer, repeat_s) for timer in timers]

    left_s = budget_s - (time.perf_counter() - started)
    repeats = max(MIN_REPEATS, int(left_s / (2 * repeat_s)))

    # The minimum is the repeat least disturbed by the rest of the machine;
    # the mean would measure the noise as well.
    best_s = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, timer in enumerate(timers):
            best_s[i] = min(best_s[i], timer.timeit(numbers[i]))

    first_timing, second_timing = (
        Timing(number / best, number, repeats)
        for number, best in zip(numbers, best_s, strict=True)
    )
    return first_timing, second_timing


def _decoding(codec: FrameCodec, frame: bytes) -> Callable[[], object]:
    decode = codec.decode

    def run() -> object:
        return decode(frame)

    return run


def _refusing(codec: FrameCodec, frame: bytes) -> Callable[[], object]:
    decode, errors = codec.decode, codec.errors

    def run() -> object:
        try:
            decode(frame)
        except errors as exc:
            return str(exc)
        raise RuntimeError("the invalid frame was accepted")

    return run


def _encoding(codec: FrameCodec, message: Any) -> Callable[[], object]:
    encode = codec.encode

    def run() -> object:
        return encode(message)

    return run


def run_benchmarks(
    ours: FrameCodec, theirs: FrameCodec, budget_s: float
) -> list[dict[str, Any]]:
    """Time every operation on both codecs; return one row per operation."""
    structs, models = _sample_events()
    operations: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("decode Join", _decoding(ours, JOIN_FRAME), _decoding(theirs, JOIN_FRAME)),
        (
            "decode Broadcast (1 KiB body)",
            _decoding(ours, BROADCAST_FRAME),
            _decoding(theirs, BROADCAST_FRAME),
        ),
        (
            "decode invalid (room is int)",
            _refusing(ours, INVALID_FRAME),
            _refusing(theirs, INVALID_FRAME),
        ),
        (
            "encode BroadcastEvent (200 B body)",
            _encoding(ours, structs[0]),
            _encoding(theirs, models[0]),
        ),
        (
            "encode MemberJoined",
            _encoding(ours, structs[1]),
            _encoding(theirs, models[1]),
        ),
    ]

    per_pair_s = budget_s / len(operations)
    rows = []
    for name, with_msgspec, with_pydantic in operations:
        a, b = measure_pair(with_msgspec, with_pydantic, per_pair_s)
        rows.append(
            {
                "operation": name,
                "msgspec_ops_per_s": round(a.ops_per_s),
                "pydantic_ops_per_s": round(b.ops_per_s),
                "ratio": round(a.ops_per_s / b.ops_per_s, 2),
                "msgspec_loops": {"number": a.number, "repeats": a.repeats},
                "pydantic_loops": {"number": b.number, "repeats": b.repeats},
            }
        )
    return rows


def print_results(rows: list[dict[str, Any]]) -> None:
    """Print ops/s per operation and the msgspec/pydantic ratio."""
    width = max(len(row["operation"]) for row in rows)
    header = (
        f"{'operation':<{width}}  {'msgspec ops/s':>13}  {'pydantic ops/s':>14}  "
        f"{'msgspec/pydantic':>16}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['operation']:<{width}}  {row['msgspec_ops_per_s']:>13,}  "
            f"{row['pydantic_ops_per_s']:>14,}  {row['ratio']:>15.2f}x"
        )


def _environment(budget_s: float) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "msgspec": msgspec.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "pydantic": pydantic.VERSION,
        "pydantic_core": pydantic_core.__version__,
        "budget_s": budget_s,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sanity check, then the benchmark; write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds to spend timing, spread over all operations (default 20)",
    )
    args = parser.parse_args(argv)

    ours, theirs = MsgspecCodec(), PydanticCodec()
    sanity, failures = sanity_check(ours, theirs)
    print_sanity(sanity)
    if failures:
        # Timing codecs that do different work would compare nothing.
        print("The codecs disagree; not timing them:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1

    environment = _environment(args.budget)
    print(
        f"Python {environment['python']}, msgspec {environment['msgspec']}, "
        f"msgpack {environment['msgpack']}, pydantic {environment['pydantic']} "
        f"(core {environment['pydantic_core']}); budget {args.budget:g} s"
    )
    print()
    results = run_benchmarks(ours, theirs, args.budget)
    print_results(results)

    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment, "sanity": sanity, "results": results}
    RESULTS_PATH.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print()
    print(f"Written to {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
