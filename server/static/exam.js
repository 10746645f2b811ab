// The exam page of a student: the variant fetched over the student's own
// connection at `opens_at`, each answer saved as it is given, the time
// left, a proctor's warnings, and the page's signals for the proctors.
// After a microphone check the page keeps its microphone on the exam room's
// media connection for the whole attempt: the server records spoken answers
// from it, tells the proctors when it hears voice on another item, and lets
// a proctor listen in.

import { AudioPeer, microphoneLevel } from "/sdk/lophoc_media.js";
import { connect, enter, everyTick, fill, h, notify, say, setTitle, setUpLanguage, signedInToken, t, whenLanguage } from "./page.js";

setUpLanguage();
const client = connect(signedInToken());

/** How long the microphone check listens, in ms. */
const CHECK_MS = 1500;
/** The loudest level (0 to 1) under which the check heard nothing. */
const QUIET = 0.01;

// `microphone` is the pending or settled opening of the microphone: it
// resolves with whether the microphone is on the media connection.
const exam = { state: null, built: false, saving: new Map(), media: null, microphone: null, speaking: null };

if (client) start(client);

/** `ms` as minutes and seconds, `m:ss`. */
function clock(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

function start(client) {
  const fetchExam = async () => {
    try {
      apply(await client.examFetch());
    } catch (error) {
      notify(error.message);
    }
  };

  // A notice says the exam opened or a proctor changed the attempt: the
  // variant and the times come with a fetch over this connection.
  client.on("exam_state", () => fetchExam());
  client.on("reconnected", () => fetchExam());
  client.on("exam_warning", (warning) => {
    const line = document.getElementById("warning");
    say(line, "exam.warning", { message: warning.message });
    line.hidden = false;
  });

  const signal = (kind) => () => {
    if (exam.state?.state === "running") client.examSignal(kind).catch(() => {});
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") signal("page_hidden")();
  });
  window.addEventListener("blur", signal("window_blur"));
  // Fullscreen can only be asked for from a click; leaving it while the
  // attempt runs is a signal, as hiding the page is.
  const fullscreen = document.getElementById("fullscreen");
  fullscreen.addEventListener("click", () => {
    document.documentElement.requestFullscreen().catch((error) => notify(error.message));
  });
  document.addEventListener("fullscreenchange", () => {
    fullscreen.hidden = document.fullscreenElement !== null || exam.state?.state !== "running";
    if (document.fullscreenElement === null) signal("fullscreen_left")();
  });
  document.addEventListener("copy", signal("copy"));
  document.addEventListener("paste", signal("paste"));

  document.getElementById("microphone-retry").addEventListener("click", () => {
    if (attempting() && !exam.media) exam.microphone = openMicrophone();
  });

  document.getElementById("submit").addEventListener("click", async () => {
    try {
      await client.examSubmit();
      await fetchExam();
    } catch (error) {
      notify(error.message);
    }
  });

  function apply(state) {
    exam.state = state;
    setTitle(state.title);
    if (state.sections && !exam.built) build(state);
    const running = state.state === "running";
    for (const control of document.querySelectorAll("#sections input, #sections button.speak")) {
      control.disabled = !running;
    }
    document.getElementById("submit").hidden = !running;
    if (attempting() && exam.microphone === null) exam.microphone = openMicrophone();
    if (!attempting() && exam.microphone !== null) {
      exam.microphone = null;
      closeMicrophone();
    }
    if (!running && exam.speaking !== null) {
      // The server ended the recording itself (a pause, the deadline, the end).
      exam.speaking = null;
      for (const button of document.querySelectorAll("button.speak")) {
        button.setAttribute("aria-pressed", "false");
        say(button, "exam.speak.start");
      }
    }
    document.getElementById("fullscreen").hidden = !running || document.fullscreenElement !== null;
    tick();
  }

  /** Whether the attempt is still going (a pause included). */
  function attempting() {
    return exam.state?.state === "running" || exam.state?.state === "paused";
  }

  /** Show the microphone indicator as `state`: checking, on, quiet or off. */
  function showMicrophone(state, values = {}) {
    const box = document.getElementById("microphone");
    box.hidden = false;
    box.dataset.state = state;
    say(document.getElementById("microphone-state"), `exam.mic.${state}`, values);
    document.getElementById("microphone-retry").hidden = state !== "off";
  }

  /**
   * The microphone check, then the microphone on a new media connection for
   * the rest of the attempt. Resolves with whether the microphone is on.
   */
  async function openMicrophone() {
    showMicrophone("checking");
    let stream = null;
    let media = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      // A page that never had a click may not run audio yet, and hears
      // nothing: the indicator then asks the student to check.
      const loudest = await microphoneLevel(stream, CHECK_MS);
      if (!attempting()) throw new Error(t("exam.closed"));
      media = new AudioPeer(client, { slots: 1 });
      exam.media = media;
      await media.setMicrophone(stream);
      await media.start();
      // The attempt may have ended meanwhile, closing this peer.
      if (exam.media !== media) return false;
      showMicrophone(loudest >= QUIET ? "on" : "quiet");
      return true;
    } catch (error) {
      if (media !== null && exam.media === media) {
        exam.media = null;
        await media.stop();
      }
      for (const track of stream?.getTracks() ?? []) track.stop();
      if (attempting()) showMicrophone("off", { message: error.message });
      return false;
    }
  }

  /** The attempt is over: the microphone goes off, the media connection closes. */
  async function closeMicrophone() {
    const media = exam.media;
    exam.media = null;
    document.getElementById("microphone").hidden = true;
    await media?.stop();
  }

  function build(state) {
    exam.built = true;
    fill(
      "sections",
      state.sections.map((section) =>
        h("section", { class: "card" }, h("h2", {}, section.title), section.items.map((item) => itemView(item, (state.answers ?? {})[item.id]))),
      ),
    );
  }

  function itemView(item, saved) {
    const status = h("span", { class: "status", id: `saved-${item.id}`, "aria-live": "polite" });
    const save = (value) => saveAnswer(item.id, value, status);
    const name = `item-${item.id}`;
    let controls;
    if (item.kind === "single") {
      controls = item.options.map((option, index) =>
        h("label", { class: "check" }, h("input", { type: "radio", name, value: index, checked: saved === index, onchange: () => save(index) }), " ", option),
      );
    } else if (item.kind === "multiple") {
      const boxes = item.options.map((option, index) =>
        h("input", { type: "checkbox", name, value: index, checked: Array.isArray(saved) && saved.includes(index) }),
      );
      const chosen = () => boxes.filter((box) => box.checked).map((box) => Number(box.value));
      for (const box of boxes) box.addEventListener("change", () => save(chosen()));
      controls = boxes.map((box, index) => h("label", { class: "check" }, box, " ", item.options[index]));
    } else if (item.kind === "gap_fill") {
      const inputs = Array.from({ length: item.gaps || 1 }, (_, n) =>
        h("input", { type: "text", id: `${name}-${n}`, maxlength: 500, "aria-label": t("exam.gap", { n: n + 1 }) }),
      );
      inputs.forEach((input, n) => {
        input.value = Array.isArray(saved) ? String(saved[n] ?? "") : "";
        input.addEventListener("change", () => save(inputs.map((i) => i.value.trim())));
      });
      controls = inputs;
    } else if (item.kind === "speaking") {
      if (typeof saved === "string" && saved) say(status, "exam.speak.saved");
      const button = h("button", { type: "button", class: "speak", "aria-pressed": "false" });
      say(button, "exam.speak.start");
      button.addEventListener("click", () => speak(item.id, button, status));
      controls = [button];
    } else {
      const input = h("input", { type: "text", id: name, maxlength: 2000, "aria-label": item.prompt });
      input.value = typeof saved === "string" ? saved : "";
      input.addEventListener("change", () => save(input.value.trim()));
      controls = [input];
    }
    return h(
      "fieldset",
      { class: "item", dataset: { item: item.id } },
      h("legend", { class: "prompt" }, item.prompt),
      item.audio ? h("audio", { controls: true, preload: "none", src: item.audio, "aria-label": t("exam.listen") }) : null,
      controls,
      status,
    );
  }

  async function saveAnswer(item, value, status) {
    // One id per answer given: a retry after a drop is the same save.
    const id = client.nextId();
    exam.saving.set(item, id);
    say(status, "exam.saving");
    try {
      await client.examSave(item, value, { id });
      if (exam.saving.get(item) === id) say(status, "exam.saved");
    } catch (error) {
      if (exam.saving.get(item) === id) say(status, "exam.save.failed", { message: error.message });
    }
  }

  /** Start or stop the spoken answer to `item` from the microphone. */
  async function speak(item, button, status) {
    const stopping = exam.speaking === item;
    // One press at a time: the media connection may take a second to open.
    button.disabled = true;
    try {
      notify("");
      if (stopping) {
        await client.examSpeakEnd(item);
        say(status, "exam.speak.saved");
      } else {
        if (exam.speaking !== null) throw new Error(t("exam.speak.busy"));
        // The answer comes from the attempt's microphone, which may still be
        // in its check; a microphone that failed to open is tried again.
        let on = await (exam.microphone ?? false);
        if (!on && attempting()) {
          exam.microphone = openMicrophone();
          on = await exam.microphone;
        }
        if (!on) throw new Error(document.getElementById("microphone-state").textContent);
        await client.examSpeak(item);
        say(status, "exam.speak.recording");
      }
      exam.speaking = stopping ? null : item;
    } catch (error) {
      notify(t("exam.save.failed", { message: error.message }));
      if (stopping) exam.speaking = null;
    }
    button.disabled = exam.state?.state !== "running";
    button.setAttribute("aria-pressed", String(exam.speaking === item));
    say(button, exam.speaking === item ? "exam.speak.stop" : "exam.speak.start");
  }

  function tick() {
    const state = exam.state;
    const line = document.getElementById("exam-status");
    if (!state) return;
    const now = client.serverNow();
    if (state.state === "not_started") {
      if (now < state.opens_at) {
        line.textContent = t("exam.opens", { time: clock(state.opens_at - now) });
      } else if (now > state.late_join_until) {
        line.textContent = t("exam.closed");
      } else if (!exam.fetchingAt || now - exam.fetchingAt > 2000) {
        // The opening notice may have been missed while reconnecting.
        exam.fetchingAt = now;
        fetchExam();
      }
    } else if (state.state === "running") {
      const left = state.remaining_ms - (now - state.server_time);
      line.textContent = t("exam.left", { time: clock(left) });
    } else if (state.state === "paused") {
      line.textContent = t("exam.paused");
    } else if (state.state === "submitted") {
      line.textContent = t("exam.submitted");
    } else {
      line.textContent = t("exam.ended", { reason: state.reason ?? "" });
    }
  }

  whenLanguage(tick);
  everyTick(tick);
  enter(client, fetchExam);
}
