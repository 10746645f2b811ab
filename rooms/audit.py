"""The tamper-evident record of an exam room: a hash chain with signed heads.

Every incident, proctor action, answer save and submission becomes a
:class:`LogEntry` carrying the hash of the entry before it, so changing,
removing, inserting or reordering an entry breaks the chain after it. A
chain that only lost its last entries still links up; the signed
:class:`Checkpoint` of a later head is what shows it was cut. Checkpoints
are Ed25519 signatures (RFC 8032), so anyone holding the node's public key
can check an exported log, not only the server that wrote it.

Nothing here does I/O: a writer keeps an :class:`AuditChain`, stores what
it returns, and :func:`verify` reads an exported log back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

#: The hash before the first entry of a chain.
GENESIS = "0" * 64
#: Entries between two checkpoints; every exam also checkpoints at its end.
CHECKPOINT_EVERY = 50

Value = str | int | float | bool | None


class LogEntry(msgspec.Struct, frozen=True, tag="entry"):
    """One thing that happened in an exam room, chained to the one before."""

    seq: int
    at: int
    room: str
    kind: str
    actor: str
    data: dict[str, Value]
    prev: str
    hash: str


class Checkpoint(msgspec.Struct, frozen=True, tag="checkpoint"):
    """A signature over the chain's head after entry ``seq``."""

    seq: int
    head: str
    at: int
    signature: str


class LogHeader(msgspec.Struct, frozen=True, tag="header"):
    """The first line of an exported log: whose it is and the key to check."""

    room: str
    public_key: str


ExportLine = LogHeader | LogEntry | Checkpoint


def entry_hash(
    prev: str,
    seq: int,
    at: int,
    room: str,
    kind: str,
    actor: str,
    data: dict[str, Value],
) -> str:
    """SHA-256 over the entry's fields and the previous hash, canonically."""
    # MessagePack of a list with sorted data keys: one encoding per content.
    body = msgspec.msgpack.encode(
        [prev, seq, at, room, kind, actor, sorted(data.items())]
    )
    return hashlib.sha256(body).hexdigest()


def _signed_bytes(room: str, seq: int, head: str, at: int) -> bytes:
    return msgspec.msgpack.encode(["lophoc-audit-checkpoint", room, seq, head, at])


@dataclass(slots=True)
class AuditChain:
    """The head of one room's chain, as its writer keeps it."""

    room: str
    seq: int = 0
    head: str = GENESIS

    def append(
        self, at: int, kind: str, actor: str, data: dict[str, Value]
    ) -> LogEntry:
        """The next entry; the chain moves on to it."""
        seq = self.seq + 1
        digest = entry_hash(self.head, seq, at, self.room, kind, actor, data)
        entry = LogEntry(seq, at, self.room, kind, actor, dict(data), self.head, digest)
        self.seq, self.head = seq, digest
        return entry

    def checkpoint(self, key: Ed25519PrivateKey, at: int) -> Checkpoint:
        """A signature over the current head."""
        signature = key.sign(_signed_bytes(self.room, self.seq, self.head, at))
        return Checkpoint(self.seq, self.head, at, signature.hex())

    @classmethod
    def resume(cls, room: str, last: LogEntry | None) -> AuditChain:
        """The chain of a room whose last stored entry is ``last``."""
        if last is None:
            return cls(room)
        return cls(room, last.seq, last.hash)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """The raw public key, in hex, as exported logs carry it."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw.hex()


@dataclass(frozen=True, slots=True)
class Problem:
    """One sign of tampering: where, and what is wrong there."""

    seq: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.what}"


def verify(
    room: str,
    entries: Sequence[LogEntry],
    checkpoints: Iterable[Checkpoint],
    public_key: str,
) -> list[Problem]:
    """Every sign of tampering in an exported log, in order; empty if none."""
    problems: list[Problem] = []
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
    except ValueError:
        return [Problem(0, "the public key is not a valid Ed25519 key")]

    hashes: dict[int, str] = {}
    prev, expected = GENESIS, 1
    for entry in entries:
        if entry.room != room:
            problems.append(Problem(entry.seq, f"belongs to room {entry.room!r}"))
        if entry.seq != expected:
            what = "missing" if entry.seq > expected else "out of order or repeated"
            problems.append(Problem(expected, f"{what} (found {entry.seq} here)"))
        digest = entry_hash(
            entry.prev,
            entry.seq,
            entry.at,
            entry.room,
            entry.kind,
            entry.actor,
            entry.data,
        )
        if digest != entry.hash:
            problems.append(Problem(entry.seq, "changed: its content does not hash"))
        if entry.prev != prev:
            problems.append(
                Problem(entry.seq, "does not follow the entry before it in the chain")
            )
        hashes[entry.seq] = entry.hash
        prev, expected = entry.hash, max(expected, entry.seq) + 1

    last = max(hashes, default=0)
    for point in checkpoints:
        try:
            key.verify(
                bytes.fromhex(point.signature),
                _signed_bytes(room, point.seq, point.head, point.at),
            )
        except (InvalidSignature, ValueError):
            problems.append(Problem(point.seq, "checkpoint signature is not valid"))
            continue
        if point.seq > last:
            problems.append(
                Problem(point.seq, f"truncated: the log ends at entry {last}")
            )
        elif hashes.get(point.seq) != point.head:
            problems.append(
                Problem(point.seq, "differs from the head its checkpoint signed")
            )
    return problems
