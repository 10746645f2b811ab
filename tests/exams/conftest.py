"""Real ``lophoc serve`` processes running exam rooms, and exam files to post.

Exams are driven end to end as a province runs them: an examiner posts an
exam file to ``/api/exams``, students and proctors connect with the tokens
it returns, and everything they receive is kept, frame by frame, by the
lesson tests' :class:`Watcher`. Every item and every key of the papers
here carries a marker string, so a test can look for a leak in raw frames.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk import Role
from server import auth
from tests.helpers import closing
from tests.lessons.conftest import (
    REPO,
    SECRET,
    Crowd,
    ServerProcess,
    Watcher,
    admin_token,
    bearer,
    crowd,
    redis_nodes,
    server,
)

#: In every item's prompt and options: what only a student's own variant
#: (after opens_at) and the examiner may carry.
ITEM_MARKER = "ITEMMARK"
#: In every accepted answer of the keys: what no student or proctor receives.
KEY_MARKER = "KEYMARK"
ITEMS = ["q1", "q2", "q3", "q4", "q5", "q6"]
#: The items answered with ``exam_save``: all but the speaking one, q6.
WRITTEN = ITEMS[:-1]


def now_ms() -> int:
    """This machine's wall clock, which the servers on loopback share."""
    return time.time_ns() // 1_000_000


def token(user: str, role: Role, room: str) -> str:
    """A token for ``room`` that the exam file did not hand out."""
    return auth.mint(
        SECRET, user=user, role=role, rooms=[room], school="THCS Ba Đình", class_="9A"
    )


def paper() -> dict[str, Any]:
    """Two sections, every kind of item, a marker in each prompt and key."""
    return {
        "title": "English 9 mid-term",
        "sections": [
            {
                "title": "Reading",
                "items": [
                    {
                        "id": "q1",
                        "kind": "single",
                        "prompt": f"{ITEM_MARKER}-q1 Which is a fruit?",
                        "options": [f"{ITEM_MARKER}-apple", "car", "dog", "sky"],
                        "answer": 0,
                    },
                    {
                        "id": "q2",
                        "kind": "multiple",
                        "prompt": f"{ITEM_MARKER}-q2 Which are colours?",
                        "options": ["red", "blue", f"{ITEM_MARKER}-run", "eat"],
                        "answer": [0, 1],
                    },
                    {
                        "id": "q3",
                        "kind": "short_text",
                        "prompt": f"{ITEM_MARKER}-q3 Opposite of hot?",
                        "answer": ["cold", f"{KEY_MARKER}-chilly"],
                    },
                    {
                        "id": "q4",
                        "kind": "gap_fill",
                        "prompt": f"{ITEM_MARKER}-q4 I ___ a student.",
                        "answer": [["am", f"{KEY_MARKER}-gap"]],
                    },
                ],
            },
            {
                "title": "Listening and speaking",
                "items": [
                    {
                        "id": "q5",
                        "kind": "single",
                        "prompt": f"{ITEM_MARKER}-q5 What did you hear?",
                        "options": ["a cat", "a dog", "a bird"],
                        "answer": 2,
                        "audio": "https://media.example.org/q5.mp3",
                    },
                    {
                        "id": "q6",
                        "kind": "speaking",
                        "prompt": f"{ITEM_MARKER}-q6 Talk about your school.",
                        "seconds": 60,
                        "points": 5,
                    },
                ],
            },
        ],
    }


def exam_file(
    room: str,
    students: int,
    *,
    opens_in_ms: int = 0,
    duration_ms: int = 60_000,
    late_join_ms: int = 60_000,
    extra_ms: dict[str, int] | None = None,
    allow_back: bool = True,
    proctors: list[str] | None = None,
    examiners: list[str] | None = None,
) -> dict[str, Any]:
    """An exam file for ``students`` students ``s-0``... in two schools."""
    return {
        "id": room,
        "opens_at": now_ms() + opens_in_ms,
        "duration_minutes": duration_ms / 60_000,
        "late_join_minutes": late_join_ms / 60_000,
        "allow_back": allow_back,
        "extra_minutes": {u: ms / 60_000 for u, ms in (extra_ms or {}).items()},
        "students": [
            {
                "user": f"s-{i}",
                "name": f"Student {i}",
                "school": "THCS Ba Đình" if i % 2 == 0 else "THCS Cầu Giấy",
                "class": "9A",
            }
            for i in range(students)
        ],
        "proctors": [{"user": p} for p in (proctors or ["p-1"])],
        "examiners": examiners or [],
        "paper": paper(),
    }


class ExamApi:
    """The exam HTTP API of one server."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.http_url, timeout=10.0)

    async def create(
        self, exam: dict[str, Any], token: str | None = None
    ) -> httpx.Response:
        """POST an exam file as JSON; the response as it came."""
        return await self.http.post(
            "/api/exams", json=exam, headers=bearer(token or admin_token())
        )

    async def tokens(self, exam: dict[str, Any]) -> dict[str, str]:
        """Create the exam; the token of every student and proctor by user."""
        response = await self.create(exam)
        assert response.status_code == 201, response.text
        body = response.json()
        return {a["user"]: a["token"] for a in body["students"] + body["proctors"]}

    async def results(
        self, room: str, token: str | None = None, *, csv: bool = False
    ) -> httpx.Response:
        """GET the room's results, as JSON or CSV."""
        return await self.http.get(
            f"/api/exams/{room}/results",
            params={"format": "csv"} if csv else None,
            headers=bearer(token or admin_token()),
        )

    async def log(self, room: str, token: str | None = None) -> httpx.Response:
        """GET the room's exported log."""
        return await self.http.get(
            f"/api/exams/{room}/log", headers=bearer(token or admin_token())
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[ExamApi]:
    """The exam API of the module's server."""
    async with closing(ExamApi(server)) as client:
        yield client


async def seated(
    server: ServerProcess,
    api: ExamApi,
    crowd: Crowd,
    exam: dict[str, Any],
    *users: str,
) -> tuple[dict[str, str], list[Watcher]]:
    """Create ``exam``; every token, and ``users`` (s-0 alone by default) joined."""
    tokens = await api.tokens(exam)
    room = str(exam["id"])
    people = [
        await crowd.enter(user, server, tokens[user], room) for user in users or ["s-0"]
    ]
    return tokens, people


def verify_log(
    path: Path, public_key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``lophoc verify-log`` on ``path``, as an examiner runs it.

    With ``public_key``, the operator's published key is checked against,
    not the one the file's header names.
    """
    key = ["--public-key", public_key] if public_key else []
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "verify-log", str(path), *key],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def shared_key(directories: list[Path]) -> None:
    """Give each node's data directory the same log signing key.

    The nodes of one deployment share one key, as they share the token key,
    so a log whose checkpoints were signed on either verifies with one key.
    """
    seed = Ed25519PrivateKey.generate().private_bytes_raw().hex()
    for directory in directories:
        data = directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "audit.key").write_text(seed + "\n")


@pytest.fixture
def nodes(redis_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ...]]:
    """Two nodes, A and B, on one Redis, with one signing key."""
    shared_key([tmp_path / "node-a", tmp_path / "node-b"])
    with redis_nodes(tmp_path, redis_url) as started:
        yield started


#: The lesson tests' fixtures: a server on the embedded defaults, and
#: watched clients.
__all__ = ["crowd", "server"]
