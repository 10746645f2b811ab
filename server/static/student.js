// The student's page: the current activity, the quiz at `opens_at`, the hand
// and the floor, a microphone check, and the classes by school.

import { VideoPeer, microphoneLevel } from "/sdk/lophoc_media.js";
import { Roster, connect, enter, everyTick, fill, h, notify, onVideoSteps, say, setUpLanguage, signedInToken, t, whenLanguage } from "./page.js";
import { LessonState, activityView, floorText, questionCountdown, revealView } from "./lesson_view.js";

setUpLanguage();
const client = connect(signedInToken());

// The quiz form is built once per question and then only updated, so that
// what the student typed survives re-renders, reconnects and resyncs.
const quiz = { number: null, form: null, status: null, countdown: null, sent: null };

if (client) start(client);

function start(client) {
  const me = client.claims.sub;
  const roster = new Roster(client, () => fill("roster", roster.render()));
  // Two voices (the host and the floor holder) and one picture: the host's
  // camera, or the class on stage.
  const media = new VideoPeer(client, {
    slots: 2,
    output: document.getElementById("speakers"),
    videoOutput: document.getElementById("videos"),
  });

  let muted = false;
  const state = new LessonState(client, (part) => {
    if (part === "all") {
      renderAll();
      applyFloor();
    } else if (part === "activity") renderActivity();
    else if (part === "question") renderQuiz();
    else if (part === "hands") renderHand();
    else if (part === "floor") applyFloor();
  });
  client.on("mute_changed", (event) => {
    if (event.user === me) muted = event.muted;
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
  document.getElementById("audio-only").addEventListener("click", toggleVideo);
  onVideoSteps(client);

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
    fill("results", revealView(state.asked?.question, revealed, line));
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
    // The chosen option stays marked, so the student sees what was sent.
    const choose = (value) => (event) => {
      for (const option of quiz.form.querySelectorAll("button.option")) {
        option.setAttribute("aria-pressed", String(option === event.currentTarget));
      }
      send(value);
    };
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

  /** On a weak link: ask the node to stop the pictures (audio only), or again for them. */
  async function toggleVideo() {
    const button = document.getElementById("audio-only");
    const off = media.quality !== "off";
    button.disabled = true;
    try {
      const answer = await media.setQuality(off ? "off" : "high");
      button.setAttribute("aria-pressed", String(off));
      say(button, off ? "video.on" : "video.off");
      document.getElementById("videos").hidden = off;
      // What the node forwards now, as its answer says.
      document.body.dataset.video = answer?.forwarded ?? (off ? "off" : "high");
    } catch (error) {
      notify(t("quiz.error", { message: error.message }));
    } finally {
      button.disabled = false;
    }
  }

  async function send(value) {
    const number = quiz.number;
    quiz.sent = "sending";
    say(quiz.status, "quiz.sending");
    try {
      await client.answer(number, value);
      if (quiz.number !== number) return;
      quiz.sent = "sent";
      say(quiz.status, "quiz.sent");
      renderQuiz();
    } catch (error) {
      if (quiz.number !== number) return;
      quiz.sent = null;
      say(quiz.status, "quiz.error", { message: error.message });
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
    button.disabled = muted;
    document.getElementById("hand-state").textContent = muted
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
    if (mine && !media.microphone) {
      try {
        await media.setMicrophone(await navigator.mediaDevices.getUserMedia({ audio: true }));
      } catch (error) {
        notify(t("mic.denied", { message: error.message }));
      }
    } else if (!mine && media.microphone) {
      await media.setMicrophone(null);
    }
    document.body.dataset.speaking = String(mine && media.microphone !== null);
  }

  async function checkMicrophone() {
    const line = document.getElementById("mic-state");
    const meter = document.getElementById("mic-level");
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const loudest = await microphoneLevel(stream, 2500, (level) => { meter.value = level; });
      if (stream !== media.microphone) for (const track of stream.getTracks()) track.stop();
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

  enter(client, () => media.start());
}
