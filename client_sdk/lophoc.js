// The browser client of a lophoc node, as an ES module with no dependencies.
//
// It speaks the JSON subprotocol of docs/protocol.md over one WebSocket and
// keeps the promises of the Python client (client_sdk/client.py): every
// command gets one reply, matched by its id; a command whose outcome is
// unknown is sent again under the same id, which the server applies once;
// a dropped connection is reopened with backoff and every joined room is
// resumed from the last offset seen; the server's clock is measured with
// `ping` and kept as an offset.
//
//   import { Client } from "/sdk/lophoc.js";
//   const client = new Client("/ws", token);
//   client.on("question_opened", (event) => show(event.question));
//   await client.connect();
//   await client.join(client.room);

export const SUBPROTOCOL = "lophoc.v1.json";

/** Close codes after which reconnecting with the same token cannot help. */
export const FINAL_CLOSE_CODES = new Set([
  4001, 4002, 4003, 4005, 4006, 4007, 4012, 4013,
]);

/** Error codes the protocol says to retry with the same id. */
export const RETRYABLE_ERRORS = new Set(["unavailable", "internal", "rate_limited"]);

/** Connection states, in the order a healthy client goes through them. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** The base of every error this module throws; `value` is what failed. */
export class LophocError extends Error {
  constructor(message, value = undefined) {
    super(message);
    this.name = "LophocError";
    this.value = value;
  }
}

/** The server refused a command: `code` is a stable error code. */
export class CommandError extends LophocError {
  constructor(error) {
    super(`${error.code}: ${error.message}`, error);
    this.name = "CommandError";
    this.code = error.code;
    this.field = error.field ?? null;
    this.id = error.id ?? null;
  }
}

/** A command got no reply in any of its attempts. */
export class CommandTimeout extends LophocError {
  constructor(id, attempts) {
    super(`command ${id} got no reply in ${attempts} attempts`, id);
    this.name = "CommandTimeout";
  }
}

/** The connection ended for good: refused, removed, or closed by the page. */
export class ConnectionClosed extends LophocError {
  constructor(code, reason) {
    super(`connection closed: ${code} ${reason}`, code);
    this.name = "ConnectionClosed";
    this.code = code;
    this.reason = reason;
  }
}

/** The claims of a join token, read without checking it (the server does). */
export function tokenClaims(token) {
  const part = String(token).split(".")[1];
  if (!part) throw new LophocError("not a join token", token);
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** Bytes (or a string, as UTF-8) in the base64 the JSON subprotocol wants. */
export function toBase64(data) {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/** The bytes of a base64 field. */
export function fromBase64(text) {
  return Uint8Array.from(atob(text || ""), (c) => c.charCodeAt(0));
}

/** Exponential backoff with full jitter, as the Python client's Backoff. */
export class Backoff {
  constructor({ initial = 250, maximum = 5000, factor = 2 } = {}) {
    this.initial = initial;
    this.maximum = maximum;
    this.factor = factor;
  }

  /** Milliseconds to wait before attempt `attempt` (from 0). */
  delay(attempt) {
    const ceiling = Math.min(this.maximum, this.initial * this.factor ** attempt);
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Where a joined room's events have got to. */
class RoomCursor {
  constructor(room) {
    this.room = room;
    this.epoch = null;
    this.offset = null;
    // True from a join sent until its `joined`: events of the room that
    // arrive meanwhile belong to the old subscription and are replayed.
    this.joining = false;
  }
}

/**
 * A connection to a lophoc node that survives network drops.
 *
 * Events are dispatched by message type (`hello`, `joined`, `activity`,
 * `question_opened`, `hand_queue`, `answer_tally`, `lesson`, ...), each
 * event of a room once and in offset order, and by connection changes:
 * `state` (detail: the new State), `resumed` (a room continued from its
 * offset), `resynced` (a room started again from a snapshot: drop what you
 * knew of it), `reconnected` (a new WebSocket is ready), `closed` (for good).
 */
export class Client extends EventTarget {
  constructor(
    url,
    token,
    {
      room = null,
      reconnect = true,
      backoff = new Backoff(),
      requestTimeout = 10000,
      retries = 5,
      clockSamples = 5,
    } = {},
  ) {
    super();
    this.url = url;
    this.token = token;
    this.claims = tokenClaims(token);
    this.room = room ?? this.claims.rooms?.[0] ?? this.claims.room;
    this.reconnect = reconnect;
    this.backoff = backoff;
    this.requestTimeout = requestTimeout;
    this.retries = retries;
    this.clockSamples = clockSamples;
    this.state = State.IDLE;
    this.hello = null;
    this.rooms = new Map();
    this.clockOffset = 0;
    this.roundTrip = null;
    this._socket = null;
    this._pending = new Map();
    this._prefix = Math.random().toString(36).slice(2, 10);
    this._counter = 0;
    this._connected = null;
    this._closedFor = null;
  }

  /** Call `listener(detail, message)` for each dispatched `type`; returns an undo. */
  on(type, listener) {
    const handler = (event) => listener(event.detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  /** A command id unique across reconnects: a random prefix and a counter. */
  nextId() {
    this._counter += 1;
    return `${this._prefix}-${this._counter}`;
  }

  /** The server's clock now, in ms since the Unix epoch. */
  serverNow() {
    return Date.now() + this.clockOffset;
  }

  /** Milliseconds of the local clock until the server time `serverTime`. */
  untilServerTime(serverTime) {
    return serverTime - this.serverNow();
  }

  /** Open the connection; resolves with `hello`, rejects on a refusal. */
  connect() {
    if (this._connected === null) {
      this._connected = new Promise((resolve, reject) => {
        this._firstHello = { resolve, reject };
      });
      this._run();
    }
    return this._connected;
  }

  /** Close for good; pending commands fail with ConnectionClosed. */
  close(reason = "") {
    this._finish(new ConnectionClosed(1000, reason));
    if (this._socket) this._socket.close(1000, reason);
  }

  _finish(failure) {
    if (this._closedFor) return;
    this._closedFor = failure;
    for (const pending of this._pending.values()) pending.reject(failure);
    this._pending.clear();
    this._firstHello?.reject(failure);
    this._setState(State.CLOSED);
    this._emit("closed", failure);
  }

  async _run() {
    let attempt = 0;
    while (!this._closedFor) {
      this._setState(attempt === 0 && !this.hello ? State.CONNECTING : State.RECONNECTING);
      const outcome = await this._openOnce();
      if (this._closedFor) return;
      if (outcome.helloSeen) attempt = 0;
      if (FINAL_CLOSE_CODES.has(outcome.code) || !this.reconnect) {
        this._finish(new ConnectionClosed(outcome.code, outcome.reason));
        return;
      }
      this._setState(State.RECONNECTING);
      await sleep(this.backoff.delay(attempt));
      attempt += 1;
    }
  }

  _socketUrl() {
    const base = new URL(this.url, globalThis.location?.href);
    if (base.protocol === "http:") base.protocol = "ws:";
    if (base.protocol === "https:") base.protocol = "wss:";
    // Browsers cannot set headers on a WebSocket: the protocol takes the
    // token in the handshake's query string, which the node never logs.
    base.searchParams.set("room", this.room);
    base.searchParams.set("token", this.token);
    return base.toString();
  }

  _openOnce() {
    return new Promise((resolve) => {
      let helloSeen = false;
      let socket;
      try {
        socket = new WebSocket(this._socketUrl(), [SUBPROTOCOL]);
      } catch (error) {
        resolve({ code: 1006, reason: String(error), helloSeen });
        return;
      }
      this._socket = socket;
      socket.onmessage = (frame) => {
        let message;
        try {
          message = JSON.parse(frame.data);
        } catch {
          return;
        }
        if (message.type === "hello") {
          helloSeen = true;
          this._onHello(socket, message);
        } else {
          this._onMessage(socket, message);
        }
      };
      socket.onclose = (event) => {
        if (this._socket === socket) this._socket = null;
        // Replies to this socket will never come: the commands wait for the
        // next connection, where they are sent again under the same id.
        for (const [id, pending] of this._pending) {
          pending.sentOn = null;
          if (pending.oneShot) {
            this._pending.delete(id);
            pending.reject(new ConnectionClosed(event.code, event.reason));
          }
        }
        for (const cursor of this.rooms.values()) cursor.joining = false;
        this._emit("disconnected", { code: event.code, reason: event.reason });
        resolve({ code: event.code, reason: event.reason, helloSeen });
      };
    });
  }

  async _onHello(socket, hello) {
    const first = this.hello === null;
    this.hello = hello;
    this.clockOffset = hello.server_time - Date.now();
    this._emit("hello", hello);
    // Rooms first, so that a resent command finds its room joined.
    await Promise.all([...this.rooms.keys()].map((room) => this._rejoin(socket, room)));
    if (this._socket !== socket) return;
    this._setState(State.OPEN);
    for (const pending of this._pending.values()) {
      if (pending.command.type !== "join") this._send(socket, pending);
    }
    if (first) this._firstHello.resolve(hello);
    else this._emit("reconnected", hello);
    this.measureClock().catch(() => {});
  }

  async _rejoin(socket, room) {
    const cursor = this.rooms.get(room);
    const command = { type: "join", id: this.nextId(), room };
    if (cursor.epoch !== null && cursor.offset !== null) {
      command.last_offset = cursor.offset;
      command.epoch = cursor.epoch;
    }
    cursor.joining = true;
    for (let attempt = 0; ; attempt += 1) {
      try {
        await this._exchangeOn(socket, { ...command, id: this.nextId() });
        return;
      } catch (error) {
        // A busy or failing-over room answers `unavailable`: ask again on
        // this connection; a lost connection rejoins from its next hello.
        const retry = error instanceof CommandError && RETRYABLE_ERRORS.has(error.code);
        if (!retry || this._socket !== socket || attempt >= this.retries) {
          if (this._socket === socket) cursor.joining = false;
          this._emit("rejoin_failed", { room, error });
          return;
        }
        await sleep(this.backoff.delay(attempt));
      }
    }
  }

  _exchangeOn(socket, command) {
    return new Promise((resolve, reject) => {
      const pending = {
        command,
        resolve,
        reject,
        sentOn: null,
        attempts: 0,
        oneShot: true,
      };
      this._pending.set(command.id, pending);
      this._send(socket, pending);
    });
  }

  _send(socket, pending) {
    if (socket.readyState !== WebSocket.OPEN) return;
    pending.sentOn = socket;
    pending.attempts += 1;
    socket.send(JSON.stringify(pending.command));
  }

  _onMessage(socket, message) {
    const { type } = message;
    // Every reply carries its command's id (ack, joined, pong, media_answer,
    // exam_state, exam_proctor_view, ...); notices and events carry none.
    if (type !== "error" && message.id !== undefined && this._pending.has(message.id)) {
      this._settle(message, null);
      if (type === "joined") this._onJoined(socket, message);
      return;
    }
    if (type === "error") {
      this._settle(message, message);
      return;
    }
    if (type === "probe") {
      socket.send(JSON.stringify({ type: "probe_reply", id: this.nextId(), nonce: message.nonce }));
      return;
    }
    if (message.offset !== undefined && message.epoch !== undefined) {
      this._onEvent(socket, message);
      return;
    }
    this._emit(type, message);
  }

  _settle(reply, error) {
    const pending = reply.id === undefined ? null : this._pending.get(reply.id);
    if (!pending) {
      if (error) this._emit("error", error);
      return;
    }
    if (error && RETRYABLE_ERRORS.has(error.code) && !pending.oneShot) {
      pending.sentOn = null;
      pending.retryNow?.();
      return;
    }
    this._pending.delete(reply.id);
    if (error) pending.reject(new CommandError(error));
    else pending.resolve(reply);
  }

  _onJoined(socket, joined) {
    const cursor = this.rooms.get(joined.room);
    if (!cursor) return;
    cursor.joining = false;
    // A join the page sent before a reconnect is answered by the rejoin.
    for (const [id, pending] of this._pending) {
      if (pending.command.type === "join" && pending.command.room === joined.room) {
        this._pending.delete(id);
        pending.resolve(joined);
      }
    }
    if (joined.recovered) {
      // The missed events follow this frame; the cursor moves with them.
      this._emit("resumed", joined);
      return;
    }
    cursor.epoch = joined.epoch;
    cursor.offset = joined.offset;
    this._emit("resynced", joined);
    this._emit("joined", joined);
  }

  _onEvent(socket, event) {
    const cursor = this.rooms.get(event.room);
    if (!cursor || cursor.joining) return;
    if (event.epoch !== cursor.epoch || event.offset > cursor.offset + 1) {
      // A gap or a new epoch: the room says again what was missed.
      this._rejoin(socket, event.room);
      return;
    }
    if (event.offset <= cursor.offset) return;
    cursor.offset = event.offset;
    if (event.type === "member_left" && event.user === this.hello?.user) {
      this._rejoin(socket, event.room);
    }
    this._emit(event.type, event);
    this._emit("event", event);
  }

  /**
   * Send `command` and resolve with its reply (`ack`, `joined`, `pong` or
   * `media_answer`). Each attempt waits `timeout` ms; after a timeout, a
   * lost connection or a retryable error the command is sent again under
   * the same id, up to `retries` more times. Other errors reject with
   * CommandError; running out of attempts with CommandTimeout.
   */
  request(command, { timeout = this.requestTimeout, retries = this.retries } = {}) {
    if (this._closedFor) return Promise.reject(this._closedFor);
    const full = { ...command, id: command.id || this.nextId() };
    if (full.type === "join") {
      if (!this.rooms.has(full.room)) this.rooms.set(full.room, new RoomCursor(full.room));
      this.rooms.get(full.room).joining = true;
    }
    return new Promise((resolve, reject) => {
      let timer = null;
      let attempt = 0;
      const pending = { command: full, sentOn: null, attempts: 0 };
      const giveUp = (error) => {
        clearTimeout(timer);
        this._pending.delete(full.id);
        reject(error);
      };
      // One attempt: wait `timeout` for the reply (and for a connection, if
      // there is none now), then send again under the same id.
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => pending.retryNow(), timeout);
      };
      pending.resolve = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
      pending.reject = giveUp;
      pending.retryNow = async () => {
        attempt += 1;
        if (attempt > retries) {
          giveUp(new CommandTimeout(full.id, attempt));
          return;
        }
        clearTimeout(timer);
        await sleep(this.backoff.delay(attempt - 1));
        if (!this._pending.has(full.id)) return;
        if (this._socket && this.state === State.OPEN) this._send(this._socket, pending);
        arm();
      };
      this._pending.set(full.id, pending);
      if (this._socket && this.state === State.OPEN) this._send(this._socket, pending);
      arm();
    });
  }

  // Rooms -----------------------------------------------------------------

  /** Join `room` (default: the token's room); resolves with `joined`. */
  join(room = this.room) {
    const cursor = this.rooms.get(room);
    const command = { type: "join", room };
    if (cursor?.epoch && cursor.offset !== null) {
      command.last_offset = cursor.offset;
      command.epoch = cursor.epoch;
    }
    return this.request(command);
  }

  /** Leave `room`; the client stops resuming it. */
  async leave(room = this.room) {
    const ack = await this.request({ type: "leave", room });
    this.rooms.delete(room);
    return ack;
  }

  /** Broadcast `body` (a string or bytes) under `topic`. */
  broadcast(room, topic, body = "") {
    return this.request({ type: "broadcast", room, topic, body: toBase64(body) });
  }

  // Clock -----------------------------------------------------------------

  /** One `ping`: the round trip and the offset it implies. */
  async ping() {
    const sent = Date.now();
    const start = performance.now();
    const pong = await this.request({ type: "ping", client_time: sent }, { retries: 0 });
    const rtt = performance.now() - start;
    return { rtt, offset: pong.server_time - (sent + rtt / 2), pong };
  }

  /** Take `samples` pings and keep the offset of the shortest round trip. */
  async measureClock(samples = this.clockSamples) {
    let best = null;
    for (let i = 0; i < samples; i += 1) {
      const sample = await this.ping();
      if (best === null || sample.rtt < best.rtt) best = sample;
      if (i + 1 < samples) await sleep(150);
    }
    this.clockOffset = best.offset;
    this.roundTrip = best.rtt;
    this._emit("clock", { offset: best.offset, rtt: best.rtt });
    return best;
  }

  // Lessons and quizzes -----------------------------------------------------

  /** Make activity `index` of the plan current (host). */
  step(index, room = this.room) {
    return this.request({ type: "step", room, index });
  }

  /** Open question `question` of the current quiz (host). */
  openQuestion(question, room = this.room) {
    return this.request({ type: "open_question", room, question });
  }

  /**
   * Answer question `number`. Pass the same `id` to send the same answer
   * again: the server stores it once.
   */
  answer(number, value, { id = "", room = this.room } = {}) {
    return this.request({ type: "answer", id, room, number, value });
  }

  /** Close the open question (host). */
  closeQuestion(room = this.room) {
    return this.request({ type: "close_question", room });
  }

  /** Reveal the answer, the counts and the leaderboards (host). */
  reveal(room = this.room) {
    return this.request({ type: "reveal", room });
  }

  /** End the lesson (host). */
  endLesson(room = this.room) {
    return this.request({ type: "end_lesson", room });
  }

  /** Remove `user` from the lesson (host; a co-teacher for their school). */
  remove(user, room = this.room) {
    return this.request({ type: "remove", room, user });
  }

  // Speaking turns --------------------------------------------------------

  raiseHand(room = this.room) {
    return this.request({ type: "raise_hand", room });
  }

  /** Lower one's own hand, or `user`'s (a teacher). */
  lowerHand(user = null, room = this.room) {
    return this.request({ type: "lower_hand", room, user });
  }

  /** Order the queue by `first_come`, `round_robin` or `least_time` (host). */
  queuePolicy(policy, room = this.room) {
    return this.request({ type: "queue_policy", room, policy });
  }

  /** Give the floor to `user` (or the next in the queue) for `seconds`. */
  grantFloor({ user = null, seconds = null } = {}, room = this.room) {
    return this.request({ type: "grant_floor", room, user, seconds });
  }

  revokeFloor(room = this.room) {
    return this.request({ type: "revoke_floor", room });
  }

  startDrill({ prompt, seconds, pauseSeconds = 3, users = null }, room = this.room) {
    return this.request({
      type: "start_drill",
      room,
      prompt,
      seconds,
      pause_seconds: pauseSeconds,
      users,
    });
  }

  stopDrill(room = this.room) {
    return this.request({ type: "stop_drill", room });
  }

  mute(user, muted = true, room = this.room) {
    return this.request({ type: "mute", room, user, muted });
  }

  // Exams -----------------------------------------------------------------

  /** Student: the exam as it stands (resolves with `exam_state`). */
  examFetch(room = this.room) {
    return this.request({ type: "exam_fetch", room });
  }

  /** Student: save `value` for `item`; the same `id` saves it once. */
  examSave(item, value, { id = "", room = this.room } = {}) {
    return this.request({ type: "exam_save", id, room, item, value });
  }

  /** Student: hand the attempt in. */
  examSubmit(room = this.room) {
    return this.request({ type: "exam_submit", room });
  }

  /** Student's page: report a signal (`page_hidden`, `copy`, ...). */
  examSignal(signal, detail = "", room = this.room) {
    return this.request({ type: "exam_signal", room, signal, detail });
  }

  /** Student: start recording the spoken answer to `item` (needs a media connection). */
  examSpeak(item, room = this.room) {
    return this.request({ type: "exam_speak", room, item });
  }

  /** Student: stop recording `item`; resolves once the recording is its answer. */
  examSpeakEnd(item, room = this.room) {
    return this.request({ type: "exam_speak_end", room, item });
  }

  /** Proctor: every seat (resolves with `exam_proctor_view`). */
  examWatch(room = this.room) {
    return this.request({ type: "exam_watch", room });
  }

  /** Proctor: `warn`, `pause`, `resume`, `add_time`, `end`, `flag` or `note`. */
  proctor(action, { user = null, message = "", ms = 0 } = {}, room = this.room) {
    return this.request({ type: "exam_proctor", room, action, user, message, ms });
  }
}
