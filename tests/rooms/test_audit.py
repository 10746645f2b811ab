"""The exam log's hash chain and checkpoints, and ``lophoc verify-log``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rooms.audit import (
    AuditChain,
    Checkpoint,
    LogEntry,
    LogHeader,
    Value,
    public_key_hex,
    verify,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
T0 = 1_800_000_000_000


def build(count: int = 30, every: int = 10) -> tuple[list[LogEntry], list[Checkpoint]]:
    """A chain of ``count`` entries with a checkpoint every ``every``."""
    chain = AuditChain("exam-1")
    entries, checkpoints = [], []
    for n in range(1, count + 1):
        entries.append(
            chain.append(T0 + n, "answer_saved", f"s{n % 4}", {"item": f"i{n}", "n": n})
        )
        if n % every == 0:
            checkpoints.append(chain.checkpoint(KEY, T0 + n))
    return entries, checkpoints


def check(entries: list[LogEntry], checkpoints: list[Checkpoint]) -> list[str]:
    return [str(p) for p in verify("exam-1", entries, checkpoints, public_key_hex(KEY))]


def test_an_untouched_log_verifies() -> None:
    """A log as written has no problem."""
    entries, checkpoints = build()

    assert check(entries, checkpoints) == []


def test_a_changed_entry_is_found() -> None:
    """Changing an entry's data breaks its hash."""
    entries, checkpoints = build()
    entries[11] = msgspec.structs.replace(entries[11], data={"item": "i12", "n": 99})

    problems = check(entries, checkpoints)

    assert any(p.startswith("entry 12: changed") for p in problems)


def test_a_changed_entry_with_a_new_hash_still_breaks_the_chain() -> None:
    """Rehashing a changed entry breaks the link to the next and the checkpoint."""
    entries, checkpoints = build()
    old = entries[11]
    data: dict[str, Value] = {"item": "i12", "n": 99}
    from rooms.audit import entry_hash

    forged = entry_hash(old.prev, old.seq, old.at, old.room, old.kind, old.actor, data)
    entries[11] = msgspec.structs.replace(old, data=data, hash=forged)

    problems = check(entries, checkpoints)

    assert any(p.startswith("entry 13: does not follow") for p in problems)


def test_a_removed_entry_is_found() -> None:
    """Removing an entry in the middle leaves a gap and a broken link."""
    entries, checkpoints = build()
    del entries[4]

    problems = check(entries, checkpoints)

    assert any(p.startswith("entry 5: missing") for p in problems)


def test_reordered_entries_are_found() -> None:
    """Swapping two entries is reported."""
    entries, checkpoints = build()
    entries[7], entries[8] = entries[8], entries[7]

    problems = check(entries, checkpoints)

    assert problems
    assert any("out of order" in p or "missing" in p for p in problems)


def test_a_truncated_log_is_found_by_its_checkpoint() -> None:
    """Cutting the last entries is shown by a later signed checkpoint."""
    entries, checkpoints = build()
    del entries[25:]

    problems = check(entries, checkpoints)

    assert problems == ["entry 30: truncated: the log ends at entry 25"]


def test_a_forged_checkpoint_is_found() -> None:
    """A checkpoint not signed by the node's key is refused."""
    entries, checkpoints = build()
    other = Ed25519PrivateKey.generate()
    forged = AuditChain("exam-1", entries[-1].seq, entries[-1].hash)
    checkpoints[-1] = forged.checkpoint(other, T0)

    problems = check(entries, checkpoints)

    assert problems == ["entry 30: checkpoint signature is not valid"]


def test_resumed_chain_continues_the_same_links() -> None:
    """A new writer resumes the chain from the last stored entry."""
    entries, _ = build(5, 5)
    chain = AuditChain.resume("exam-1", entries[-1])

    entries.append(chain.append(T0 + 99, "submitted", "s1", {}))

    assert check(entries, []) == []
    assert entries[-1].seq == 6


@pytest.mark.parametrize("tamper", ["none", "change", "truncate"])
def test_verify_log_command(tmp_path: Path, tamper: str) -> None:
    """``lophoc verify-log`` exits 0 on an intact export and 1 on tampering."""
    entries, checkpoints = build()
    if tamper == "change":
        entries[3] = msgspec.structs.replace(entries[3], actor="someone-else")
    elif tamper == "truncate":
        del entries[-3:]
    lines = [LogHeader("exam-1", public_key_hex(KEY)), *entries, *checkpoints]
    path = tmp_path / "exam-1.log"
    path.write_bytes(b"\n".join(msgspec.json.encode(line) for line in lines))

    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "verify-log", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == (0 if tamper == "none" else 1), result.stdout
    assert ("intact" in result.stdout) == (tamper == "none")
