"""``lophoc lesson``: create from a file, join with a code, read a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client_sdk.protocol import Role
from server.auth import verify

SECRET = "lesson-cli-secret-" + "x" * 40
LESSON = """
title: Unit 5
id: cli-lesson
host: {user: t-lan, name: Co Lan}
classes:
  - school: THCS A
    class: 8A
    co_teacher: {user: t-hoa}
    students: [{user: s-an, name: An}]
  - {school: THCS B, class: 8B}
activities:
  - kind: quiz
    title: Q
    questions:
      - {kind: true_false, prompt: "Rice is a fruit", answer: false}
"""
BAD = """
title: Bad
host: {user: t}
classes: [{school: A, class: 8A}]
activities:
  - {kind: material, title: ""}
  - kind: quiz
    title: Q
    questions: [{kind: single, prompt: x, options: [a, b], answer: 5}]
"""


def lophoc(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPHOC_")}
    env["LOPHOC_SECRET"] = SECRET
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def lesson_file(tmp_path: Path) -> Path:
    path = tmp_path / "unit5.yaml"
    path.write_text(LESSON)
    return path


def test_create_prints_tokens_and_codes(tmp_path: Path, lesson_file: Path) -> None:
    """A valid file is stored and its host token and join codes are printed."""
    result = lophoc(tmp_path, "lesson", "create", str(lesson_file))

    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["id"] == "cli-lesson"
    host = verify(SECRET, created["host"]["token"])
    assert host.role is Role.TEACHER
    assert host.rooms == ("cli-lesson",)
    first, second = created["classes"]
    assert len(first["code"]) == 8
    assert first["co_teacher"]["user"] == "t-hoa"
    assert first["students"][0]["code"]
    assert second["co_teacher"] is None or "co_teacher" not in second


def test_create_twice_is_refused(tmp_path: Path, lesson_file: Path) -> None:
    """A lesson id is created once; the second attempt names it."""
    lophoc(tmp_path, "lesson", "create", str(lesson_file))
    again = lophoc(tmp_path, "lesson", "create", str(lesson_file))

    assert again.returncode == 2
    assert "cli-lesson" in again.stderr


def test_bad_file_lists_every_bad_path(tmp_path: Path) -> None:
    """Each bad part of a lesson file is reported with its path."""
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)

    result = lophoc(tmp_path, "lesson", "create", str(path))

    assert result.returncode == 2
    assert "activities[0].title" in result.stderr
    assert "activities[1].questions[0].answer" in result.stderr


def test_join_code_gives_a_student_token(tmp_path: Path, lesson_file: Path) -> None:
    """A class code and a name become a student token for that class."""
    created = json.loads(lophoc(tmp_path, "lesson", "create", str(lesson_file)).stdout)
    code = created["classes"][1]["code"]

    joined = lophoc(tmp_path, "lesson", "join", code.lower(), "Trần Bình")
    nameless = lophoc(tmp_path, "lesson", "join", code)
    unknown = lophoc(tmp_path, "lesson", "join", "ZZZZZZZZ", "X")

    assert joined.returncode == 0, joined.stderr
    claims = verify(SECRET, json.loads(joined.stdout)["token"])
    assert (claims.role, claims.school, claims.class_) == (
        Role.STUDENT,
        "THCS B",
        "8B",
    )
    assert claims.name == "Trần Bình"
    assert nameless.returncode == 2
    assert "name" in nameless.stderr
    assert unknown.returncode == 2


def test_report_of_a_fresh_lesson(tmp_path: Path, lesson_file: Path) -> None:
    """A lesson nobody attended yet has an empty report, in JSON and CSV."""
    lophoc(tmp_path, "lesson", "create", str(lesson_file))

    as_json = lophoc(tmp_path, "lesson", "report", "cli-lesson")
    as_csv = lophoc(tmp_path, "lesson", "report", "cli-lesson", "--csv")
    missing = lophoc(tmp_path, "lesson", "report", "no-such-lesson")

    report = json.loads(as_json.stdout)
    assert report["title"] == "Unit 5"
    assert report["attendance"] == []
    assert as_csv.stdout.splitlines()[0].startswith("school,class,user,name")
    assert missing.returncode == 2


@pytest.mark.parametrize("action", ["create", "report", "join"])
def test_each_lesson_command_has_help(tmp_path: Path, action: str) -> None:
    """``lophoc lesson ACTION --help`` explains the command."""
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "lesson", action, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0
    assert "--data-dir" in result.stdout
