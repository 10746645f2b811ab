// What every lophoc page shares: the language, the signed-in token, the
// connection banner, safe DOM building and the roster by school. A new page
// (an exam room, a proctor's view) imports these and adds its own part.

import { Client, State } from "/sdk/lophoc.js";
import vi from "./lang_vi.js";
import en from "./lang_en.js";

const LANGUAGES = { vi, en };
const LANGUAGE_KEY = "lophoc.lang";
const TOKEN_KEY = "lophoc.token";

let language = localStorage.getItem(LANGUAGE_KEY) in LANGUAGES
  ? localStorage.getItem(LANGUAGE_KEY)
  : "vi";
const onLanguage = [];

/** The string `key` in the current language, with `{name}` filled from `values`. */
export function t(key, values = {}) {
  const text = LANGUAGES[language][key] ?? LANGUAGES.vi[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

/** Translate every `data-i18n` element, and set the document's language. */
export function translate(root = document) {
  document.documentElement.lang = language;
  for (const element of root.querySelectorAll("[data-i18n]")) {
    const values = element.dataset.i18nValues ? JSON.parse(element.dataset.i18nValues) : {};
    element.textContent = t(element.dataset.i18n, values);
  }
  for (const element of root.querySelectorAll("[data-i18n-label]")) {
    element.setAttribute("aria-label", t(element.dataset.i18nLabel));
  }
}

/** Show the string `key` in `element`, and again in each language switched to. */
export function say(element, key, values = {}) {
  element.dataset.i18n = key;
  element.dataset.i18nValues = JSON.stringify(values);
  element.textContent = t(key, values);
}

/** Name the page after its lesson or exam: the header and the tab, in any language. */
export function setTitle(text) {
  const heading = document.getElementById("title");
  delete heading.dataset.i18n;
  heading.textContent = text;
  document.title = `${text} · lophoc`;
}

/** Call `render` now and after every language switch. */
export function whenLanguage(render) {
  onLanguage.push(render);
  render();
}

/** Wire the language switch button (id `lang`). */
export function setUpLanguage() {
  const button = document.getElementById("lang");
  const apply = () => {
    translate();
    button.textContent = t("lang.switch");
    button.lang = language === "vi" ? "en" : "vi";
    for (const render of onLanguage) render();
  };
  button.addEventListener("click", () => {
    language = language === "vi" ? "en" : "vi";
    localStorage.setItem(LANGUAGE_KEY, language);
    apply();
  });
  apply();
}

/**
 * The token this tab is signed in with. A link hands it over in the URL
 * fragment, which never reaches a server; it moves to the tab's session
 * storage and leaves the address bar, so it is not bookmarked or shared.
 */
export function signedInToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromLink = fragment.get("token");
  if (fromLink) {
    sessionStorage.setItem(TOKEN_KEY, fromLink);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keep `token` for this tab (after joining with a code). */
export function keepToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** An element: `h("button", {class: "x", onclick: f}, "text", child)`. Text stays text. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replace the children of the element with id `id`. */
export function fill(id, ...children) {
  const element = document.getElementById(id);
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

/** Show a message in the page's notice line (id `notice`). */
/**
 * Say when the node steps this connection's video down for a weak link
 * (losing packets), or back up once the link is clean, so that a frozen or
 * smaller picture is not taken for a broken camera.
 */
export function onVideoSteps(client) {
  client.on("video_quality_changed", (notice) => {
    document.body.dataset.video = notice.forwarded;
    notify(t(notice.reason === "loss" ? "video.reduced" : "video.restored"));
  });
}

export function notify(text) {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  notice.hidden = !text;
}

/**
 * Connect with the tab's token and keep the banner (id `banner`) telling
 * the connection's state. Returns the Client, or null when not signed in.
 */
export function connect(token) {
  if (!token) {
    showBanner(t("signin.missing"), "error");
    return null;
  }
  const client = new Client("/ws", token);
  let last = State.CONNECTING;
  const show = () => {
    if (last === State.RECONNECTING) showBanner(t("conn.reconnecting"), "warning");
    else if (last === State.CONNECTING) showBanner(t("conn.connecting"), "info");
    else if (last === State.OPEN) showBanner("", "");
  };
  client.on("state", (state) => {
    last = state;
    show();
  });
  client.on("closed", (failure) => {
    const text = failure.code === 4013
      ? t("conn.removed")
      : failure.code === 1000
        ? t("conn.closed")
        : t("conn.refused", { reason: failure.reason || failure.code });
    showBanner(text, "error");
  });
  whenLanguage(show);
  document.getElementById("me").textContent = client.claims.name || client.claims.sub;
  return client;
}

/** Connect `client`, join its room, then run `joined()`; a failure shows as a notice. */
export function enter(client, joined) {
  client
    .connect()
    .then(() => client.join())
    .then(joined)
    .catch((error) => notify(error.message));
}

function showBanner(text, kind) {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.className = `banner ${kind}`;
  banner.hidden = !text;
}

/**
 * The people of a room by school and class, kept from the `joined` roster
 * and the presence events, as the protocol's Presence section describes.
 */
export class Roster {
  constructor(client, onChange) {
    this.members = new Map();
    this.away = new Map();
    this.onChange = onChange;
    client.on("joined", (joined) => this._reset(joined.roster ?? []));
    client.on("member_joined", (event) => this._arrive(event.member));
    client.on("member_left", (event) => this._depart(event.user, event.reason));
    client.on("presence", (event) => {
      for (const member of event.joined ?? []) this._arrive(member, true);
      for (const gone of event.left ?? []) this._depart(gone.user, gone.reason, true);
      this.onChange();
    });
  }

  _reset(roster) {
    this.members.clear();
    this.away.clear();
    for (const school of roster) {
      for (const klass of school.classes) {
        for (const member of klass.members ?? []) this.members.set(member.user, member);
        for (const gone of klass.away ?? []) {
          this.away.set(gone.member.user, { ...gone.member, reason: gone.reason });
        }
      }
    }
    this.onChange();
  }

  _arrive(member, quiet = false) {
    this.away.delete(member.user);
    this.members.set(member.user, member);
    if (!quiet) this.onChange();
  }

  _depart(user, reason, quiet = false) {
    const member = this.members.get(user);
    this.members.delete(user);
    if (member) this.away.set(user, { ...member, reason });
    if (!quiet) this.onChange();
  }

  /** Students present, for a school or for all. */
  students(school = null) {
    return [...this.members.values()].filter(
      (m) => m.role === "student" && (school === null || m.school === school),
    ).length;
  }

  /** Schools in order, each with its present and away members sorted by name. */
  bySchool() {
    const schools = new Map();
    const add = (member, present) => {
      if (!schools.has(member.school)) {
        schools.set(member.school, { school: member.school, present: [], away: [] });
      }
      schools.get(member.school)[present ? "present" : "away"].push(member);
    };
    for (const member of this.members.values()) add(member, true);
    for (const member of this.away.values()) add(member, false);
    const byName = (a, b) => a.name.localeCompare(b.name) || a.user.localeCompare(b.user);
    return [...schools.values()]
      .sort((a, b) => a.school.localeCompare(b.school))
      .map((s) => ({ ...s, present: s.present.sort(byName), away: s.away.sort(byName) }));
  }

  /** The roster as a list of schools; `action(member)` may add a control. */
  render(action = () => null) {
    return this.bySchool().map((school) =>
      h(
        "section",
        { class: "school" },
        h("h3", {}, school.school || "—", " ", h("small", {}, t("roster.present", { count: school.present.length }))),
        h(
          "ul",
          {},
          school.present.map((m) =>
            h("li", { dataset: { user: m.user } }, `${m.name} · ${m.class} · ${t(`role.${m.role}`)}`, " ", action(m)),
          ),
          school.away.map((m) =>
            h("li", { class: "away", dataset: { user: m.user } }, `${m.name} · ${t("roster.away")}`),
          ),
        ),
      ),
    );
  }
}

/** Call `tick` every quarter second while the page is open. */
export function everyTick(tick) {
  tick();
  return setInterval(tick, 250);
}
