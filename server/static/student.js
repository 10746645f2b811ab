// The student's page: the current activity, the quiz at `opens_at`, the hand
// and the floor, a microphone check, and the classes by school.

import { AudioPeer, microphoneLevel } from "/sdk/lophoc_media.js";
import {
  Roster,
  answerText,
  connect,
  everyTick,
  fill,
  floorText,
  h,
  leaderboards,
  notify,
  questionCountdown,
  setUpLanguage,
  signedInToken,
  t,
  whenLanguage,
} from "./page.js";
import { activityView } from "./lesson_view.js";

setUpLanguage();
const client = connect(signedInToken());

const state = {
  lesson: null,
  activity: null,
  asked: null,
  revealed: null,
  result: null,
  queue: [],
  floor: null,
  muted: false,
  ended: false,
};
// The quiz form is built once per question and then only updated, so that
// what the student typed survives re-renders, reconnects and resyncs.
const quiz = { number: null, form: null, status: null, countdown: null, sent: null };

if (client) start(client);

function start(client) {
  const me = client.claims.sub;
  const roster = new Roster(client, () => fill("roster", roster.render()));
  const audio = new AudioPeer(client, { slots: 2, output: document.getElementById("speakers") });

  client.on("lesson", ({ lesson }) => {
    state.lesson = lesson;
    state.activity = lesson.activity ?? null;
    state.ended = lesson.ended ?? false;
    state.queue = lesson.queue ?? [];
    state.floor = lesson.floor ?? null;
    state.asked = lesson.question ?? null;
    if (state.asked) state.revealed = null;
    document.getElementById("title").textContent = lesson.title;
    renderAll();
    applyFloor();
  });
  client.on("activity", (event) => {
    state.activity = event.activity;
    renderActivity();
  });
  client.on("question_opened", (event) => {
    state.asked = { ...event, closed: false };
    state.revealed = null;
    state.result = null;
    renderQuiz();
  });
  client.on("question_closed", (event) => {
    if (state.asked?.question.number === event.number) state.asked.closed = true;
    renderQuiz();
  });
  client.on("question_revealed", (event) => {
    state.revealed = event;
    if (state.asked) state.asked.closed = true;
    renderQuiz();
  });
  client.on("result", (notice) => {
    state.result = notice;
    renderQuiz();
  });
  client.on("lesson_ended", () => {
    state.ended = true;
    renderActivity();
  });
  client.on("hand_queue", (event) => {
    state.queue = event.queue ?? [];
    renderHand();
  });
  client.on("floor_granted", (event) => {
    state.floor = event.turn;
    applyFloor();
  });
  client.on("floor_released", () => {
    state.floor = null;
    applyFloor();
  });
  client.on("mute_changed", (event) => {
    if (event.user === me) state.muted = event.muted;
    renderHand();
  });

  document.getElementById("hand").addEventListener("click", async () => {
    const raised = state.queue.some((entry) => entry.user === me);
    try {
      if (raised) await client.lowerHand();
      else await client.raiseHand();
    } catch (error) {
      notify(t("quiz.error", { message: error.message }));
    }
  });
  document.getElementById("mic-check").addEventListener("click", checkMicrophone);

  function renderAll() {
    renderActivity();
    renderQuiz();
    renderHand();
  }

  function renderActivity() {
    if (state.ended) {
      fill("activity", h("p", { class: "big" }, t("lesson.ended")));
      return;
    }
    fill("activity", activityView(state.activity, state.lesson?.activities ?? 0));
  }

  function renderQuiz() {
    const asked = state.asked;
    if (!asked) {
      quiz.number = null;
      fill("quiz", h("p", {}, t("quiz.none")));
      fill("results");
      return;
    }
    if (quiz.number !== asked.question.number) buildForm(asked);
    const closed = asked.closed || state.revealed !== null;
    for (const control of quiz.form.querySelectorAll("button, input")) {
      control.disabled = closed || (quiz.sent === "sent" && !asked.allow_change);
    }
    renderResults();
    tick();
  }

  function renderResults() {
    const revealed = state.revealed;
    if (!revealed) {
      fill("results");
      return;
    }
    const result = state.result;
    let line = null;
    if (result) {
      const values = { points: result.points, total: result.total, rank: result.rank };
      const key = !result.answered ? "result.missed" : result.right ? "result.right" : "result.wrong";
      line = h("p", { class: result.right ? "good big" : "big", id: "result" }, t(key, values));
    }
    fill(
      "results",
      h("p", { class: "answer" }, t("reveal.answer", { answer: answerText(state.asked?.question, revealed) })),
      line,
      leaderboards(revealed),
    );
  }

  function buildForm(asked) {
    const question = asked.question;
    quiz.number = question.number;
    quiz.sent = null;
    quiz.status = h("p", { class: "status", id: "answer-status", "aria-live": "polite" });
    quiz.countdown = h("p", { class: "countdown", id: "countdown" });
    const prompt = h("p", { class: "prompt big", id: "prompt" }, question.prompt);
    quiz.form = h("div", { class: "answers", id: "answers" }, answerControls(question));
    quiz.body = h("div", { id: "question-body" }, prompt, quiz.form, quiz.status);
    fill("quiz", quiz.countdown, quiz.body);
    // Shown at opens_at to the millisecond the clock offset allows, not at
    // the next quarter-second tick.
    const wait = client.untilServerTime(asked.opens_at);
    if (wait > 0) setTimeout(tick, wait);
  }

  function answerControls(question) {
    const choose = (value) => () => send(value);
    switch (question.kind) {
      case "single":
        return question.options.map((option, index) =>
          h("button", { type: "button", class: "option", onclick: choose(index) }, option),
        );
      case "true_false":
        return [
          h("button", { type: "button", class: "option", onclick: choose(true), dataset: { i18n: "quiz.true" } }, t("quiz.true")),
          h("button", { type: "button", class: "option", onclick: choose(false), dataset: { i18n: "quiz.false" } }, t("quiz.false")),
        ];
      case "multiple": {
        const boxes = question.options.map((option, index) =>
          h("label", { class: "check" }, h("input", { type: "checkbox", value: index }), " ", option),
        );
        const submit = () => {
          const chosen = boxes
            .map((label) => label.querySelector("input"))
            .filter((box) => box.checked)
            .map((box) => Number(box.value));
          send(chosen);
        };
        return [...boxes, h("button", { type: "button", class: "primary", onclick: submit }, t("quiz.send"))];
      }
      case "ordering": {
        const order = [];
        const shown = h("ol", { class: "order" });
        const redraw = () => shown.replaceChildren(...order.map((i) => h("li", {}, question.options[i])));
        const pick = (index) => () => {
          if (!order.includes(index)) order.push(index);
          redraw();
        };
        return [
          h("p", {}, t("quiz.order")),
          question.options.map((option, index) =>
            h("button", { type: "button", class: "option", onclick: pick(index) }, option),
          ),
          shown,
          h("button", { type: "button", onclick: () => { order.length = 0; redraw(); } }, t("quiz.order.reset")),
          h("button", { type: "button", class: "primary", onclick: () => send([...order]) }, t("quiz.send")),
        ];
      }
      default: {
        const key = `lophoc.draft.${client.room}.${question.number}`;
        const input = h("input", {
          id: "text-answer",
          type: "text",
          maxlength: 500,
          autocomplete: "off",
          oninput: (event) => sessionStorage.setItem(key, event.target.value),
        });
        input.value = sessionStorage.getItem(key) ?? "";
        const submit = (event) => {
          event.preventDefault();
          send(input.value.trim());
        };
        return h(
          "form",
          { onsubmit: submit },
          h("label", { for: "text-answer" }, t("quiz.text")),
          input,
          h("button", { type: "submit", class: "primary" }, t("quiz.send")),
        );
      }
    }
  }

  async function send(value) {
    const number = quiz.number;
    quiz.sent = "sending";
    quiz.status.textContent = t("quiz.sending");
    try {
      await client.answer(number, value);
      if (quiz.number !== number) return;
      quiz.sent = "sent";
      quiz.status.textContent = t("quiz.sent");
      renderQuiz();
    } catch (error) {
      if (quiz.number !== number) return;
      quiz.sent = null;
      quiz.status.textContent = t("quiz.error", { message: error.message });
    }
  }

  function tick() {
    const asked = state.asked;
    if (!asked || !quiz.countdown) return;
    quiz.body.hidden = client.untilServerTime(asked.opens_at) > 0;
    quiz.countdown.textContent = questionCountdown(client, asked, state.revealed);
    if (state.floor) renderFloorLine();
  }

  function renderHand() {
    const index = state.queue.findIndex((entry) => entry.user === me);
    const button = document.getElementById("hand");
    button.textContent = t(index >= 0 ? "hand.lower" : "hand.raise");
    button.setAttribute("aria-pressed", String(index >= 0));
    button.disabled = state.muted;
    document.getElementById("hand-state").textContent = state.muted
      ? t("hand.muted")
      : index >= 0
        ? t("hand.raised", { position: index + 1 })
        : "";
  }

  function renderFloorLine() {
    const line = document.getElementById("floor");
    line.textContent = floorText(client, state.floor, me);
    line.className = state.floor?.user === me ? "speaking big" : "";
  }

  async function applyFloor() {
    renderFloorLine();
    renderHand();
    const mine = state.floor?.user === me;
    if (mine && !audio.microphone) {
      try {
        await audio.setMicrophone(await navigator.mediaDevices.getUserMedia({ audio: true }));
      } catch (error) {
        notify(t("mic.denied", { message: error.message }));
      }
    } else if (!mine && audio.microphone) {
      await audio.setMicrophone(null);
    }
    document.body.dataset.speaking = String(mine && audio.microphone !== null);
  }

  async function checkMicrophone() {
    const line = document.getElementById("mic-state");
    const meter = document.getElementById("mic-level");
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const loudest = await microphoneLevel(stream, 2500, (level) => { meter.value = level; });
      if (stream !== audio.microphone) for (const track of stream.getTracks()) track.stop();
      line.textContent = t(loudest > 0.02 ? "mic.ok" : "mic.silent");
    } catch (error) {
      line.textContent = t("mic.denied", { message: error.message });
    }
  }

  whenLanguage(() => {
    fill("roster", roster.render());
    if (state.lesson) renderAll();
    renderFloorLine();
  });
  everyTick(tick);

  client
    .connect()
    .then(() => client.join())
    .then(() => audio.start())
    .catch((error) => notify(error.message));
}
