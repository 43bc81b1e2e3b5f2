// Switchyard dashboard: reads the admin feed (/events, server-sent events)
// and redraws the page on every snapshot. Plain JavaScript, no framework and
// no build step, because the file is compiled into the proxy binary.
//
// The feed is read with fetch() rather than EventSource so that a bearer
// token can be sent as a header when the admin listener requires one.
"use strict";

(function () {
  const STATES = ["active", "probation", "ejected", "unhealthy", "draining"];
  const STATE_LABEL = {
    active: "active",
    probation: "probation",
    ejected: "ejected",
    unhealthy: "unhealthy",
    draining: "draining",
  };
  const STATE_HINT = {
    active: "healthy, takes traffic",
    probation: "breaker half-open: one probe request",
    ejected: "breaker open: ejected by outlier detection",
    unhealthy: "failing active health checks",
    draining: "finishing requests, takes no new ones",
  };
  const TOKEN_KEY = "switchyard-admin-token";
  const SPARK_POINTS = 60;
  const sparks = new Map(); // route key -> recent req/s values

  const $ = (id) => document.getElementById(id);

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  }

  // ---- number formatting -------------------------------------------------
  function fmtRate(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0";
    if (v < 10) return v.toFixed(1);
    return Math.round(v).toLocaleString("en-US");
  }
  function fmtMs(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 10) return v.toFixed(1) + " ms";
    if (v < 1000) return Math.round(v) + " ms";
    return (v / 1000).toFixed(2) + " s";
  }
  function fmtPct(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0%";
    if (v < 0.001) return "<0.1%";
    return (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%";
  }
  function fmtBytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 || v >= 100 ? Math.round(v) : v.toFixed(1)) + " " + units[i];
  }
  function fmtUptime(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `up ${d}d ${h}h`;
    if (h) return `up ${h}h ${m}m`;
    if (m) return `up ${m}m ${s % 60}s`;
    return `up ${s}s`;
  }
  function fmtTime(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString("en-GB", { hour12: false });
  }
  function badge(state) {
    const s = state || "gone";
    const label = state ? (STATE_LABEL[s] || s) : "gone";
    const hint = state ? (STATE_HINT[s] || "") : "left the cluster";
    return `<span class="badge ${esc(s)}" title="${esc(hint)}">${esc(label)}</span>`;
  }
  function errClass(v) {
    return v !== null && v !== undefined && v >= 0.01 ? "num err-hi" : "num";
  }

  // ---- connection state ---------------------------------------------------
  function setConn(kind, text) {
    const el = $("conn");
    el.className = "pill " + { live: "pill-live", wait: "pill-wait", down: "pill-down" }[kind];
    el.dataset.conn = kind;
    el.textContent = text;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-form").hidden = true;
    connect();
  });

  let retryDelay = 500;

  async function connect() {
    setConn("wait", "connecting…");
    const headers = {};
    const t = token();
    if (t) headers["Authorization"] = "Bearer " + t;
    let resp;
    try {
      resp = await fetch("/events", { headers, cache: "no-store" });
    } catch (e) {
      return retry();
    }
    if (resp.status === 401) {
      setConn("down", "token required");
      $("token-form").hidden = false;
      return;
    }
    if (!resp.ok || !resp.body) return retry();
    retryDelay = 500;
    setConn("live", "live");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          handleEvent(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
        }
      }
    } catch (e) {
      // The stream broke (proxy restarted, network); reconnect below.
    }
    retry();
  }

  function retry() {
    setConn("down", "reconnecting…");
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 5000);
  }

  function handleEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (name !== "snapshot" || data.length === 0) return;
    try {
      render(JSON.parse(data.join("\n")));
    } catch (e) {
      console.error("bad snapshot", e);
    }
  }

  // ---- rendering ------------------------------------------------------------
  function render(s) {
    $("version").textContent = "v" + s.version;
    $("uptime").textContent = fmtUptime(s.uptime_s);
    $("window").textContent = s.window_s > 0 ? `last ${Math.round(s.window_s)} s` : "warming up";
    if (!s.ready) setConn("wait", "not ready");
    else if ($("conn").dataset.conn !== "live") setConn("live", "live");
    renderKpis(s);
    renderTopology(s);
    renderRoutes(s);
    renderChanges(s);
    renderClusters(s);
    document.body.dataset.snapshot = String(s.time_ms);
  }

  function renderKpis(s) {
    // Totals over every route and endpoint, also those the snapshot leaves
    // out (a proxy with thousands of routes sends the busiest).
    const t = s.summary;
    $("kpi-rps").textContent = fmtRate(t.rps);
    $("kpi-err").textContent = fmtPct(t.error_rate);
    $("kpi-err").className = "kpi-value" + (t.error_rate >= 0.01 ? " bad" : "");
    $("kpi-p99").textContent = t.p99_ms !== null ? fmtMs(t.p99_ms) : "–";
    $("kpi-eps").textContent = `${t.endpoints_available} / ${t.endpoints}`;
    $("kpi-eps").className = "kpi-value" + (t.endpoints_available < t.endpoints ? (t.endpoints_available === 0 ? " bad" : " warn") : "");
    $("kpi-changes").textContent = String(s.changes.length);
  }

  function renderRoutes(s) {
    const body = $("routes").querySelector("tbody");
    if (s.routes.length === 0) {
      const none = s.summary.routes === 0 ? "no HTTP routes" : `${s.summary.routes.toLocaleString()} routes, none has served a request yet`;
      body.innerHTML = `<tr><td colspan="8" class="empty">${none}</td></tr>`;
      return;
    }
    const hidden = s.summary.routes - s.summary.routes_shown;
    const more = hidden > 0
      ? `<tr><td colspan="8" class="empty" data-field="routes-hidden">${hidden.toLocaleString()} more routes not shown: idle, or less busy than these</td></tr>`
      : "";
    body.innerHTML = more + s.routes.map((r) => {
      const key = r.listener + "/" + r.name;
      const hist = sparks.get(key) || [];
      hist.push(r.rps);
      if (hist.length > SPARK_POINTS) hist.shift();
      sparks.set(key, hist);
      return `<tr data-route="${esc(r.name)}">
        <td><b>${esc(r.name)}</b></td>
        <td class="dim">${esc(r.listener)}</td>
        <td>${r.clusters.map(esc).join(", ")}</td>
        <td class="num" data-field="rps">${fmtRate(r.rps)}</td>
        <td class="num">${fmtMs(r.p50_ms)}</td>
        <td class="num">${fmtMs(r.p99_ms)}</td>
        <td class="${errClass(r.error_rate)}">${fmtPct(r.error_rate)}</td>
        <td>${sparkline(hist)}</td>
      </tr>`;
    }).join("");
  }

  function sparkline(values) {
    const w = 90, h = 22;
    if (values.length < 2) return `<svg class="spark" viewBox="0 0 ${w} ${h}"></svg>`;
    const max = Math.max(1, ...values);
    // Early on, spread the few points over part of the width so the trend
    // is readable before a full minute has been collected.
    const step = w / (Math.min(SPARK_POINTS, Math.max(values.length, 12)) - 1);
    const x0 = w - step * (values.length - 1);
    const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
    return `<svg class="spark" viewBox="0 0 ${w} ${h}"><polyline points="${pts.join(" ")}"/></svg>`;
  }

  function renderChanges(s) {
    const list = $("changes");
    if (s.changes.length === 0) {
      list.innerHTML = `<li class="empty">no endpoint has changed state since the proxy started</li>`;
      return;
    }
    list.innerHTML = s.changes.map((c) => `<li data-change="${esc(c.endpoint)}">
      <span class="when">${fmtTime(c.time_ms)}</span>
      <span class="what"><span class="mono who">${esc(c.cluster)} · ${esc(c.endpoint)}</span>
        <span class="move">${c.from ? badge(c.from) : '<span class="badge gone">new</span>'}
        <span class="arrow">→</span> ${badge(c.to)}</span></span>
    </li>`).join("");
  }

  // A cluster of tcp/udp listeners counts connections or sessions and bytes
  // instead of requests; one that HTTP routes use as well shows both.
  function clusterKind(s, c) {
    const tcp = /tcp/.test(c.protocol);
    const udp = /udp/.test(c.protocol);
    const l4 = tcp || udp;
    const http = !l4 || s.listeners.some((l) => l.protocol === "http" && l.clusters.includes(c.name));
    const unit = http ? "req" : tcp && !udp ? "conn" : udp && !tcp ? "session" : "conn+session";
    return { l4, http, tcp, udp, unit };
  }

  function renderClusters(s) {
    $("clusters").innerHTML = s.clusters.map((c) => {
      const chips = [];
      const { l4, http, tcp, udp, unit } = clusterKind(s, c);
      chips.push(`<span class="chip">balance <b>${esc(c.balance)}</b></span>`);
      // A cluster both tcp/udp listeners and HTTP routes use says so.
      chips.push(`<span class="chip">${esc(c.protocol)}${l4 && http ? " + http" : ""}</span>`);
      if (c.health_checked) chips.push(`<span class="chip">health checks</span>`);
      if (c.outlier_detection) chips.push(`<span class="chip">outlier detection</span>`);
      chips.push(`<span class="chip" title="retries the budget allows now">retry budget <b>${c.retry_budget_remaining.toFixed(0)}</b> left</span>`);
      for (const [d, rate] of Object.entries(c.decision_rates)) {
        chips.push(`<span class="chip hot">${esc(d.replace(/_/g, " "))} <b>${fmtRate(rate)}/s</b></span>`);
      }
      // p50/p99/errors per endpoint need the request path to record them;
      // without that the columns would only hold dashes.
      const rec = c.endpoints.some((e) => e.recorded);
      const bytesCell = (total, rate) => `<td class="num">${fmtBytes(total)}${rate ? ` <span class="dim">${fmtBytes(rate)}/s</span>` : ""}</td>`;
      const head = [
        "<th>Endpoint</th>", "<th>State</th>", `<th class="num">${unit}/s</th>`,
        `<th class="num">${http ? "in flight" : "open"}</th>`,
      ];
      // Connections and sessions have no latency of their own.
      const lat = rec && http;
      if (lat) head.push('<th class="num">p50</th>', '<th class="num">p99</th>');
      if (http) {
        head.push('<th class="num" title="peak-EWMA latency the balancer uses">latency EWMA</th>');
        if (rec) head.push('<th class="num">errors</th>');
        head.push('<th class="num">fails in a row</th>', '<th class="num">ejections</th>', '<th class="num">conns</th>');
      }
      if (l4) {
        if (tcp) head.push('<th class="num" title="tcp connections proxied">connections</th>');
        if (udp) head.push('<th class="num" title="udp sessions relayed">sessions</th>');
        head.push('<th class="num" title="bytes received from the endpoint">received</th>', '<th class="num" title="bytes sent to the endpoint">sent</th>');
      }
      const cells = (e) => {
        const out = [
          `<td class="mono">${esc(e.address)}</td>`, `<td>${badge(e.state)}</td>`,
          `<td class="num" data-field="rps">${fmtRate(e.rps)}</td>`, `<td class="num">${e.in_flight}</td>`,
        ];
        if (lat) out.push(`<td class="num">${fmtMs(e.p50_ms)}</td>`, `<td class="num">${fmtMs(e.p99_ms)}</td>`);
        if (http) {
          out.push(`<td class="num dim">${fmtMs(e.latency_ewma_ms)}</td>`);
          if (rec) out.push(`<td class="${errClass(e.error_rate)}">${fmtPct(e.error_rate)}</td>`);
          out.push(`<td class="num">${e.consecutive_failures}</td>`, `<td class="num">${e.ejections}</td>`, `<td class="num">${e.connections_open}</td>`);
        }
        if (l4) {
          if (tcp) out.push(`<td class="num" data-field="connections">${e.tcp_connections ?? "–"}</td>`);
          if (udp) out.push(`<td class="num" data-field="sessions">${e.udp_sessions ?? "–"}</td>`);
          out.push(bytesCell(e.bytes_rx, e.rx_bytes_per_s), bytesCell(e.bytes_tx, e.tx_bytes_per_s));
        }
        return out.join("");
      };
      const load = c.max_requests ? Math.min(100, (100 * c.active_requests) / c.max_requests) : 0;
      const hidden = c.endpoints_total - c.endpoints.length;
      const states = Object.entries(c.endpoint_states).map(([st, n]) => `${n.toLocaleString()} ${st}`).join(", ");
      const more = hidden > 0
        ? `<tr><td colspan="${head.length}" class="empty" data-field="endpoints-hidden">${hidden.toLocaleString()} more endpoints not shown (${states}); these are the ones not active, then the busiest</td></tr>`
        : "";
      const rows = c.endpoints.length === 0
        ? `<tr><td colspan="${head.length}" class="empty">no endpoints discovered</td></tr>`
        : more + c.endpoints.map((e) => `<tr data-endpoint="${esc(e.address)}" data-cluster="${esc(c.name)}" data-state="${esc(e.state)}">
          ${cells(e)}
        </tr>`).join("");
      const activity = http
        ? `${fmtRate(c.rps)} attempts/s · ${c.active_requests}${c.max_requests ? " / " + c.max_requests : ""} active`
        : `${fmtRate(c.rps)} ${unit}s/s · ${c.endpoints.reduce((a, e) => a + e.in_flight, 0)} open`;
      return `<section class="card cluster" data-cluster="${esc(c.name)}">
        <div class="cluster-head">
          <div class="title"><h3>cluster ${esc(c.name)}</h3>
            <span class="hint">${activity}
            ${http ? `<span class="meter" title="active requests against the cluster limit"><span style="width:${load.toFixed(1)}%"></span></span>` : ""}</span>
          </div>
          <div class="chips">${chips.join("")}</div>
        </div>
        <table class="table endpoints">
          <thead><tr>${head.join("")}</tr></thead>
          <tbody>${rows}</tbody>
        </table>
      </section>`;
    }).join("") + (s.summary.clusters > s.clusters.length
      ? `<p class="empty" data-field="clusters-hidden">${(s.summary.clusters - s.clusters.length).toLocaleString()} more clusters not shown: all their endpoints in rotation, and less busy than these</p>`
      : "");
  }

  // ---- topology -----------------------------------------------------------
  function renderTopology(s) {
    const cols = [[], [], [], []];
    const edges = [];
    const byId = new Map();
    const add = (col, id, label, sub, state) => {
      if (byId.has(id)) return;
      const n = { col, id, label, sub, state };
      byId.set(id, n);
      cols[col].push(n);
    };
    const clusterById = new Map(s.clusters.map((c) => [c.name, c]));
    const routeByKey = new Map(s.routes.map((r) => [r.listener + "/" + r.name, r]));
    for (const l of s.listeners) {
      add(0, "l:" + l.name, l.name, `${l.protocol} ${l.address}`, null);
      if (l.protocol !== "http") {
        // tcp/udp listeners have no routes: a pass-through node keeps the
        // columns readable.
        const id = "r:" + l.name + "/*";
        add(1, id, "all " + (l.protocol === "udp" ? "datagrams" : "connections"), `${l.protocol} pass-through`, null);
        edges.push(["l:" + l.name, id, 0, true]);
        for (const c of l.clusters) edges.push([id, "c:" + c, 0, true]);
      }
      if (l.routes_total > l.routes.length) {
        const id = "r:" + l.name + "/+";
        add(1, id, `+${(l.routes_total - l.routes.length).toLocaleString()} routes`, "idle or less busy", null);
        edges.push(["l:" + l.name, id, 0, true]);
      }
      for (const rn of l.routes) {
        const r = routeByKey.get(l.name + "/" + rn);
        add(1, "r:" + l.name + "/" + rn, rn, r ? `${fmtRate(r.rps)} req/s` : "", null);
        edges.push(["l:" + l.name, "r:" + l.name + "/" + rn, r ? r.rps : 0, true]);
        for (const c of r ? r.clusters : []) edges.push(["r:" + l.name + "/" + rn, "c:" + c, r.rps, true]);
      }
    }
    for (const c of s.clusters) {
      const { unit } = clusterKind(s, c);
      add(2, "c:" + c.name, c.name, `${c.endpoints_available}/${c.endpoints_total} up · ${c.balance}`, null);
      for (const e of c.endpoints) {
        const id = "e:" + c.name + "/" + e.address;
        add(3, id, e.address, `${e.state} · ${fmtRate(e.rps)} ${unit}/s`, e.state);
        edges.push(["c:" + c.name, id, e.rps, e.available]);
      }
    }
    const W = 1000, colX = [20, 270, 520, 770], nodeW = 210, nodeH = 40, gap = 14, top = 30;
    const rows = Math.max(1, ...cols.map((c) => c.length));
    const H = top + rows * (nodeH + gap) + 6;
    for (const col of cols) {
      const offset = top + ((rows - col.length) * (nodeH + gap)) / 2;
      col.forEach((n, i) => { n.x = colX[n.col]; n.y = offset + i * (nodeH + gap); });
    }
    const maxRate = Math.max(1, ...edges.map((e) => e[2]));
    const paths = edges.map(([from, to, rate, up]) => {
      const a = byId.get(from), b = byId.get(to);
      if (!a || !b) return "";
      const x1 = a.x + nodeW, y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2, mx = (x1 + x2) / 2;
      const w = 1.2 + 4 * Math.sqrt(rate / maxRate);
      return `<path class="edge${up ? "" : " down"}" stroke-width="${w.toFixed(1)}" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}"/>`;
    }).join("");
    const titles = ["listeners", "routes", "clusters", "endpoints"]
      .map((t, i) => `<text class="col-title" x="${colX[i]}" y="16">${t}</text>`).join("");
    const nodes = [...byId.values()].map((n) => {
      const color = n.state ? `var(--${n.state})` : ["#2563eb", "#7c3aed", "#0891b2"][n.col];
      const fill = n.state ? "#fff" : "#f8fafc";
      return `<g class="node" data-node="${esc(n.id)}"${n.state ? ` data-state="${esc(n.state)}"` : ""}>
        <rect x="${n.x}" y="${n.y}" width="${nodeW}" height="${nodeH}" rx="7" fill="${fill}" stroke="${color}"/>
        <rect x="${n.x}" y="${n.y}" width="5" height="${nodeH}" rx="2" fill="${color}"/>
        <text x="${n.x + 14}" y="${n.y + 17}">${esc(trim(n.label, 28))}</text>
        <text class="sub" x="${n.x + 14}" y="${n.y + 31}">${esc(trim(n.sub, 34))}</text>
      </g>`;
    }).join("");
    $("topology").innerHTML = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="topology">${titles}${paths}${nodes}</svg>`;
    if (!$("legend").childElementCount) {
      $("legend").innerHTML = STATES.map((st) => `<span><i style="background:var(--${st})"></i>${st} — ${STATE_HINT[st]}</span>`).join("");
    }
  }

  function trim(s, n) {
    s = String(s);
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  connect();
})();
