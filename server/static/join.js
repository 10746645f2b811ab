// The join page: a class code and a name give a student token
// (POST /api/join), kept for this tab; then the student page opens.

import { keepToken, notify, setUpLanguage, t } from "./page.js";

setUpLanguage();

const form = document.getElementById("join-form");
const code = document.getElementById("code");
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("code")) {
  code.value = fragment.get("code");
  history.replaceState(null, "", location.pathname);
  document.getElementById("name").focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = document.getElementById("join");
  button.disabled = true;
  notify(t("join.busy"));
  try {
    const response = await fetch("/api/join", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ code: code.value, name: document.getElementById("name").value }),
    });
    const body = await response.json();
    if (!response.ok) {
      notify(t("join.failed", { message: body.message ?? response.status }));
      return;
    }
    keepToken(body.token);
    location.assign("/web/student.html");
  } catch (error) {
    notify(t("join.failed", { message: error.message }));
  } finally {
    button.disabled = false;
  }
});
