// The exam page of a student: the variant fetched over the student's own
// connection at `opens_at`, each answer saved as it is given, the time
// left, a proctor's warnings, and the page's signals for the proctors.

import { connect, everyTick, fill, h, notify, setUpLanguage, signedInToken, t } from "./page.js";

setUpLanguage();
const client = connect(signedInToken());

const exam = { state: null, built: false, saving: new Map() };

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
    line.textContent = t("exam.warning", { message: warning.message });
    line.hidden = false;
  });

  const signal = (kind) => () => {
    if (exam.state?.state === "running") client.examSignal(kind).catch(() => {});
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") signal("page_hidden")();
  });
  window.addEventListener("blur", signal("window_blur"));
  document.addEventListener("copy", signal("copy"));
  document.addEventListener("paste", signal("paste"));

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
    document.getElementById("title").textContent = state.title;
    if (state.sections && !exam.built) build(state);
    const running = state.state === "running";
    for (const control of document.querySelectorAll("#sections input")) {
      control.disabled = !running;
    }
    document.getElementById("submit").hidden = !running;
    tick();
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
    } else {
      const label = item.kind === "speaking" ? t("exam.speaking") : item.prompt;
      const input = h("input", { type: "text", id: name, maxlength: 2000, "aria-label": label });
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
    status.textContent = t("exam.saving");
    try {
      await client.examSave(item, value, { id });
      if (exam.saving.get(item) === id) status.textContent = t("exam.saved");
    } catch (error) {
      if (exam.saving.get(item) === id) status.textContent = t("exam.save.failed", { message: error.message });
    }
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

  everyTick(tick);
  client
    .connect()
    .then(() => client.join())
    .then(fetchExam)
    .catch((error) => notify(error.message));
}
