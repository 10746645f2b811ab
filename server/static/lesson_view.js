// The current activity of a lesson, as the student and teacher pages show it.

import { h, t } from "./page.js";

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
