// Streams tab extras for Locust's web UI (served by loadtests/webui.py).
//
// Locust's extension points give the tab its table; this adds what a table
// cannot show, above it: the transports' parity (the last finished run's, or
// "after the run"), the harness banner (CPU, event-loop lag, "saturated") and
// one small chart per transport (gap p99 and staleness p99 per time bin).
// The panel lives next to the React-rendered table and is removed when
// another tab is shown; data comes from ./streams/live.json.
(function () {
  "use strict";
  var PANEL_ID = "stream-harness-panel";
  var MARKER = 'th[data-sortkey="stalenessP99"]'; // a column only our table has
  var POLL_MS = 2000;
  var MAX_POINTS = 300;
  var COLORS = { gap: "#1f6fd1", staleness: "#e07b00" };
  var VERDICT_COLORS = { buffered: "#c62828", clean: "#2e7d32", inconclusive: "#ef6c00" };
  var last = null;

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function fmt(value, digits, unit) {
    return value === null || value === undefined ? "–" : value.toFixed(digits) + (unit || "");
  }

  function streamsTable() {
    var th = document.querySelector(MARKER);
    return th ? th.closest(".MuiTableContainer-root") || th.closest("table") : null;
  }

  function sync() {
    var container = streamsTable();
    var panel = document.getElementById(PANEL_ID);
    if (!container) {
      if (panel) panel.remove();
      return;
    }
    if (!panel) {
      panel = document.createElement("div");
      panel.id = PANEL_ID;
      panel.style.cssText = "margin:0 0 16px 0;font-family:Roboto,Helvetica,Arial,sans-serif";
      render(panel);
    }
    if (panel.nextElementSibling !== container) {
      container.parentNode.insertBefore(panel, container);
    }
    colorVerdicts(container);
    styleReasons(container);
  }

  function styleReasons(container) {
    var heads = container.querySelectorAll("th");
    var index = -1;
    for (var i = 0; i < heads.length; i++) if (heads[i].dataset.sortkey === "reason") index = i;
    if (index < 0) return;
    var rows = container.querySelectorAll("tbody tr");
    for (var r = 0; r < rows.length; r++) {
      var cell = rows[r].children[index];
      if (cell && cell.style.minWidth !== "260px") {
        cell.style.minWidth = "260px";
        cell.style.fontSize = "12px";
        cell.style.lineHeight = "1.35";
      }
    }
  }

  function colorVerdicts(container) {
    var cells = container.querySelectorAll("td");
    for (var i = 0; i < cells.length; i++) {
      var text = cells[i].textContent;
      if (cells[i].dataset.colored === text) continue;
      cells[i].dataset.colored = text;
      var color = VERDICT_COLORS[text];
      cells[i].style.color = color || "";
      cells[i].style.fontWeight = color ? "700" : "";
    }
  }

  var PARITY_COLORS = { ndjson_worse: "#c62828", ndjson_better: "#2e7d32", parity: "#2e7d32", inconclusive: "#ef6c00" };

  function parityLine(p) {
    var text = p ? p.line : "Parity (NDJSON vs Socket.io): after the run";
    var color = (p && PARITY_COLORS[p.verdict]) || "#37474f";
    return '<div id="stream-harness-parity" data-verdict="' + esc((p && p.verdict) || "") +
      '" style="padding:6px 2px 8px 2px;font-size:14px;font-weight:700;color:' + color + '">' +
      esc(text) + "</div>";
  }

  function banner(h) {
    var div = '<div id="stream-harness-banner" data-saturated="' + (h && h.saturated ? "true" : "false") + '" ';
    if (!h || !h.reported) {
      return div + 'style="padding:8px 12px;border-radius:4px;background:#eceff1;color:#37474f">' +
        "Harness self-check: no sample yet (starts with the run).</div>";
    }
    var numbers = "load generator CPU now " + fmt(h.cpu_percent_now, 0, "%") +
      " (max " + fmt(h.cpu_percent_max, 0, "%") + "), event-loop lag p99 " +
      fmt(h.loop_lag_ms_p99, 1, " ms") + " (last ~10 s: " + fmt(h.loop_lag_ms_recent_p99, 1, " ms") + ")";
    if (h.saturated) {
      return div + 'style="padding:10px 14px;border-radius:4px;background:#c62828;color:#fff">' +
        '<strong>⚠ HARNESS SATURATED: these stream numbers are not to be trusted.</strong> ' +
        esc(numbers) + ". " + esc((h.reasons || []).join("; ")) + "</div>";
    }
    return div + 'style="padding:8px 12px;border-radius:4px;background:#e8f5e9;color:#1b5e20">' +
      "Harness OK: " + esc(numbers) + ".</div>";
  }

  function verdictOf(rows, transport) {
    var order = ["buffered", "inconclusive", "clean"];
    var found = null;
    rows.forEach(function (row) {
      if (row.transport !== transport) return;
      var v = row.buffering.verdict;
      if (found === null || order.indexOf(v) < order.indexOf(found)) found = v;
    });
    return found;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= value) return steps[i] * p;
    return 10 * p;
  }

  function path(points, key, x, y) {
    var d = "", pen = false;
    points.forEach(function (p, i) {
      var v = p[key];
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
      pen = true;
    });
    return d;
  }

  function chart(transport, points, yMax, verdict, binS) {
    var W = 460, H = 170, L = 44, R = 10, T = 26, B = 22;
    var n = Math.max(points.length, 2);
    var x = function (i) { return L + (W - L - R) * i / (n - 1); };
    var y = function (v) { return T + (H - T - B) * (1 - Math.min(v, yMax) / yMax); };
    var svg = '<svg data-transport="' + esc(transport) + '" width="' + W + '" height="' + H +
      '" style="background:#fff;border:1px solid #e0e0e0;border-radius:4px">';
    svg += '<text x="' + L + '" y="16" font-size="13" font-weight="700" fill="#333">' + esc(transport) +
      "</text>";
    if (verdict) {
      svg += '<text x="' + (W - R) + '" y="16" font-size="13" font-weight="700" text-anchor="end" fill="' +
        (VERDICT_COLORS[verdict] || "#333") + '">' + esc(verdict) + "</text>";
    }
    [0, 0.5, 1].forEach(function (f) {
      var yy = y(yMax * f);
      svg += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + yy + '" y2="' + yy + '" stroke="#eee"/>';
      svg += '<text x="' + (L - 4) + '" y="' + (yy + 4) + '" font-size="10" text-anchor="end" fill="#666">' +
        (yMax * f).toFixed(yMax < 10 ? 1 : 0) + "</text>";
    });
    svg += '<text x="' + L + '" y="' + (H - 6) + '" font-size="10" fill="#666">−' +
      Math.round((points.length) * binS) + " s</text>";
    svg += '<text x="' + (W - R) + '" y="' + (H - 6) + '" font-size="10" text-anchor="end" fill="#666">now</text>';
    svg += '<text x="' + ((L + W - R) / 2) + '" y="' + (H - 6) + '" font-size="10" text-anchor="middle" fill="#666">' +
      "p99 per " + binS + " s bin, ms</text>";
    svg += '<path class="gap" d="' + path(points, "gap_p99_ms", x, y) + '" fill="none" stroke="' +
      COLORS.gap + '" stroke-width="1.6"/>';
    svg += '<path class="staleness" d="' + path(points, "staleness_p99_ms", x, y) + '" fill="none" stroke="' +
      COLORS.staleness + '" stroke-width="1.6"/>';
    svg += '<text x="' + (L + 70) + '" y="16" font-size="11" fill="' + COLORS.gap + '">— gap p99</text>';
    svg += '<text x="' + (L + 150) + '" y="16" font-size="11" fill="' + COLORS.staleness +
      '">— staleness p99</text>';
    return svg + "</svg>";
  }

  function charts(data) {
    var names = Object.keys(data.series || {}).sort();
    if (!names.length) {
      return '<div style="color:#666;margin-top:8px">Charts appear once chunks arrive.</div>';
    }
    var yMax = 0, cut = {};
    names.forEach(function (t) {
      cut[t] = data.series[t].slice(-MAX_POINTS);
      cut[t].forEach(function (p) {
        [p.gap_p99_ms, p.staleness_p99_ms].forEach(function (v) { if (v !== null && v > yMax) yMax = v; });
      });
    });
    yMax = niceMax(yMax);
    return '<div id="stream-harness-charts" style="display:flex;flex-wrap:wrap;margin-top:10px">' +
      names.map(function (t) {
        return '<div style="width:472px;margin:0 12px 8px 0">' +
          chart(t, cut[t], yMax, verdictOf(data.rows, t), data.bin_s) + calibration(data, t) +
          reasons(data.rows, t) + "</div>";
      }).join("") + "</div>";
  }

  // One line per transport read by browsers and protocol clients: analysis/calibration.py, live.
  function calibration(data, transport) {
    var found = (data.calibration || {})[transport];
    if (!found) return "";
    return '<div class="stream-harness-calibration" data-transport="' + esc(transport) + '" data-agree="' +
      (found.agree ? "true" : "false") + '" style="font-size:12px;margin:4px 0 2px 2px;font-weight:700;color:' +
      (found.agree ? VERDICT_COLORS.clean : VERDICT_COLORS.inconclusive) + '">' + esc(found.line) + "</div>";
  }

  function reasons(rows, transport) {
    var html = "";
    rows.forEach(function (row) {
      if (row.transport !== transport) return;
      var v = row.buffering.verdict;
      html += '<div class="stream-harness-reasons" data-transport="' + esc(transport) +
        '" data-endpoint="' + esc(row.endpoint) + '" data-client="' + esc(row.client || "protocol") +
        '" style="font-size:12px;color:#333;margin:2px 0 6px 2px">' + "<strong>" + esc(row.endpoint) +
        (row.client === "browser" ? " (browser)" : "") + ': <span style="color:' + (VERDICT_COLORS[v] || "#333") + '">' +
        esc(v) + "</span></strong><ul style=\"margin:2px 0 0 0;padding-left:18px\">" +
        row.buffering.reasons.map(function (r) { return "<li>" + esc(r) + "</li>"; }).join("") +
        "</ul></div>";
    });
    return html;
  }

  function render(panel) {
    if (!last) {
      panel.innerHTML = parityLine(null) + banner(null);
      return;
    }
    var since = new Date(last.reset_at * 1000).toLocaleTimeString();
    var processes = Object.keys((last.harness && last.harness.processes) || {}).length;
    panel.innerHTML = parityLine(last.parity) + banner(last.harness) + charts(last) +
      '<div style="font-size:12px;color:#666">Times in ms; totals since ' + esc(since) +
      " (run start or Reset), from " + processes + " load process" + (processes === 1 ? "" : "es") +
      ". Verdicts: the post-run detector (analysis/buffering.py) applied live.</div>";
  }

  function poll() {
    fetch("./streams/live.json", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        last = data;
        var panel = document.getElementById(PANEL_ID);
        if (panel) render(panel);
      })
      .catch(function () { /* the UI may be restarting; try again next tick */ });
  }

  var scheduled = false;
  new MutationObserver(function () {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(function () { scheduled = false; sync(); });
  }).observe(document.body, { childList: true, characterData: true, subtree: true });

  poll();
  setInterval(poll, POLL_MS);
  setInterval(sync, 1000);
})();
