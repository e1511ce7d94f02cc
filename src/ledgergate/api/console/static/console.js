// ledgergate console: every action on a page is a call to the REST API (the same call
// the CLI makes), sent with the session cookie and the page's CSRF token; the pending
// reviews inbox refreshes when the API's event stream says reviews changed.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = Array.isArray(doc.detail) ? doc.detail.map((d) => d.msg).join("; ") : "";
    throw new Error(doc.error || detail || `HTTP ${r.status}`);
  }
  return doc;
}

function formBody(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.type === "submit") continue;
    if (el.hasAttribute("data-list")) {
      const items = el.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (items.length) out[el.name] = items;
    } else if (el.value !== "") {
      out[el.name] = el.value;
    }
  }
  return out;
}

function say(form, text, bad) {
  const st = form.querySelector(".status");
  if (st) { st.textContent = text; st.classList.toggle("error", !!bad); }
}

// Forms that call the API: data-api (path), data-method, data-secret (show this field of
// the answer once), data-then="reload", data-confirm.
document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  if (form.matches("form.decide")) {
    ev.preventDefault();
    const verb = ev.submitter?.dataset.verb;
    if (!verb) return;
    if (!form.reportValidity()) return;
    const id = form.dataset.review;
    try {
      const rv = await api("POST", `/api/v1/reviews/${encodeURIComponent(id)}/${verb}`,
                           {reason: form.elements.reason.value});
      form.elements.reason.value = "";  // said: the inbox may refresh again
      if (rv.state === "pending") {  // more approvals needed: the card stays
        say(form, `${verb === "approve" ? "approved" : "denied"}: ${rv.state}`);
      } else {
        form.closest("article.review")?.remove();
      }
      refreshInbox();
    } catch (e) { say(form, e.message, true); }
    return;
  }
  if (!form.dataset.api) return;
  ev.preventDefault();
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
  const method = form.dataset.method || "POST";
  try {
    const doc = await api(method, form.dataset.api, method === "DELETE" ? undefined : formBody(form));
    if (form.dataset.result) {
      const out = document.querySelector(form.dataset.result);
      out.textContent = JSON.stringify(doc, null, 2);
      out.hidden = false;
      say(form, "");
    } else if (form.dataset.secret) {
      const box = form.querySelector(".secret");
      box.querySelector("output").textContent = doc[form.dataset.secret];
      box.hidden = false;
      say(form, `created ${doc.id || ""}`);
    } else if (form.dataset.then === "reload" || method === "DELETE") {
      say(form, "done");
      window.location.reload();
    } else {
      say(form, "done");
    }
  } catch (e) { say(form, e.message, true); }
});

// The live inbox. A refresh asked for while one is under way runs again after it, so a
// change that lands during a fetch (a decision, another reviewer's) is never missed.
const inbox = document.getElementById("inbox");
let refreshing = null;
let again = false;
async function refreshInbox() {
  if (!inbox) return;
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    try {
      do {
        again = false;
        const r = await fetch(inbox.dataset.live, {credentials: "same-origin", cache: "no-store"});
        if (r.redirected || r.status === 401) { window.location.reload(); return; }
        if (r.ok) {
          // Keep what a reviewer is doing: not replaced while a reason is written in any
          // card, focused or not (between pressing Approve and its click the focus has
          // left the field, and a card replaced then would lose the click); the decision
          // clears its reason, and the next event or decision refreshes the inbox.
          const html = await r.text();
          const typing = [...inbox.querySelectorAll("form.decide input[name=reason]")]
            .some((field) => field.value);
          if (!typing) inbox.innerHTML = html;
        }
      } while (again);
    } finally { refreshing = null; }
  })();
  await refreshing;
}
if (inbox && window.EventSource) {
  const events = new EventSource("/api/v1/reviews/events");
  events.addEventListener("reviews", refreshInbox);
  events.addEventListener("ended", () => { events.close(); window.location.reload(); });
}

// SSH shells: the asciinema player over the session's asciicast (markers at checkpoints).
const player = document.getElementById("player");
if (player && window.AsciinemaPlayer) {
  window.AsciinemaPlayer.create(player.dataset.cast, player, {fit: "width", idleTimeLimit: 2});
}

// Evidence exports in progress: the page follows them until they finish.
const exportsTable = document.getElementById("exports");
if (exportsTable && exportsTable.dataset.poll === "1") {
  setTimeout(() => window.location.reload(), 1000);
}
