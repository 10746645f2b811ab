// The proctor's page: every seat of an exam room live, the incidents as
// they come, and the proctor's actions on one student or the whole room,
// listening in on one student's microphone among them.

import { AudioPeer } from "/sdk/lophoc_media.js";
import { connect, enter, everyTick, fill, h, notify, setTitle, setUpLanguage, signedInToken, t, whenLanguage } from "./page.js";

setUpLanguage();
const client = connect(signedInToken());

const room = { view: null, seats: new Map(), incidents: [], seenAt: 0 };
// The proctor's own media connection, opened by the first "listen", and
// the student it hears (docs/exams.md, "The student's microphone").
const ears = { peer: null, user: null };

/** An incident kind in the page's language, or as the server names it. */
function kindLabel(kind) {
  const key = `incident.${kind}`;
  const label = t(key);
  return label === key ? kind : label;
}

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
      setTitle(view.title);
      render();
      // The node forgets whom a proctor hears when their media closes with
      // the old socket; the peer offers again by itself, the route is ours.
      if (ears.user !== null) await client.proctor("listen", { user: ears.user });
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

  /** Hear `user`'s microphone, or nobody's when `user` is null. */
  async function listen(user) {
    try {
      notify("");
      if (user !== null && !ears.peer) {
        // Opened from the click: the browser lets a page play sound it
        // starts from the user's gesture.
        const peer = new AudioPeer(client, { slots: 1, microphone: false, output: document.getElementById("ears") });
        try {
          await peer.start();
        } catch (error) {
          await peer.stop();
          throw error;
        }
        ears.peer = peer;
      }
      await client.proctor(user === null ? "stop_listening" : "listen", { user });
      ears.user = user;
    } catch (error) {
      notify(error.message);
    }
    render();
  }

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
    const listenButton = (user) => {
      const on = ears.user === user;
      return h(
        "button",
        { type: "button", class: "small listen", "aria-pressed": String(on), onclick: () => listen(on ? null : user) },
        t(on ? "proctor.listen.stop" : "proctor.listen"),
      );
    };
    fill(
      "seats",
      h("tr", {}, ["board.name", "board.school", "proctor.connection", "proctor.progress", "proctor.left", "proctor.incidents", "proctor.actions"].map((key) => h("th", { scope: "col" }, t(key)))),
      seats.map((seat) =>
        h(
          "tr",
          {
            dataset: { user: seat.user, state: seat.state, listening: String(ears.user === seat.user) },
            class: [seat.flagged ? "flagged" : "", ears.user === seat.user ? "listening" : ""].join(" ").trim() || null,
          },
          h("td", {}, seat.name),
          h("td", {}, `${seat.school} ${seat.class}`),
          h("td", { class: seat.connected ? "good" : "away" }, t(seat.connected ? "proctor.online" : "proctor.offline")),
          h("td", { class: "seat-state" }, `${t(`state.${seat.state}`)} · ${seat.answered}/${seat.items}`),
          h("td", { class: "seat-left" }, left(seat)),
          h("td", { class: seat.incidents ? "seat-incidents alert" : "seat-incidents" }, String(seat.incidents)),
          h(
            "td",
            { class: "row" },
            button("proctor.warn", "warn", seat.user),
            seat.state === "paused" ? button("proctor.resume", "resume", seat.user) : button("proctor.pause", "pause", seat.user),
            button("proctor.add", "add_time", seat.user, { ms: 5 * 60_000 }),
            button("proctor.flag", "flag", seat.user),
            button("proctor.end", "end", seat.user),
            listenButton(seat.user),
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
              `${new Date(incident.at).toLocaleTimeString()} · ${names.get(incident.user) ?? incident.user} · ${kindLabel(incident.kind)} (${incident.severity})`,
              incident.detail ? ` · ${incident.detail}` : "",
            ),
          )
        : h("li", { class: "muted" }, t("proctor.none")),
    );
  }

  function renderListening() {
    const line = document.getElementById("listening");
    const seat = ears.user === null ? null : room.seats.get(ears.user);
    line.hidden = ears.user === null;
    line.textContent = ears.user === null ? "" : t("proctor.listening", { name: seat?.name ?? ears.user });
  }

  function render() {
    renderSeats();
    renderIncidents();
    renderListening();
  }

  whenLanguage(render);
  everyTick(() => {
    for (const row of document.querySelectorAll("#seats tr[data-user]")) {
      const seat = room.seats.get(row.dataset.user);
      if (seat) row.querySelector(".seat-left").textContent = left(seat);
    }
  });
  enter(client, watch);
}
