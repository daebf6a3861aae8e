// kubetasks dashboard: the live runs list and the action forms. No framework, no build step.
"use strict";

function liveRuns() {
  const table = document.getElementById("runs-table");
  const url = table && table.dataset.liveUrl;
  if (!url) return;
  const body = document.getElementById("runs-body");
  const status = document.getElementById("live-status");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.status);
      const page = await response.json();
      if (body.innerHTML !== page.html) body.innerHTML = page.html;
      for (const [id, text] of [["runs-total", String(page.total)], ["runs-shown", page.shown]]) {
        const el = document.getElementById(id);
        if (el) el.textContent = text;
      }
      if (status) { status.classList.remove("stale"); status.textContent = "live"; status.dataset.updated = Date.now(); }
    } catch (err) {
      if (status) { status.classList.add("stale"); status.textContent = "offline"; }
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, 2000);
}

function showResult(ok, message, run) {
  const el = document.getElementById("action-result");
  el.hidden = false;
  el.dataset.ok = String(ok);
  el.textContent = message;
  if (ok && run && run.name) {
    const link = document.createElement("a");
    link.href = "/runs/" + encodeURIComponent(run.namespace) + "/" + encodeURIComponent(run.name);
    link.id = "action-run-link";
    link.textContent = " open " + run.name;
    el.append(link);
  }
}

function actionForms() {
  for (const form of document.querySelectorAll("form[data-action]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      if (button) button.disabled = true;
      try {
        const response = await fetch(form.action, {
          method: "POST",
          body: new URLSearchParams(new FormData(form)),
          headers: { "X-Kubetasks-Action": "1", Accept: "application/json" },
        });
        let answer;
        try { answer = await response.json(); } catch (err) { answer = { message: await response.text() }; }
        showResult(response.ok && answer.ok !== false, answer.message || response.statusText, answer.run);
        if (response.ok && form.dataset.action === "cancel") setTimeout(() => location.reload(), 1500);
      } catch (err) {
        showResult(false, "the request failed: " + err);
      } finally {
        if (button) button.disabled = false;
      }
    });
  }
}

liveRuns();
actionForms();
