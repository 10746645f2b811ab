"""Exam papers: checking the file, per-student variants, and grading."""

from __future__ import annotations

import msgspec
import pytest

from client_sdk.protocol import ItemKind
from rooms.exam_paper import (
    grade,
    parse_paper,
    seed_for,
    variant,
)
from rooms.plan import PlanError

PAPER = """
title: English 9, term 1
sections:
  - title: Reading
    items:
      - {id: r1, kind: single, prompt: "KEYMARK-r1 Pick", options: [a, b, c, d],
         answer: 2, points: 2}
      - {id: r2, kind: multiple, prompt: "Pick two", options: [w, x, y, z],
         answer: [0, 3]}
      - {id: r3, kind: short_text, prompt: "Capital of France", answer: [Paris]}
  - title: Grammar
    shuffle: false
    items:
      - {id: g1, kind: gap_fill, prompt: "I ___ a student and she ___ a teacher.",
         answer: [[am], [is]]}
      - {id: l1, kind: single, prompt: "What did you hear?", options: [yes, no],
         answer: 1, audio: "https://example.org/l1.mp3"}
  - title: Speaking
    items:
      - {id: s1, kind: speaking, prompt: "Talk about your school", seconds: 60,
         points: 5}
"""
SECRET = b"exam-secret-1"


def test_a_valid_paper_parses_with_its_totals() -> None:
    """Items keep their kinds and points; the total adds them up."""
    paper = parse_paper(PAPER)

    assert [i.id for i in paper.items()] == ["r1", "r2", "r3", "g1", "l1", "s1"]
    assert paper.total() == 2 + 1 + 1 + 1 + 1 + 5
    assert paper.item("g1") is not None
    assert paper.item("g1").gaps == 2  # type: ignore[union-attr]


def test_every_bad_item_is_reported_with_its_path() -> None:
    """A wrong key, a gap count mismatch and a bad kind each get a path."""
    bad = """
title: Bad
sections:
  - title: A
    items:
      - {id: a1, kind: single, prompt: x, options: [a, b], answer: 3}
      - {id: a2, kind: gap_fill, prompt: "no gaps here", answer: [[x]]}
  - title: B
    items:
      - {id: b1, kind: essay, prompt: x}
"""
    with pytest.raises(PlanError) as refused:
        parse_paper(bad)

    paths = [path for path, _ in refused.value.problems]
    assert "sections[0].items[0].answer" in paths
    assert "sections[0].items[1].prompt" in paths
    assert "sections[1].items[0].kind" in paths


def test_duplicate_item_ids_are_refused() -> None:
    """Two items with one id would make answers ambiguous."""
    with pytest.raises(PlanError):
        parse_paper(PAPER.replace("id: r2", "id: r1"))


def test_variant_is_reproducible_per_student_and_differs_between() -> None:
    """The same student gets the same variant; students mostly differ."""
    paper = parse_paper(PAPER)

    first = variant(paper, seed_for(SECRET, "student-1"))
    again = variant(paper, seed_for(SECRET, "student-1"))
    others = {
        msgspec.json.encode(variant(paper, seed_for(SECRET, f"student-{n}")))
        for n in range(2, 30)
    }

    assert first == again
    assert msgspec.json.encode(first) not in others
    assert len(others) > 20
    # An unshuffled section keeps its order for everyone.
    assert [i.id for i in first.sections[1].items] == ["g1", "l1"]


def test_variant_never_carries_the_key() -> None:
    """No item view holds an answer, whatever its kind."""
    paper = parse_paper(PAPER)

    shown = msgspec.json.encode(variant(paper, 42)).decode()

    assert '"answer"' not in shown
    assert "Paris" not in shown
    assert "KEYMARK-r1" in shown


def test_grading_maps_the_students_option_order_back() -> None:
    """A student's chosen option is graded in their own shuffled order."""
    paper = parse_paper(PAPER)
    mine = variant(paper, seed_for(SECRET, "student-7"))
    r1 = paper.item("r1")
    r2 = paper.item("r2")
    assert r1 is not None
    assert r2 is not None
    order = mine.orders["r1"]
    right_shown = order.index(2)
    both_shown = [mine.orders["r2"].index(0), mine.orders["r2"].index(3)]

    assert grade(r1, order, right_shown) == 2
    assert grade(r1, order, (right_shown + 1) % 4) == 0
    assert grade(r2, mine.orders["r2"], both_shown) == 1
    assert grade(r2, mine.orders["r2"], both_shown[:1]) == 0
    assert grade(r1, order, "2") == 0


def test_text_and_gap_grading_and_speaking_left_to_examiners() -> None:
    """Short text and gaps ignore case; speaking items get no automatic grade."""
    paper = parse_paper(PAPER)
    items = {i.id: i for i in paper.items()}

    assert grade(items["r3"], [], "  paris ") == 1
    assert grade(items["g1"], [], ["AM", "is"]) == 1
    assert grade(items["g1"], [], ["am"]) == 0
    assert grade(items["s1"], [], "anything") is None
    assert items["s1"].kind is ItemKind.SPEAKING
