"""The inspector page served at ``/``: one self-contained HTML document.

Everything is inline (no CDN, no fonts, no external files), so it works
offline and ships inside the Python package. The page only talks to the JSON
API and its live feed; the script lives in ``page_script``.
"""

from __future__ import annotations

from relay_client.inspector.page_script import SCRIPT

STYLE = r"""
:root {
  --bg: #f6f7f9; --panel: #fff; --ink: #1d2330; --muted: #6b7385; --line: #e3e6ec;
  --accent: #3358d4; --sel: #eaf0ff; --ok: #18794e; --redir: #2f6fb3; --warn: #a35200; --bad: #c4302b;
  --code: #f3f4f7; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Ubuntu, sans-serif; color: var(--ink);
  background: var(--bg); display: flex; flex-direction: column; }
header { display: flex; align-items: center; gap: 14px; padding: 10px 18px; background: #141a2a; color: #e8ecf5; }
header .brand { font-weight: 650; letter-spacing: .2px; }
header .brand span { color: #8fa6ff; font-weight: 500; }
header #tunnel { font-family: var(--mono); font-size: 13px; color: #c9d2e6; flex: 1; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
header #tunnel a { color: #fff; }
.pill { font-size: 12px; padding: 2px 9px; border-radius: 999px; background: #2a3147; color: #c9d2e6; }
.pill.on { background: #12432f; color: #7ee2b0; }
.pill.off { background: #4a1f1f; color: #ffaaa5; }
button { font: inherit; border: 1px solid var(--line); background: var(--panel); color: var(--ink);
  border-radius: 6px; padding: 5px 12px; cursor: pointer; }
button:hover { border-color: #b9c0cf; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.primary:hover { background: #2846b0; }
header button { background: transparent; color: #e8ecf5; border-color: #3a425a; }
main { flex: 1; display: flex; min-height: 0; }
#list-pane { width: 44%; min-width: 340px; display: flex; flex-direction: column; border-right: 1px solid var(--line);
  background: var(--panel); }
.filters { display: flex; gap: 8px; padding: 10px 12px; border-bottom: 1px solid var(--line); align-items: center; }
.filters input { font: inherit; padding: 5px 9px; border: 1px solid var(--line); border-radius: 6px; min-width: 0; }
.filters #f-path { flex: 2; } .filters #f-status { flex: 1; }
#count { color: var(--muted); font-size: 12px; white-space: nowrap; }
#list { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; }
.row { display: grid; grid-template-columns: 58px minmax(0, 1fr) 52px 40px 64px 62px; gap: 8px; align-items: center;
  padding: 7px 12px; border-bottom: 1px solid #f0f1f4; cursor: pointer; font-size: 13px; }
.row:hover { background: #f7f9fd; }
.row.selected { background: var(--sel); box-shadow: inset 3px 0 0 var(--accent); }
.row .m, .summary .m { font-family: var(--mono); font-weight: 600; font-size: 12px; }
.row .p { font-family: var(--mono); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row .d, .row .t { color: var(--muted); font-size: 12px; text-align: right; font-variant-numeric: tabular-nums; }
.tag { font-size: 11px; padding: 0 7px; border-radius: 999px; background: #efe7ff; color: #5b3cc4; }
.row:not(.replay) .tag { visibility: hidden; }
.row .tag { justify-self: end; }
.st { font-family: var(--mono); font-weight: 600; text-align: center; border-radius: 5px; padding: 0 4px; }
.s-2xx { color: var(--ok); } .s-3xx { color: var(--redir); } .s-4xx { color: var(--warn); }
.s-5xx, .s-err { color: var(--bad); } .s-1xx, .s-pend { color: var(--muted); }
#empty { color: var(--muted); padding: 28px 18px; text-align: center; }
#detail { flex: 1; overflow-y: auto; padding: 16px 20px 40px; min-width: 0; }
.placeholder, .muted { color: var(--muted); }
.summary { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.summary .line1 { display: flex; gap: 10px; align-items: baseline; }
.summary .p { font-family: var(--mono); font-size: 15px; word-break: break-all; }
.summary .meta { color: var(--muted); margin-top: 4px; font-size: 13px; }
.summary .meta b { color: var(--ink); font-weight: 600; }
.summary .actions { margin-top: 10px; display: flex; gap: 8px; }
.notice { margin-top: 10px; padding: 8px 12px; border-radius: 6px; background: #eef6ff; color: #1d4f91; }
.notice.err { background: #fff0ef; color: #9b2620; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; margin-top: 14px; }
.card > h3 { margin: 0; padding: 9px 14px; font-size: 13px; text-transform: uppercase; letter-spacing: .6px;
  color: var(--muted); border-bottom: 1px solid var(--line); }
.card h4 { margin: 12px 14px 6px; font-size: 12px; color: var(--muted); font-weight: 600; }
table { border-collapse: collapse; width: calc(100% - 28px); margin: 0 14px 8px; font-size: 12.5px; }
td { padding: 3px 8px 3px 0; vertical-align: top; border-bottom: 1px solid #f2f3f6; }
td:first-child { font-family: var(--mono); color: #46506a; white-space: nowrap; width: 1%; padding-right: 18px; }
td:last-child { font-family: var(--mono); word-break: break-all; }
.body { margin: 0 14px 14px; }
.body .note { font-size: 12px; color: var(--muted); margin: 4px 0; }
pre.code { margin: 0; background: var(--code); border-radius: 6px; padding: 10px 12px; font: 12.5px/1.5 var(--mono);
  white-space: pre-wrap; word-break: break-word; max-height: 520px; overflow: auto; }
.k { color: #8a2b9e; } .s { color: #1f6f3c; } .n { color: #b25400; } .l { color: #2f5fc4; } .c { color: #8a93a6; }
img.img { max-width: 100%; max-height: 420px; min-width: 48px; min-height: 48px; object-fit: contain; border: 1px solid var(--line); border-radius: 6px;
  background: repeating-conic-gradient(#eee 0 25%, #fff 0 50%) 0 0 / 16px 16px; }
form.edit { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin-top: 14px;
  display: grid; grid-template-columns: 110px 1fr; gap: 8px 10px; }
form.edit h3 { grid-column: 1 / -1; margin: 0 0 4px; font-size: 14px; font-family: var(--mono); word-break: break-all; }
form.edit label { color: var(--muted); font-size: 12px; padding-top: 6px; }
form.edit input, form.edit textarea { font: 12.5px/1.45 var(--mono); padding: 6px 8px; border: 1px solid var(--line);
  border-radius: 6px; width: 100%; }
form.edit textarea { min-height: 90px; resize: vertical; }
form.edit .actions { grid-column: 2; display: flex; gap: 8px; }
"""

BODY = r"""
<header>
  <div class="brand">localrelay <span>inspector</span></div>
  <div id="tunnel">connecting…</div>
  <span id="agent" class="pill">…</span>
  <span id="live" class="pill">offline</span>
  <button id="clear" type="button" title="Forget every captured request">Clear</button>
</header>
<main>
  <section id="list-pane">
    <div class="filters">
      <input id="f-path" type="search" placeholder="Filter by path" autocomplete="off">
      <input id="f-status" type="search" placeholder="Status: 2xx, 404" autocomplete="off">
      <span id="count"></span>
    </div>
    <ul id="list"></ul>
    <p id="empty">No requests yet. They appear here as they happen.</p>
  </section>
  <section id="detail"><div id="view"><p class="placeholder">Select a request to see it here.</p></div></section>
</main>
"""

PAGE_HTML = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>localrelay inspector</title>\n"
    '<link rel="icon" href="data:,">\n'
    f"<style>{STYLE}</style>\n</head>\n<body>{BODY}<script>{SCRIPT}</script>\n</body>\n</html>\n"
)
