// What the student and teacher pages share of a lesson: its state kept from
// the events, and the current activity as both pages show it.

import { h, setTitle, t } from "./page.js";

/** Only web addresses become links: a plan's `url` never runs script. */
function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** The activity `activity` (an ActivityView, or null) of a plan of `total`. */
export function activityView(activity, total) {
  if (!activity) return h("p", { id: "activity-title" }, t("lesson.none"));
  const url = activity.url ? safeUrl(activity.url) : null;
  return h(
    "div",
    { class: `activity ${activity.kind}` },
    h("p", { class: "muted" }, t("activity.step", { n: activity.index + 1, total }), " · ", t(`activity.${activity.kind}`)),
    h("p", { class: "big", id: "activity-title" }, activity.title),
    activity.prompt ? h("p", { class: "prompt" }, activity.prompt) : null,
    url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, t("activity.open")) : null,
  );
}

/** Whole seconds from now until the server time `at`, never below 0. */
function secondsUntil(client, at) {
  return Math.max(0, Math.ceil(client.untilServerTime(at) / 1000));
}

/** The countdown line of an asked question: until it opens, then until it closes. */
export function questionCountdown(client, asked, revealed) {
  if (client.untilServerTime(asked.opens_at) > 0) {
    const seconds = secondsUntil(client, asked.opens_at);
    return t("quiz.wait", { number: asked.question.number, seconds });
  }
  if (asked.closed || revealed || client.untilServerTime(asked.closes_at) <= 0) {
    return t("quiz.closed");
  }
  return t("quiz.left", { seconds: secondsUntil(client, asked.closes_at) });
}

/** Who holds the floor (a Turn, or null) and for how long still; `me` is "you". */
export function floorText(client, floor, me) {
  if (!floor) return t("floor.none");
  const left = floor.ends_at
    ? ` (${t("floor.left", { seconds: secondsUntil(client, floor.ends_at) })})`
    : "";
  const who = floor.user === me
    ? t("floor.you")
    : t("floor.other", { name: floor.name, school: floor.school });
  return who + left;
}

/** The leaderboards of a `question_revealed` event as two tables. */
function leaderboards(revealed) {
  const students = h(
    "table",
    { class: "board" },
    h("caption", {}, t("board.heading")),
    h("tr", {}, h("th", { scope: "col" }, t("board.rank")), h("th", { scope: "col" }, t("board.name")), h("th", { scope: "col" }, t("board.school")), h("th", { scope: "col" }, t("board.points"))),
    (revealed.leaderboard ?? []).map((row) =>
      h("tr", {}, h("td", {}, row.rank), h("td", {}, row.name), h("td", {}, row.school), h("td", {}, row.points)),
    ),
  );
  const schools = h(
    "table",
    { class: "board schools" },
    h("caption", {}, t("board.schools")),
    h("tr", {}, h("th", { scope: "col" }, t("board.rank")), h("th", { scope: "col" }, t("board.school")), h("th", { scope: "col" }, t("board.students")), h("th", { scope: "col" }, t("board.points")), h("th", { scope: "col" }, t("board.average"))),
    (revealed.schools ?? []).map((row) =>
      h("tr", {}, h("td", {}, row.rank), h("td", {}, row.school), h("td", {}, row.students), h("td", {}, row.points), h("td", {}, Math.round(row.average))),
    ),
  );
  return [students, schools];
}

/** A question's right answer in words, from a `question_revealed` event. */
function answerText(question, revealed) {
  const answer = revealed.answer;
  if (revealed.accepted) return revealed.accepted.join(" / ");
  if (typeof answer === "boolean") return t(answer ? "quiz.true" : "quiz.false");
  if (Array.isArray(answer)) return answer.map((i) => question?.options[i] ?? i).join(", ");
  if (typeof answer === "number") return question?.options[answer] ?? String(answer);
  return "";
}

/**
 * What a reveal shows: the right answer, then `line` (a student's own
 * result, when given), then the leaderboards.
 */
export function revealView(question, revealed, line = null) {
  return [
    h("p", { class: "answer" }, t("reveal.answer", { answer: answerText(question, revealed) })),
    line,
    ...leaderboards(revealed),
  ];
}

/**
 * A lesson as a page knows it: the `lesson` snapshot, then the events after
 * it (docs/protocol.md, "Lessons"). After each change it calls
 * `render(part)`, `part` one of "all" (a new snapshot), "activity",
 * "question" (asked, closed, revealed or a student's own result), "tally",
 * "hands" and "floor"; the page draws that part again.
 */
export class LessonState {
  constructor(client, render) {
    this.lesson = null;
    this.activity = null;
    this.asked = null;
    this.revealed = null;
    this.result = null;
    this.tally = null;
    this.queue = [];
    this.policy = "first_come";
    this.floor = null;
    this.ended = false;
    const on = (type, part, apply) =>
      client.on(type, (event) => {
        apply(event);
        render(part);
      });
    on("lesson", "all", ({ lesson }) => {
      this.lesson = lesson;
      this.activity = lesson.activity ?? null;
      this.ended = lesson.ended ?? false;
      this.queue = lesson.queue ?? [];
      this.policy = lesson.policy ?? this.policy;
      this.floor = lesson.floor ?? null;
      this.asked = lesson.question ?? null;
      // A snapshot's question is still open: an older reveal is not its.
      if (this.asked) this.revealed = null;
      setTitle(lesson.title);
    });
    on("activity", "activity", (event) => { this.activity = event.activity; });
    on("lesson_ended", "activity", () => { this.ended = true; });
    on("question_opened", "question", (event) => {
      this.asked = { ...event, closed: false };
      this.revealed = null;
      this.result = null;
      this.tally = null;
    });
    on("question_closed", "question", (event) => {
      if (this.asked?.question.number === event.number) this.asked.closed = true;
    });
    on("question_revealed", "question", (event) => {
      this.revealed = event;
      if (this.asked) this.asked.closed = true;
    });
    on("result", "question", (notice) => { this.result = notice; });
    on("answer_tally", "tally", (tally) => {
      if (this.asked?.question.number === tally.number) this.tally = tally;
    });
    on("hand_queue", "hands", (event) => {
      this.queue = event.queue ?? [];
      this.policy = event.policy ?? this.policy;
    });
    on("floor_granted", "floor", (event) => { this.floor = event.turn; });
    on("floor_released", "floor", () => { this.floor = null; });
  }
}
