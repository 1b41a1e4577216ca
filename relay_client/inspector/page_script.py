"""The inspector page's script: live list (server-sent events), detail view, replay.

Plain browser JavaScript, no libraries. It builds every node with
``textContent`` (captured traffic is never parsed as HTML), reads bodies out
of the API's base64 ``raw`` messages, pretty-prints JSON and highlights YAML,
shows images, and hex-dumps binary.
"""

from __future__ import annotations

SCRIPT = r"""
"use strict";
const MAX_ITEMS = 500, HEX_LIMIT = 4096;
const state = { items: new Map(), order: [], selected: null, editing: false, notice: null };
const $ = (id) => document.getElementById(id);

function h(tag, props, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value") node.value = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false) node.append(kid);
  return node;
}

function bytesOf(b64) {
  const bin = atob(b64 || ""), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function bodyOf(b64) {
  const a = bytesOf(b64);
  for (let i = 0; i + 3 < a.length; i++)
    if (a[i] === 13 && a[i + 1] === 10 && a[i + 2] === 13 && a[i + 3] === 10) return a.subarray(i + 4);
  return new Uint8Array(0);
}
function b64of(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function headerValue(headers, name) {
  const want = name.toLowerCase();
  for (const [k, v] of Object.entries(headers || {})) if (k.toLowerCase() === want) return v[0] || "";
  return "";
}
function fmtBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KB";
  return (n / 1048576).toFixed(1) + " MB";
}
function fmtMs(ms) { return ms < 1000 ? ms.toFixed(ms < 10 ? 1 : 0) + " ms" : (ms / 1000).toFixed(2) + " s"; }
function statusClass(x) {
  if (!x.response) return x.localrelay.error ? "s-err" : "s-pend";
  return "s-" + Math.floor(x.response.status_code / 100) + "xx";
}
function statusText(x) { return x.response ? String(x.response.status_code) : (x.localrelay.error ? "ERR" : "…"); }
function durText(x) { return x.localrelay.done ? fmtMs(x.duration / 1e6) : "pending"; }
function timeText(x) { return new Date(x.localrelay.started * 1000).toLocaleTimeString([], { hour12: false }); }

function matches(x) {
  const p = $("f-path").value.trim();
  if (p && !x.request.uri.includes(p)) return false;
  const s = $("f-status").value.trim().toLowerCase();
  if (!s) return true;
  const code = x.response ? x.response.status_code : null;
  return s.split(",").map((t) => t.trim()).filter(Boolean).some((t) => {
    if (t === "pending") return code === null;
    if (code === null) return false;
    if (/^[1-5]xx$/.test(t)) return Math.floor(code / 100) === Number(t[0]);
    return String(code).startsWith(t);
  });
}

let frame = 0;
function schedule() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; renderList(); }); }

const rowEls = new Map();
function rowFor(x) {
  let li = rowEls.get(x.id);
  if (!li) {
    li = h("li", { "data-id": x.id, onclick: () => select(x.id) },
      ["m", "p", "tag", "st", "d", "t"].map((c) => h("span", { class: c })));
    li.children[2].textContent = "replay";
    rowEls.set(x.id, li);
  }
  const [m, p, , st, d, t] = li.children;
  const set = (node, text) => { if (node.textContent !== text) node.textContent = text; };
  li.className = "row" + (x.id === state.selected ? " selected" : "") + (x.localrelay.replay ? " replay" : "");
  set(m, x.request.method); set(p, x.request.uri); p.title = x.request.uri;
  set(st, statusText(x)); st.className = "st " + statusClass(x); set(d, durText(x)); set(t, timeText(x));
  return li;
}

function renderList() {
  const list = $("list"), rows = [];
  for (const id of rowEls.keys()) if (!state.items.has(id)) rowEls.delete(id);
  for (let i = state.order.length - 1; i >= 0; i--) {
    const x = state.items.get(state.order[i]);
    if (matches(x)) rows.push(rowFor(x));
  }
  rows.forEach((li, i) => { if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null); });
  while (list.children.length > rows.length) list.lastChild.remove();
  const total = state.order.length;
  $("count").textContent = rows.length === total ? `${total} request${total === 1 ? "" : "s"}` : `${rows.length} of ${total}`;
  $("empty").hidden = total > 0;
}

function upsert(x) {
  if (!state.items.has(x.id)) {
    state.order.push(x.id);
    while (state.order.length > MAX_ITEMS) state.items.delete(state.order.shift());
  }
  state.items.set(x.id, x);
  if (x.id === state.selected && !state.editing) renderDetail();
}

async function load() {
  try {
    const data = await (await fetch("/api/requests/http?limit=" + MAX_ITEMS)).json();
    state.items.clear(); state.order = [];
    for (const x of data.requests.reverse()) upsert(x);
    renderList();
    if (state.selected && !state.editing) renderDetail();
  } catch (e) { /* the feed reconnects and reloads */ }
}

function select(id) {
  state.selected = id; state.editing = false; state.notice = null;
  renderDetail(); schedule();
}

function table(pairs) {
  return h("table", null, pairs.map(([k, v]) => h("tr", null, h("td", { text: k }), h("td", { text: v }))));
}
function headerPairs(headers) {
  const out = [];
  for (const [k, vs] of Object.entries(headers || {})) for (const v of vs) out.push([k, v]);
  return out;
}

function highlightJson(text) {
  const out = [], re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    out.push(text.slice(last, m.index));
    if (m[1]) { out.push(h("span", { class: m[2] ? "k" : "s", text: m[1] })); if (m[2]) out.push(m[2]); }
    else out.push(h("span", { class: m[3] ? "l" : "n", text: m[0] }));
    last = re.lastIndex;
  }
  out.push(text.slice(last));
  return h("pre", { class: "code" }, out);
}
function highlightYaml(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const key = /^(\s*(?:-\s+)?)([^\s#:'"][^:#]*?|"[^"]*"|'[^']*')(:)(?=\s|$)(.*)$/.exec(line);
    if (/^\s*#/.test(line)) out.push(h("span", { class: "c", text: line }));
    else if (key) out.push(key[1], h("span", { class: "k", text: key[2] }), key[3], h("span", { class: "s", text: key[4] }));
    else out.push(line);
    out.push("\n");
  }
  return h("pre", { class: "code" }, out);
}
function hexView(bytes, notes) {
  const shown = bytes.subarray(0, HEX_LIMIT), lines = [];
  notes.push(`Binary, ${fmtBytes(bytes.length)}` + (bytes.length > HEX_LIMIT ? `; first ${fmtBytes(HEX_LIMIT)} shown.` : "."));
  for (let i = 0; i < shown.length; i += 16) {
    const row = Array.from(shown.subarray(i, i + 16));
    const hex = row.map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(47, " ");
    const ascii = row.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(i.toString(16).padStart(8, "0") + "  " + hex + "  " + ascii);
  }
  return h("pre", { class: "code", text: lines.join("\n") });
}
async function inflate(bytes, encoding) {
  const fmt = { gzip: "gzip", "x-gzip": "gzip", deflate: "deflate" }[encoding];
  if (!fmt || typeof DecompressionStream === "undefined") return null;
  try {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(fmt));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (e) { return null; }
}
function decodeText(bytes) {
  try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) { return null; }
}
const TEXTUAL = /^(text\/|application\/(json|.+\+json|xml|.+\+xml|javascript|x-www-form-urlencoded|(x-)?yaml|x-ndjson|graphql)|image\/svg\+xml)/;

async function bodyView(headers, raw, total, truncated, uri) {
  let body = bodyOf(raw);
  const notes = [];
  if (!total) return h("div", { class: "body" }, h("p", { class: "muted", text: "No body" }));
  if (truncated) notes.push(`Captured the first ${fmtBytes(body.length)} of ${fmtBytes(total)}.`);
  let view = null;
  const encoding = headerValue(headers, "Content-Encoding").toLowerCase().trim();
  if (encoding && encoding !== "identity") {
    const plain = truncated ? null : await inflate(body, encoding);
    if (plain) { notes.push(`Decoded from ${encoding} (${fmtBytes(body.length)} on the wire).`); body = plain; }
    else { notes.push(`Content-Encoding ${encoding}, shown as received.`); view = hexView(body, notes); }
  }
  const mime = headerValue(headers, "Content-Type").toLowerCase().split(";")[0].trim();
  if (view) { /* already a hex dump */ }
  else if (mime.startsWith("image/")) {
    notes.push(`${mime}, ${fmtBytes(body.length)}`);
    view = h("img", { class: "img", src: `data:${mime};base64,${b64of(body)}`, alt: mime });
  } else {
    const text = decodeText(body);
    if (text === null || (!TEXTUAL.test(mime) && /[\x00-\x08\x0e-\x1f]/.test(text))) view = hexView(body, notes);
    else if (mime.includes("json") || (!mime && /^\s*[[{]/.test(text))) {
      try { view = highlightJson(JSON.stringify(JSON.parse(text), null, 2)); }
      catch (e) { notes.push(truncated ? "Truncated JSON, shown as text." : "Not valid JSON: " + e.message); }
    } else if (mime.includes("yaml") || /\.ya?ml(\?|$)/.test(uri)) view = highlightYaml(text);
    else if (mime === "application/x-www-form-urlencoded") view = table(Array.from(new URLSearchParams(text)));
    if (!view) view = h("pre", { class: "code", text });
  }
  return h("div", { class: "body" }, notes.map((n) => h("p", { class: "note", text: n })), view);
}

let renderToken = 0;
async function renderDetail() {
  const token = ++renderToken, x = state.items.get(state.selected), view = $("view");
  if (!x) {
    view.replaceChildren(h("p", { class: "placeholder", text: state.selected ? "Loading…" : "Select a request to see it here." }));
    return;
  }
  const lr = x.localrelay, res = x.response;
  const meta = [h("b", { class: statusClass(x), text: res ? res.status : (lr.error ? "failed" : "waiting for the response") }),
    " · " + durText(x), " · " + new Date(lr.started * 1000).toLocaleString([], { hour12: false }), x.remote_addr ? " · from " + x.remote_addr : "",
    lr.replay ? " · replay" : "", lr.error ? " · " + lr.error : ""];
  const summary = h("div", { class: "summary" },
    h("div", { class: "line1" }, h("span", { class: "m", text: x.request.method }), h("span", { class: "p", text: x.request.uri })),
    h("div", { class: "meta" }, meta),
    h("div", { class: "actions" },
      h("button", { id: "replay-btn", class: "primary", type: "button", text: "Replay", onclick: () => replay(x, {}) }),
      h("button", { id: "edit-btn", type: "button", text: "Edit & replay", onclick: () => { state.editing = true; renderEdit(x); } })),
    state.notice ? h("div", { class: "notice " + state.notice.kind, text: state.notice.text }) : null);
  const query = Array.from(new URL(x.request.uri, "http://x").searchParams);
  const request = h("section", { class: "card" }, h("h3", { text: "Request" }),
    query.length ? [h("h4", { text: "Query" }), table(query)] : null,
    h("h4", { text: "Headers" }), table(headerPairs(x.request.headers)),
    h("h4", { text: `Body (${fmtBytes(lr.request_bytes)})` }),
    await bodyView(x.request.headers, x.request.raw, lr.request_bytes, lr.request_truncated, x.request.uri));
  const response = h("section", { class: "card" }, h("h3", { text: "Response" }),
    res ? [h("h4", { text: "Headers" }), table(headerPairs(res.headers)),
      h("h4", { text: `Body (${fmtBytes(lr.response_bytes)})` }),
      await bodyView(res.headers, res.raw, lr.response_bytes, lr.response_truncated, x.request.uri)]
      : h("div", { class: "body" }, h("p", { class: "muted", text: lr.error || "Waiting for the local server…" })));
  if (token === renderToken && !state.editing) view.replaceChildren(summary, request, response);
}

function renderEdit(x) {
  const body = bodyOf(x.request.raw), text = decodeText(body), lr = x.localrelay;
  const lines = headerPairs(x.request.headers).filter(([k]) => k.toLowerCase() !== "content-length").map(([k, v]) => `${k}: ${v}`);
  const note = lr.request_truncated ? "The captured body was truncated: enter the body to send."
    : text === null ? "The captured body is binary: leave this empty to send it unchanged, or type a new one." : "";
  const form = h("form", { class: "edit", id: "edit-form" },
    h("h3", { text: `Edit and replay ${x.request.method} ${x.request.uri}` }),
    h("label", { text: "Method" }), h("input", { name: "method", value: x.request.method }),
    h("label", { text: "Path" }), h("input", { name: "path", value: x.request.uri }),
    h("label", { text: "Headers" }), h("textarea", { name: "headers", rows: Math.min(14, lines.length + 1), value: lines.join("\n") }),
    h("label", { text: "Body" }), h("textarea", { name: "body", placeholder: note, value: lr.request_truncated || text === null ? "" : text }),
    h("div", { class: "actions" },
      h("button", { class: "primary", type: "submit", text: "Send replay" }),
      h("button", { type: "button", text: "Cancel", onclick: () => { state.editing = false; renderDetail(); } })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const field = (name) => form.elements.namedItem(name).value, headers = [];
    for (const [i, line] of field("headers").split("\n").entries()) {
      if (!line.trim()) continue;
      const at = line.indexOf(":");
      if (at < 1) { state.notice = { kind: "err", text: `Header line ${i + 1} needs "Name: value".` }; state.editing = false; renderDetail(); return; }
      headers.push([line.slice(0, at).trim(), line.slice(at + 1).trim()]);
    }
    const edits = { method: field("method").trim(), path: field("path").trim(), headers };
    if (field("body") || (text !== null && !lr.request_truncated)) edits.body = field("body");
    replay(x, edits);
  });
  $("view").replaceChildren(form);
}

async function replay(x, edits) {
  state.editing = false; state.notice = { kind: "", text: "Replaying…" }; renderDetail();
  let answer;
  try {
    answer = await fetch("/api/requests/http", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: x.id, ...edits }) });
  } catch (e) { state.notice = { kind: "err", text: "The inspector is unreachable." }; renderDetail(); return; }
  const newId = answer.headers.get("X-Replay-Id");
  if (answer.status !== 204) {
    let msg = answer.statusText;
    try { msg = (await answer.json()).msg; } catch (e) { /* keep the status text */ }
    state.notice = { kind: "err", text: msg };
  } else state.notice = { kind: "", text: `Replay of ${x.request.method} ${x.request.uri} (${x.id}).` };
  if (newId) {
    if (!state.items.has(newId)) {
      try { upsert(await (await fetch("/api/requests/http/" + encodeURIComponent(newId))).json()); } catch (e) { /* feed brings it */ }
    }
    state.selected = newId; schedule();
  }
  renderDetail();
}

async function refreshTunnel() {
  try {
    const [t, s] = await Promise.all([fetch("/api/tunnels").then((r) => r.json()), fetch("/api/status").then((r) => r.json())]);
    const tun = t.tunnels[0];
    $("tunnel").replaceChildren(...(tun ? [h("a", { href: tun.public_url, target: "_blank", rel: "noopener", text: tun.public_url }),
      " → " + tun.config.addr] : ["connecting to the relay…"]));
    $("agent").textContent = s.status; $("agent").className = "pill " + (s.status === "online" ? "on" : "off");
  } catch (e) { $("agent").textContent = "inspector unreachable"; $("agent").className = "pill off"; }
}

function connect() {
  const feed = new EventSource("/api/requests/http/stream");
  const live = (on) => { $("live").textContent = on ? "live" : "reconnecting"; $("live").className = "pill " + (on ? "on" : "off"); };
  feed.addEventListener("hello", () => { live(true); load(); });
  feed.addEventListener("request", (e) => { upsert(JSON.parse(e.data)); schedule(); });
  feed.addEventListener("update", (e) => { upsert(JSON.parse(e.data)); schedule(); });
  feed.addEventListener("clear", () => { state.items.clear(); state.order = []; state.selected = null; renderDetail(); schedule(); });
  feed.addEventListener("resync", load);
  feed.onerror = () => live(false);
}

$("f-path").addEventListener("input", schedule);
$("f-status").addEventListener("input", schedule);
$("clear").addEventListener("click", () => fetch("/api/requests/http", { method: "DELETE" }));
renderList();
refreshTunnel();
setInterval(refreshTunnel, 5000);
connect();
"""
