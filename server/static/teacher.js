// The teacher's page (host or co-teacher): the plan, quizzes with a live
// chart of the answers per option and per school, the hand queue and the
// floor, the classes by school and their cameras, the teacher's own
// microphone and camera, recordings and the lesson report.

import { VideoPeer } from "/sdk/lophoc_media.js";
import { Roster, connect, enter, everyTick, fill, h, notify, onVideoSteps, setUpLanguage, signedInToken, t, whenLanguage } from "./page.js";
import { LessonState, activityView, floorText, questionCountdown, revealView } from "./lesson_view.js";

setUpLanguage();
const token = signedInToken();
const client = connect(token);

if (client) start(client);

function start(client) {
  const me = client.claims.sub;
  const isHost = () => client.claims.role === "admin" || state.lesson?.host === me;
  const roster = new Roster(client, renderRoster);
  // The host sees every classroom device's camera (docs/protocol.md, "Video").
  const media = new VideoPeer(client, {
    slots: 2,
    output: document.getElementById("speakers"),
    videoSlots: 4,
    videoOutput: document.getElementById("videos"),
  });
  onVideoSteps(client);

  /** Run a command; a refusal shows in the notice line. */
  const command = (send) => async () => {
    try {
      notify("");
      await send();
    } catch (error) {
      notify(t("teacher.failed", { message: error.message }));
    }
  };

  const state = new LessonState(client, (part) => {
    if (part === "all") renderAll();
    else if (part === "activity") renderPlan();
    else if (part === "question") renderQuestion();
    else if (part === "tally") renderChart();
    else renderHands();
  });

  const stepBy = (delta) =>
    command(() => {
      const index = (state.activity?.index ?? -1) + delta;
      return client.step(Math.max(0, Math.min(index, (state.lesson?.activities ?? 1) - 1)));
    });
  document.getElementById("prev").addEventListener("click", stepBy(-1));
  document.getElementById("next").addEventListener("click", stepBy(1));
  document.getElementById("end").addEventListener("click", command(() => client.endLesson()));
  document.getElementById("close").addEventListener("click", command(() => client.closeQuestion()));
  document.getElementById("reveal").addEventListener("click", command(() => client.reveal()));
  document.getElementById("policy").addEventListener(
    "change",
    command(() => client.queuePolicy(document.getElementById("policy").value)),
  );
  document.getElementById("grant-next").addEventListener("click", command(() => client.grantFloor({ seconds: turnSeconds() })));
  document.getElementById("revoke").addEventListener("click", command(() => client.revokeFloor()));
  document.getElementById("recordings-load").addEventListener("click", command(listRecordings));
  document.getElementById("report").addEventListener("click", command(downloadReport));
  document.getElementById("mic").addEventListener("click", command(toggle("mic", "audio")));
  document.getElementById("camera").addEventListener("click", command(toggle("camera", "video")));

  function turnSeconds() {
    const value = Number(document.getElementById("seconds").value);
    return Number.isInteger(value) && value >= 5 && value <= 1800 ? value : null;
  }

  function renderAll() {
    renderPlan();
    renderQuestion();
    renderHands();
    renderRoster();
  }

  function renderRoster() {
    const mayRemove = (member) =>
      (member.role === "student" || member.role === "classroom") &&
      (isHost() || (client.claims.role === "co-teacher" && member.school === client.claims.school));
    fill(
      "roster",
      roster.render((member) =>
        mayRemove(member)
          ? h("button", { type: "button", class: "small", onclick: command(() => client.remove(member.user)) }, t("roster.remove"))
          : null,
      ),
    );
    renderChart();
  }

  function renderPlan() {
    const host = isHost();
    document.getElementById("plan-controls").hidden = !host;
    document.getElementById("readonly").hidden = host;
    if (state.ended) {
      fill("activity", h("p", { class: "big" }, t("lesson.ended")));
      fill("ask");
      return;
    }
    fill("activity", activityView(state.activity, state.lesson?.activities ?? 0));
    const activity = state.activity;
    const questions = activity?.kind === "quiz" && host ? activity.questions : 0;
    fill(
      "ask",
      Array.from({ length: questions }, (_, i) =>
        h("button", { type: "button", class: "ask", onclick: command(() => client.openQuestion(i)) }, t("teacher.ask", { n: i + 1 })),
      ),
    );
  }

  function renderQuestion() {
    const asked = state.asked;
    document.getElementById("question-controls").hidden = !isHost() || !asked || state.revealed !== null;
    if (!asked) {
      fill("question", h("p", {}, t("quiz.none")));
      fill("chart");
      fill("results");
      return;
    }
    fill(
      "question",
      h("p", { class: "prompt big", id: "prompt" }, `${asked.question.number}. ${asked.question.prompt}`),
      h("p", { class: "countdown", id: "countdown" }),
    );
    renderChart();
    if (state.revealed) {
      fill("results", revealView(asked.question, state.revealed));
    } else {
      fill("results");
    }
    tick();
  }

  function optionLabels(question) {
    if (question.kind === "true_false") return [t("quiz.true"), t("quiz.false")];
    if (question.kind === "short_text" || question.kind === "ordering") {
      return [t("teacher.right"), t("teacher.wrong")];
    }
    return question.options;
  }

  function bar(label, value, max, id) {
    return h(
      "div",
      { class: "bar", dataset: { bar: id } },
      h("span", { class: "bar-label" }, label),
      h("progress", { max: Math.max(max, 1), value, "aria-label": label }),
      h("span", { class: "bar-value" }, String(value)),
    );
  }

  function renderChart() {
    const asked = state.asked;
    if (!asked) return;
    const source = state.revealed ?? state.tally;
    const counts = source?.counts ?? [];
    const labels = optionLabels(asked.question);
    const answered = source ? (source.answered ?? counts.reduce((a, b) => a + b, 0)) : 0;
    const present = state.tally?.present ?? roster.students();
    const total = Math.max(1, ...counts);
    const bySchool = new Map((source?.by_school ?? []).map((s) => [s.school, s]));
    const schools = roster.bySchool().map((s) => s.school).filter((s) => roster.students(s) > 0 || bySchool.has(s));
    for (const school of bySchool.keys()) if (!schools.includes(school)) schools.push(school);
    fill(
      "chart",
      h("p", { id: "answered" }, t("teacher.answered", { answered, present })),
      h("h3", {}, t("teacher.byoption")),
      h("div", { class: "chart", id: "by-option" }, labels.map((label, i) => bar(label, counts[i] ?? 0, total, `option-${i}`))),
      h("h3", {}, t("teacher.byschool")),
      h(
        "div",
        { class: "chart", id: "by-school" },
        schools.map((school) =>
          bar(school, bySchool.get(school)?.answered ?? 0, Math.max(roster.students(school), 1), `school-${school}`),
        ),
      ),
    );
  }

  function renderHands() {
    const host = isHost();
    document.getElementById("policy").value = state.policy;
    document.getElementById("policy").disabled = !host;
    const floor = state.floor;
    document.getElementById("revoke").disabled = !floor;
    fill(
      "queue",
      state.queue.length
        ? state.queue.map((entry) =>
            h(
              "li",
              { dataset: { user: entry.user } },
              h("span", {}, `${entry.name} (${entry.school})`),
              " ",
              h("button", { type: "button", class: "small primary", onclick: command(() => client.grantFloor({ user: entry.user, seconds: turnSeconds() })) }, t("teacher.grant")),
              " ",
              h("button", { type: "button", class: "small", onclick: command(() => client.lowerHand(entry.user)) }, t("teacher.lower")),
            ),
          )
        : h("li", { class: "muted" }, t("teacher.queue.empty")),
    );
    tick();
  }

  function tick() {
    const asked = state.asked;
    const countdown = document.getElementById("countdown");
    if (asked && countdown) countdown.textContent = questionCountdown(client, asked, state.revealed);
    document.getElementById("floor").textContent = floorText(client, state.floor, null);
  }

  async function authorized(path) {
    const response = await fetch(path, { headers: { authorization: `Bearer ${token}` } });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.message ?? String(response.status));
    }
    return response;
  }

  async function listRecordings() {
    const lesson = encodeURIComponent(client.room);
    const found = await (await authorized(`/api/lessons/${lesson}/recordings`)).json();
    const player = document.getElementById("player");
    const play = (file) => async () => {
      const blob = await (await authorized(`/api/lessons/${lesson}/recordings/${encodeURIComponent(file)}`)).blob();
      if (player.src) URL.revokeObjectURL(player.src);
      player.src = URL.createObjectURL(blob);
      player.hidden = false;
      await player.play().catch(() => {});
    };
    fill(
      "recordings",
      found.length
        ? found.map((info) =>
            h(
              "li",
              {},
              `${new Date(info.started_at).toLocaleTimeString()} · ${info.participant} · ${info.seconds.toFixed(1)} s `,
              info.prompt ? `· ${info.prompt} ` : "",
              h("button", { type: "button", class: "small", onclick: command(play(info.file)) }, t("teacher.recordings.play")),
            ),
          )
        : h("li", { class: "muted" }, t("teacher.recordings.none")),
    );
  }

  async function downloadReport() {
    const lesson = encodeURIComponent(client.room);
    const blob = await (await authorized(`/api/lessons/${lesson}/report?format=csv`)).blob();
    const link = h("a", { href: URL.createObjectURL(blob), download: `${client.room}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
  }

  /**
   * What to capture: a classroom camera at 720p where it has it, which the
   * media peer sends as a full and a quarter-size layer for weak links.
   */
  const CAPTURE = { audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } };

  /** The click handler of the button `id`: turn the microphone or camera on or off. */
  function toggle(id, kind) {
    const attach = (stream) => (kind === "audio" ? media.setMicrophone(stream) : media.setCamera(stream));
    const current = () => (kind === "audio" ? media.microphone : media.camera);
    return async () => {
      const button = document.getElementById(id);
      if (current()) {
        await attach(null);
      } else {
        try {
          await attach(await navigator.mediaDevices.getUserMedia({ [kind]: CAPTURE[kind] }));
        } catch (error) {
          throw new Error(t(`${id}.denied`, { message: error.message }));
        }
      }
      const on = current() !== null;
      button.setAttribute("aria-pressed", String(on));
      button.dataset.i18n = `${id}.${on ? "off" : "on"}`;
      button.textContent = t(button.dataset.i18n);
      document.body.dataset[id] = String(on);
    };
  }

  whenLanguage(() => {
    if (state.lesson) renderAll();
    else renderRoster();
  });
  everyTick(tick);

  enter(client, () => media.start());
}
