"""The lesson HTTP API's refusals and its YAML lesson files, on a real server."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from client_sdk import Role
from server import auth

from .conftest import SECRET, Api, ServerProcess, bearer


def teacher_token(user: str) -> str:
    """A teacher's token that opens no lesson yet."""
    return auth.mint(SECRET, user=user, role=Role.TEACHER, rooms=["staff-room"])


def small_lesson(host: str = "t-minh") -> dict[str, Any]:
    """A valid lesson of one class, with an id no other test uses."""
    return {
        "id": f"lesson-{secrets.token_hex(4)}",
        "title": "Small lesson",
        "host": {"user": host},
        "classes": [{"school": "THCS Hoàn Kiếm", "class": "7A"}],
    }


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's server."""
    client = Api(server)
    yield client
    await client.close()


async def test_bad_lesson_file_lists_every_bad_path(api: Api) -> None:
    """A lesson file with three bad parts is refused with 422 naming each path."""
    lesson = small_lesson()
    lesson["activities"] = [
        {
            "kind": "quiz",
            "title": "Quiz",
            "questions": [
                {"kind": "single", "prompt": "?", "options": ["a", "b"], "answer": 5}
            ],
        },
        {"kind": "material", "title": "Slides", "url": "ftp://example.org/1"},
        {
            "kind": "quiz",
            "title": "Quiz 2",
            "questions": [
                {"kind": "short_text", "prompt": "?", "answer": ["x"], "seconds": 2}
            ],
        },
    ]

    response = await api.create(lesson)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_lesson"
    assert [p["path"] for p in body["problems"]] == [
        "activities[0].questions[0].answer",
        "activities[1].url",
        "activities[2].questions[0].seconds",
    ]
    assert all(p["message"] for p in body["problems"])


async def test_class_listed_twice_is_a_problem_of_its_own(api: Api) -> None:
    """Checks across classes name the class at fault."""
    lesson = small_lesson()
    lesson["classes"] = lesson["classes"] * 2

    response = await api.create(lesson)

    assert response.status_code == 422
    assert [p["path"] for p in response.json()["problems"]] == ["classes[1]"]


async def test_teacher_cannot_create_a_lesson_for_another_host(api: Api) -> None:
    """A teacher who is not the file's host gets 403; the host gets 201."""
    lesson = small_lesson(host="t-minh")

    refused = await api.create(lesson, teacher_token("t-other"))
    created = await api.create(lesson, teacher_token("t-minh"))

    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert created.status_code == 201, created.text
    assert created.json()["host"]["user"] == "t-minh"


async def test_students_cannot_create_lessons(api: Api, server: ServerProcess) -> None:
    """Only teachers and admins create lessons; a missing token is 401."""
    student = auth.mint(SECRET, user="s-1", role=Role.STUDENT, rooms=["r"])
    lesson = small_lesson()

    forbidden = await api.create(lesson, student)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        anonymous = await http.post("/api/lessons", json=lesson)

    assert forbidden.status_code == 403
    assert anonymous.status_code == 401


async def test_unknown_join_code_is_404(api: Api) -> None:
    """A code that names no lesson is 404; a class code without a name is 400."""
    lesson = small_lesson()
    created = await api.create(lesson)
    class_code = created.json()["classes"][0]["code"]

    unknown = await api.join("ZZZZ2222", "Lan")
    nameless = await api.join(class_code)
    typed = await api.join(f"{class_code[:4].lower()} {class_code[4:]}", "Lan")

    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_code"
    assert nameless.status_code == 400
    assert typed.status_code == 200
    assert typed.json()["lesson"] == lesson["id"]


async def test_yaml_lesson_file_is_accepted(server: ServerProcess) -> None:
    """A lesson file in YAML creates the lesson with a code per class."""
    room = f"lesson-{secrets.token_hex(4)}"
    text = f"""
id: {room}
title: Bài học liên trường
host: {{user: t-hoa, name: Thầy Hòa}}
classes:
  - {{school: THCS Ba Đình, class: 8A, co_teacher: {{user: co-1}}}}
  - school: THCS Cầu Giấy
    class: 8B
    students: [{{user: s-lan, name: Lan}}]
activities:
  - {{kind: material, title: Slides, url: "https://example.org/s"}}
"""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.post(
            "/api/lessons",
            content=text.encode(),
            headers={**bearer(teacher_token("t-hoa")), "content-type": "text/yaml"},
        )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"] == room
    assert [c["school"] for c in body["classes"]] == ["THCS Ba Đình", "THCS Cầu Giấy"]
    assert body["classes"][0]["co_teacher"]["user"] == "co-1"
    assert [s["user"] for s in body["classes"][1]["students"]] == ["s-lan"]
    assert all(len(c["code"]) == 8 for c in body["classes"])
