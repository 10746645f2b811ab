// The proctor's page: every seat of an exam room live, the incidents as
// they come, and the proctor's actions on one student or the whole room.

import { connect, everyTick, fill, h, notify, setUpLanguage, signedInToken, t, whenLanguage } from "./page.js";

setUpLanguage();
const client = connect(signedInToken());

const room = { view: null, seats: new Map(), incidents: [], seenAt: 0 };

/** A seat with the fields the server leaves out at their defaults filled in. */
function seatOf(seat, seenAt) {
  return {
    connected: false,
    connections: 0,
    state: "not_started",
    answered: 0,
    items: 0,
    remaining_ms: 0,
    incidents: 0,
    warnings: 0,
    flagged: false,
    ...seat,
    seenAt,
  };
}

if (client) start(client);

function start(client) {
  const watch = async () => {
    try {
      const view = await client.examWatch();
      room.view = view;
      const seats = view.seats ?? [];
      room.seats = new Map(seats.map((seat) => [seat.user, seatOf(seat, view.server_time)]));
      room.incidents = [...(view.incidents ?? [])].sort((a, b) => b.seq - a.seq);
      document.getElementById("title").textContent = view.title;
      render();
    } catch (error) {
      notify(error.message);
    }
  };
  client.on("reconnected", watch);
  client.on("exam_seat", ({ seat }) => {
    room.seats.set(seat.user, seatOf(seat, client.serverNow()));
    renderSeats();
  });
  client.on("exam_incident", ({ incident }) => {
    if (!room.incidents.some((known) => known.seq === incident.seq)) room.incidents.unshift(incident);
    renderIncidents();
  });

  /** A proctor action; the message field gives warnings and reasons. */
  const act = (action, user = null, extra = {}) => async () => {
    const message = document.getElementById("message").value.trim();
    try {
      notify("");
      await client.proctor(action, { user, message, ...extra });
    } catch (error) {
      notify(error.message);
    }
  };
  document.getElementById("pause-all").addEventListener("click", act("pause"));
  document.getElementById("resume-all").addEventListener("click", act("resume"));

  function left(seat) {
    if (seat.state !== "running") return "";
    const ms = Math.max(0, seat.remaining_ms - (client.serverNow() - seat.seenAt));
    const seconds = Math.ceil(ms / 1000);
    return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function renderSeats() {
    const seats = [...room.seats.values()].sort(
      (a, b) => a.school.localeCompare(b.school) || a.name.localeCompare(b.name),
    );
    const button = (label, action, user, extra) =>
      h("button", { type: "button", class: "small", onclick: act(action, user, extra) }, t(label));
    fill(
      "seats",
      h("tr", {}, ["board.name", "board.school", "proctor.online", "proctor.seats", "exam.left", "proctor.incidents", ""].map((key) => h("th", { scope: "col" }, key ? t(key, { time: "" }) : ""))),
      seats.map((seat) =>
        h(
          "tr",
          { dataset: { user: seat.user, state: seat.state }, class: seat.flagged ? "flagged" : null },
          h("td", {}, seat.name),
          h("td", {}, `${seat.school} ${seat.class}`),
          h("td", { class: seat.connected ? "good" : "away" }, t(seat.connected ? "proctor.online" : "proctor.offline")),
          h("td", { class: "seat-state" }, `${t(`state.${seat.state}`)} · ${seat.answered}/${seat.items}`),
          h("td", { class: "seat-left" }, left(seat)),
          h("td", { class: "seat-incidents" }, String(seat.incidents)),
          h(
            "td",
            { class: "row" },
            button("proctor.warn", "warn", seat.user),
            seat.state === "paused" ? button("proctor.resume", "resume", seat.user) : button("proctor.pause", "pause", seat.user),
            button("proctor.add", "add_time", seat.user, { ms: 5 * 60_000 }),
            button("proctor.flag", "flag", seat.user),
            button("proctor.end", "end", seat.user),
          ),
        ),
      ),
    );
  }

  function renderIncidents() {
    const names = new Map([...room.seats.values()].map((seat) => [seat.user, seat.name]));
    fill(
      "incidents",
      room.incidents.length
        ? room.incidents.map((incident) =>
            h(
              "li",
              { class: `incident ${incident.severity}`, dataset: { kind: incident.kind, user: incident.user } },
              `${new Date(incident.at).toLocaleTimeString()} · ${names.get(incident.user) ?? incident.user} · ${incident.kind} (${incident.severity})`,
              incident.detail ? ` · ${incident.detail}` : "",
            ),
          )
        : h("li", { class: "muted" }, t("proctor.none")),
    );
  }

  function render() {
    renderSeats();
    renderIncidents();
  }

  whenLanguage(render);
  everyTick(() => {
    for (const row of document.querySelectorAll("#seats tr[data-user]")) {
      const seat = room.seats.get(row.dataset.user);
      if (seat) row.querySelector(".seat-left").textContent = left(seat);
    }
  });
  client
    .connect()
    .then(() => client.join())
    .then(watch)
    .catch((error) => notify(error.message));
}
