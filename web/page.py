"""The live status page (``GET /``): one HTML document, its style and script inline.

It reads ``GET /api/v1/mcp/servers`` once, then follows ``GET /api/v1/mcp/events/stream``
and updates in place, without reloading. Nothing is fetched from elsewhere. With a token, open
it as ``/#token=<token>``: the part after ``#`` never leaves the browser, and the script sends
it as a bearer token.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trio-mcp fleet</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --warn: #b35900; --bad: #cf222e; --dim: #6e7781; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  #live { font-size: .85rem; color: var(--dim); }
  #live.on::before { content: "\\25cf "; color: var(--ok); }
  #live.off::before { content: "\\25cf "; color: var(--bad); }
  table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #8884; vertical-align: top; }
  th { font-weight: 600; font-size: .8rem; text-transform: uppercase; color: var(--dim); }
  .status { font-weight: 600; }
  .healthy, .recovered { color: var(--ok); }
  .degraded, .unknown { color: var(--warn); }
  .unreachable { color: var(--bad); }
  .error { max-width: 28rem; overflow-wrap: anywhere; }
  .cat { color: var(--dim); font-size: .8rem; }
  #events { font: 12px/1.5 ui-monospace, monospace; list-style: none; padding: 0; }
  #events li { border-bottom: 1px solid #8882; padding: .1rem 0; }
</style>
</head>
<body>
<h1>trio-mcp fleet</h1>
<div id="live" class="off">connecting</div>
<table>
  <thead><tr>
    <th>server</th><th>status</th><th>connection</th><th>last error</th><th>retry</th>
    <th>protocol</th><th>session</th><th>in flight</th>
  </tr></thead>
  <tbody id="servers"></tbody>
</table>
<h2>Newest events</h2>
<ul id="events"></ul>
<script>
"use strict";
const API = "/api/v1/mcp";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const servers = new Map();
let lastEventId = null;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function retryText(server) {
  if (server.next_retry_at == null || server.retry_window_open) return "";
  const left = Math.max(0, server.next_retry_at - Date.now() / 1000);
  return "in " + left.toFixed(0) + " s";
}

function render(server) {
  let row = document.getElementById("server-" + server.name);
  if (!row) {
    row = document.createElement("tr");
    row.id = "server-" + server.name;
    row.dataset.server = server.name;
    document.getElementById("servers").appendChild(row);
  }
  const snap = server.capability_snapshot;
  const error = cell(server.last_error, "error");
  if (server.last_error_category) {
    const cat = document.createElement("div");
    cat.className = "cat";
    cat.textContent = server.last_error_category;
    error.appendChild(cat);
  }
  row.replaceChildren(
    cell(server.name),
    cell(server.status, "status " + server.status),
    cell(server.connection),
    error,
    cell(retryText(server), "retry"),
    cell(snap ? snap.era + " " + snap.protocol_version : ""),
    cell(server.adapter_session.freshness),
    cell(server.in_flight + " / " + server.max_concurrency),
  );
  row.dataset.status = server.status;
}

function note(kind, event) {
  const list = document.getElementById("events");
  const item = document.createElement("li");
  const when = new Date(event.timestamp * 1000).toLocaleTimeString();
  item.textContent = kind === "connection"
    ? when + "  " + event.server + ": " + event.from + " \\u2192 " + event.to + "  (" + event.reason + ")"
    : when + "  " + event.server + ": " + event.kind + " " + event.method + " " + (event.target || "")
      + (event.error ? "  " + event.error : "");
  list.prepend(item);
  while (list.children.length > 30) list.lastChild.remove();
}

async function loadServers() {
  const response = await fetch(API + "/servers", { headers });
  if (!response.ok) throw new Error("GET /servers: " + response.status);
  const body = await response.json();
  const names = new Set(body.servers.map((s) => s.name));
  for (const row of Array.from(document.getElementById("servers").children)) {
    if (!names.has(row.dataset.server)) row.remove();
  }
  servers.clear();
  for (const server of body.servers) {
    servers.set(server.name, server);
    render(server);
  }
}

function handle(kind, data) {
  if (kind === "server") {
    servers.set(data.name, data);
    render(data);
  } else if (kind === "connection" || kind === "invocation") {
    note(kind, data);
  } else if (kind === "dropped") {
    return loadServers();
  }
}

async function follow() {
  const live = document.getElementById("live");
  const streamHeaders = Object.assign({ Accept: "text/event-stream" }, headers);
  if (lastEventId !== null) streamHeaders["Last-Event-ID"] = lastEventId;
  const response = await fetch(API + "/events/stream", { headers: streamHeaders });
  if (!response.ok || !response.body) throw new Error("event stream: " + response.status);
  live.className = "on";
  live.textContent = "live";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\\n\\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message", data = "", id = null;
      for (const line of block.split("\\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
        else if (line.startsWith("id: ")) id = line.slice(4);
      }
      if (id !== null) lastEventId = id;
      if (data) await handle(kind, JSON.parse(data));
    }
  }
}

async function main() {
  const live = document.getElementById("live");
  for (;;) {
    try {
      await loadServers();
      await follow();
    } catch (error) {
      live.className = "off";
      live.textContent = "reconnecting (" + error.message + ")";
    }
    live.className = "off";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

setInterval(() => {
  for (const server of servers.values()) {
    const row = document.getElementById("server-" + server.name);
    if (row) row.querySelector(".retry").textContent = retryText(server);
  }
}, 1000);
main();
</script>
</body>
</html>
"""
