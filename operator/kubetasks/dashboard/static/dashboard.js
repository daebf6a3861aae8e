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

function liveRun() {
  // A run's page while the run is not finished: fetch it again, swap in its [data-live] parts
  // (keeping which logs are open and where they are scrolled), reload once it has finished.
  const parts = [...document.querySelectorAll('[data-live="unfinished"]')];
  if (!parts.length) return;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(location.href, { cache: "no-store" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of parts) {
        const next = fresh.getElementById(part.id);
        if (!next) continue;
        if (next.dataset.live !== "unfinished") { clearInterval(timer); location.reload(); return; }
        const open = new Map([...part.querySelectorAll("details[id]")].map((d) => [d.id, d.open]));
        const scrolled = new Map([...part.querySelectorAll("details[id] pre")].map((p) => [p.parentElement.id, p.scrollTop]));
        for (const d of next.querySelectorAll("details[id]")) if (open.has(d.id)) d.open = open.get(d.id);
        if (next.innerHTML === part.innerHTML) continue;
        part.replaceChildren(...next.childNodes);
        for (const p of part.querySelectorAll("details[id] pre")) {
          if (scrolled.has(p.parentElement.id)) p.scrollTop = scrolled.get(p.parentElement.id);
        }
      }
    } catch (err) {
      // the next round tries again
    } finally {
      busy = false;
    }
  }, 3000);
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
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
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
        if (response.ok && form.dataset.action.startsWith("cancel")) setTimeout(() => location.reload(), 1500);
      } catch (err) {
        showResult(false, "the request failed: " + err);
      } finally {
        if (button) button.disabled = false;
      }
    });
  }
}

liveRuns();
liveRun();
actionForms();
