// The demo page: the real /feed and /events, plus /demo/api for users, embeddings and panels.
// Every text from the server is set with textContent, never parsed as HTML: titles may hold markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { user: null, lastAction: null, lastChange: null, lastClick: 0, stale: false };
const PAUSE_MS = 1500; // a feed that is out of date is replaced once the person pauses this long
const K = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("k")) || 10)); // ?k= items per feed

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3);
  return String(v);
}

function clock(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleTimeString() : "–";
}

// serving.require_api_key: the key comes in the page's fragment (/demo#key=...), which the
// browser never sends to a server, and goes out as the X-API-Key header of every API call.
const API_KEY = new URLSearchParams(location.hash.slice(1)).get("key");

async function getJSON(url, options) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 8000); // the page never hangs on a request
  try {
    const headers = { ...(options && options.headers) };
    if (API_KEY) headers["X-API-Key"] = API_KEY;
    const resp = await fetch(url, { ...options, headers, signal: controller.signal });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.error || body.detail || `HTTP ${resp.status}`);
    return body;
  } finally {
    clearTimeout(timer);
  }
}

async function loadUsers() {
  try {
    const users = await getJSON("/demo/api/users");
    const select = $("user-select");
    for (const id of users.known) select.appendChild(new Option(`user ${id}`, String(id)));
    state.newUser = users.new_user;
  } catch (err) {
    $("feed-status").textContent = `users: ${err.message}`;
  }
}

function chooseUser(id) {
  state.user = id;
  state.lastAction = null;
  state.lastChange = null;
  $("user-id").textContent = String(id);
  refreshFeed();
  refreshEmbedding();
}

async function refreshFeed() {
  if (state.user === null) return;
  $("feed-status").textContent = "loading feed…";
  try {
    const feed = await getJSON(`/feed?user_id=${encodeURIComponent(state.user)}&k=${K}`);
    renderFeed(feed);
    $("feed-status").textContent = `feed at ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("feed-status").textContent = `feed: ${err.message}`;
  }
}

function renderFeed(feed) {
  $("model-version").textContent = `model ${feed.model_version}, request ${feed.request_id.slice(0, 8)}`;
  const list = $("feed");
  list.replaceChildren();
  const share = {};
  for (const item of feed.items) {
    const li = $("item-template").content.firstElementChild.cloneNode(true);
    li.dataset.itemId = String(item.item_id);
    li.dataset.genres = item.genres.join("|");
    li.querySelector(".title").textContent = item.title;
    li.querySelector(".genres").textContent = item.genres.join(", ") || "no genre";
    const tasks = Object.entries(item.scores).map(([t, p]) => `${t} ${p.toFixed(3)}`).join(" · ");
    li.querySelector(".scores").textContent = `score ${item.score.toFixed(3)} (${tasks})`;
    li.querySelector(".path").textContent = item.path ? `retrieval path ${item.path.join("→")}` : "filled from the catalogue";
    for (const button of li.querySelectorAll("button")) {
      button.addEventListener("click", () => act(feed, item, button.dataset.action, li));
    }
    list.appendChild(li);
    for (const g of item.genres) share[g] = (share[g] || 0) + 1 / feed.items.length;
  }
  const top = Object.entries(share).sort((a, b) => b[1] - a[1]).slice(0, 5);
  $("genre-share").textContent = top.length ? "Genres in this feed: " + top.map(([g, s]) => `${g} ${(s * 100).toFixed(0)}%`).join(", ") : "";
  list.dataset.requestId = feed.request_id;
}

async function act(feed, item, action, li) {
  const kinds = action === "like" ? ["click", "like"] : action === "finish" ? ["click", "finish"] : ["skip"];
  const now = Date.now();
  const events = kinds.map((kind) => ({ schema_version: 1, request_id: feed.request_id, user_id: feed.user_id,
                                        item_id: item.item_id, event_time: now, action: kind }));
  try {
    await getJSON("/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ events }) });
    li.classList.add("acted");
    state.lastAction = now / 1000;
    state.lastClick = performance.now();
    $("feed-status").textContent = `${action} sent for ${item.title}`;
  } catch (err) {
    $("feed-status").textContent = `${action}: ${err.message}`;
  }
}

async function refreshEmbedding() {
  if (state.user === null) return;
  const el = $("embedding");
  try {
    const e = await getJSON(`/demo/api/users/${encodeURIComponent(state.user)}/embedding`);
    el.dataset.changedAt = e.changed_at || "";
    el.dataset.hasRow = e.has_row ? "1" : "0";
    if (!e.has_row) {
      el.textContent = "No embedding on the serving PS yet (a new user: the feed comes from cold-start defaults).";
    } else if (e.changed_at) {
      const after = state.lastAction && e.changed_at >= state.lastAction ? ` (${(e.changed_at - state.lastAction).toFixed(1)} s after your last action)` : "";
      el.textContent = `Your embedding on the serving PS last changed at ${clock(e.changed_at)}${after}.`;
      el.className = "changed";
      if (state.lastChange !== e.changed_at) {
        state.lastChange = e.changed_at;
        state.stale = true; // the feed follows the new embedding, but not under the person's cursor
      }
    } else {
      el.textContent = `Your embedding is on the serving PS (norm ${e.norm.toFixed(3)}); no change seen since ${clock(e.checked_at)}.`;
      el.className = "";
    }
  } catch (err) {
    el.textContent = `embedding: ${err.message}`;
  }
}

async function refreshPanels() {
  try {
    const got = await getJSON("/demo/api/panels");
    renderPanels(got);
  } catch (err) {
    $("panels-time").textContent = `model server: ${err.message}`;
  }
}

function renderPanels(got) {
  $("panels-time").textContent = `at ${clock(got.time)}, rates over the last ${fmt(got.window_s)} s`;
  const links = $("links");
  if (!links.dataset.filled) {
    for (const [name, url] of Object.entries(got.links)) {
      const a = text("a", `${name} UI`);
      a.href = url;
      links.appendChild(a);
    }
    links.dataset.filled = "1";
  }
  const box = $("panels");
  box.replaceChildren();
  for (const p of got.panels) {
    const card = document.createElement("div");
    card.className = p.up ? "panel" : "panel down";
    card.dataset.panel = p.name;
    card.dataset.up = p.up ? "1" : "0";
    card.appendChild(text("h3", `${p.title}${p.up ? "" : " — DOWN"}`));
    if (p.error) card.appendChild(text("div", p.error, "error"));
    const table = document.createElement("table");
    for (const [k, v] of Object.entries(p.figures)) {
      const tr = document.createElement("tr");
      tr.dataset.figure = k;
      tr.dataset.value = v === null || v === undefined ? "" : String(v);
      const shown = k.endsWith("_at") && typeof v === "number" ? clock(v) : fmt(v);
      tr.append(text("td", k.replaceAll("_", " ")), text("td", shown));
      table.appendChild(tr);
    }
    card.appendChild(table);
    box.appendChild(card);
  }
}

$("user-select").addEventListener("change", (e) => e.target.value && chooseUser(Number(e.target.value)));
$("new-user").addEventListener("click", () => {
  chooseUser(state.newUser ?? Math.floor(1e12 + Math.random() * 1e12));
  state.newUser = null; // the next new user gets another ID
});
$("refresh").addEventListener("click", refreshFeed);
loadUsers();
refreshPanels();
setInterval(refreshPanels, 2000);
setInterval(refreshEmbedding, 1000);
setInterval(() => {
  if (state.stale && performance.now() - state.lastClick > PAUSE_MS) {
    state.stale = false;
    refreshFeed();
  }
}, 250);
