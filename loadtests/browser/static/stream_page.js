// A browser stream user's page (loadtests/browser): the product's client shape, timed.
//
// The page lives at the backend's own origin (the harness serves this document
// there through Playwright, so nothing is cross-origin for the product's
// requests) and takes its orders from the load process's bridge
// (window.STREAM_HARNESS.bridge, on loopback): one stream at a time.
//
// - NDJSON: fetch() + body.getReader() + TextDecoder (stream: true) + split on
//   "\n" + JSON.parse per line, with the auth headers, as the product's parser;
// - Socket.io: the npm socket.io-client on the namespace with auth.token, emit
//   with an ack, listen on the events the ack names.
//
// Every read (NDJSON) or message (Socket.io) is stamped with performance.now()
// on arrival, and again at the next animation frame ("painted"), when the
// chunks' text reaches the page.  Stamps go to the bridge in
// batches (every batchMs, and when a stream ends), with the page's own
// event-loop lag, so the load process can tell a page that cannot keep up.
// The page reports facts (what arrived, when, what failed); the load process
// applies the same rules as its protocol clients to them.
(function () {
  "use strict";
  var CFG = window.STREAM_HARNESS;
  var BASE = CFG.bridge + "/p/" + encodeURIComponent(CFG.page);
  var KIND = CFG.kinds; // NDJSON event name -> code (stream_harness.contract.kinds)
  var CHUNK = KIND.chunk, END = KIND.end, ERROR = KIND.error, OTHER = KIND.other;
  var MAX_SEQ = 2147483647;
  var view = document.getElementById("out"); // where the answer is rendered
  var text = null; // the current stream's text node

  // ------------------------------------------------------------------ batches
  var lags = []; // page event-loop lag samples (ms) since the last batch
  var cur = null; // the stream being run: {id, startedAt, k, t, r, s, e, l, p}

  function newBatch(st) {
    st.k = []; st.t = []; st.r = []; st.s = []; st.e = []; st.l = []; st.p = [];
  }

  function post(body) {
    return fetch(BASE + "/stamps", {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "text/plain" }, cache: "no-store",
    }).catch(function () { /* the load process is stopping; nothing to keep */ });
  }

  function flush(done) {
    var body = { lag: lags };
    lags = [];
    if (cur) {
      body.stream = cur.id;
      body.started_at = cur.startedAt;
      body.k = cur.k; body.t = cur.t; body.r = cur.r; body.s = cur.s; body.e = cur.e; body.l = cur.l; body.p = cur.p;
      newBatch(cur);
      if (done) body.done = done;
    }
    return post(body);
  }

  // While a stream runs, a batch every batchMs; between streams only the lag samples, ten times rarer.
  var idleTicks = 0;
  setInterval(function () {
    if (cur) { flush(null); return; }
    if (++idleTicks >= 10 && lags.length) { idleTicks = 0; flush(null); }
  }, CFG.batchMs);

  // The page's event-loop lag: how late a timer fires (the load process's self-check does the same).
  var lastTick = performance.now();
  setInterval(function () {
    var now = performance.now();
    lags.push(Math.max(0, now - lastTick - CFG.lagMs));
    lastTick = now;
  }, CFG.lagMs);

  // ------------------------------------------------------------------ stamps
  var unpainted = []; // arrival times of reads waiting for the next frame
  var framePending = false;

  function painted() {
    var now = performance.now();
    if (cur) for (var i = 0; i < unpainted.length; i++) cur.p.push(now - unpainted[i]);
    unpainted = [];
    framePending = false;
    if (text && text.data !== shown) text.data = shown;
  }

  function stampRead(now) {
    unpainted.push(now);
    if (!framePending) { framePending = true; requestAnimationFrame(painted); }
  }

  function nextFrame() {
    return new Promise(function (resolve) { requestAnimationFrame(function () { resolve(); }); });
  }

  function add(st, kind, t, read, seq, ts, listener) {
    st.k.push(kind); st.t.push(t); st.r.push(read); st.s.push(seq); st.e.push(ts); st.l.push(listener);
  }

  // The answer is rendered as an app renders streamed text: state updated per chunk, the DOM once per
  // frame (from the same animation-frame callback that stamps "painted").  Only its tail is kept on
  // screen, so a frame costs the same at chunk 10 and at chunk 10,000.
  var shown = "";
  function render(piece) {
    if (typeof piece === "string" && piece) {
      shown += piece;
      if (shown.length > 4000) shown = shown.slice(-2000);
    }
  }

  function protocolOf(url) {
    var entries = performance.getEntriesByType("resource");
    var found = "";
    for (var i = entries.length - 1; i >= 0; i--) {
      if (entries[i].name.indexOf(url) >= 0 && entries[i].nextHopProtocol) { found = entries[i].nextHopProtocol; break; }
    }
    performance.clearResourceTimings();
    return found;
  }

  // ------------------------------------------------------------------ NDJSON
  function runNdjson(cmd) {
    var st = { id: cmd.stream };
    newBatch(st);
    var facts = { http_status: 0, reads: 0, n_chunks: 0, malformed: 0, ended: false, cancelled: false };
    var ctrl = new AbortController();
    var why = null; // [error kind, detail] of our own abort
    var timers = [];
    var abortedAt = null;
    function abortWith(kind, detail) {
      if (!why) { why = [kind, detail]; abortedAt = performance.now() - t0; }
      ctrl.abort();
    }
    function arm(ms, kind, detail) { timers.push(setTimeout(function () { abortWith(kind, detail); }, ms)); }
    var firstChunkTimer = setTimeout(function () {
      abortWith("timeout", "no chunk within first_chunk_timeout=" + cmd.first_chunk_timeout_s + " s");
    }, cmd.first_chunk_timeout_s * 1000);
    arm(cmd.stream_timeout_s * 1000, "timeout", "stream not done within stream_timeout=" + cmd.stream_timeout_s + " s");

    var t0 = performance.now();
    st.startedAt = (performance.timeOrigin + t0) / 1000;
    cur = st;
    var last = 0;

    function line(text, t, read) {
      if (!text.trim()) return;
      var obj;
      try { obj = JSON.parse(text); } catch (e) { facts.malformed++; return; }
      if (obj === null || typeof obj !== "object" || Array.isArray(obj)) { facts.malformed++; return; }
      var kind = typeof obj.event === "string" && KIND.hasOwnProperty(obj.event) ? KIND[obj.event] : OTHER;
      var seq = Number.isInteger(obj.seq) && obj.seq >= 0 && obj.seq <= MAX_SEQ ? obj.seq : -1;
      add(st, kind, t, read, seq, typeof obj.ts === "number" ? obj.ts : null, 0);
      if (kind === CHUNK) {
        facts.n_chunks++;
        if (facts.n_chunks === 1) clearTimeout(firstChunkTimer);
        render(obj.data && obj.data.text);
      } else if (kind === END && !facts.ended) {
        facts.ended = true;
        facts.end_ms = t;
        var reason = obj.data && obj.data.reason;
        if (typeof reason === "string" && reason.toLowerCase().indexOf("cancel") === 0) facts.cancelled = true;
        arm(cmd.end_grace_s * 1000, "disconnect", "body not terminated within " + cmd.end_grace_s + " s after end");
      } else if (kind === ERROR && !facts.error_detail) {
        var d = obj.data;
        facts.error_detail = d && typeof d === "object"
          ? ((d.error_type || "error") + ": " + (d.message || "")).slice(0, 200) : "error event";
      }
    }

    return fetch(cmd.url, {
      method: "POST", headers: cmd.headers, body: cmd.body, signal: ctrl.signal, cache: "no-store",
    }).then(function (res) {
      var th = performance.now();
      facts.headers_ms = th - t0;
      last = th - t0;
      facts.http_status = res.status;
      facts.content_encoding = res.headers.get("content-encoding") || "";
      facts.request_id = res.headers.get(cmd.request_id_header);
      var promised = res.headers.get(cmd.promised_header);
      facts.expected_chunks = promised && /^\d+$/.test(promised.trim()) ? parseInt(promised, 10) : -1;
      if (!res.ok) {
        return res.text().then(function (text) { facts.error_body = text.slice(0, 200); });
      }
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (r) {
          var now = performance.now();
          if (r.done) return;
          var read = facts.reads++;
          var t = now - t0;
          last = t;
          stampRead(now);
          buffer += decoder.decode(r.value, { stream: true });
          var parts = buffer.split("\n");
          buffer = parts.pop();
          for (var i = 0; i < parts.length; i++) line(parts[i], t, read);
          return pump();
        });
      }
      return pump().then(function () {
        buffer += decoder.decode();
        if (buffer) line(buffer, last, Math.max(facts.reads - 1, 0));
      });
    }).catch(function (err) {
      facts.failure = why || [facts.headers_ms === undefined ? "connect" : "disconnect",
        (facts.headers_ms === undefined ? "fetch failed: " : "read failed: ") + String(err).slice(0, 160)];
    }).then(function () {
      clearTimeout(firstChunkTimer);
      timers.forEach(clearTimeout);
      facts.last_ms = abortedAt !== null ? abortedAt : last;
      return facts;
    });
  }

  // ------------------------------------------------------------------ Socket.io
  var socket = null;

  function connect(cmd) {
    if (socket && socket.connected) return Promise.resolve();
    if (socket) { socket.close(); socket = null; }
    return new Promise(function (resolve, reject) {
      var s = io(cmd.origin + cmd.namespace, {
        path: cmd.path, auth: cmd.token ? { token: cmd.token } : undefined, transports: ["websocket"],
        reconnection: false, timeout: cmd.connect_timeout_s * 1000,
      });
      s.once("connect", function () { socket = s; resolve(); });
      s.once("connect_error", function (err) { s.close(); reject(err); });
    });
  }

  function runSocketio(cmd) {
    var st = { id: cmd.stream };
    newBatch(st);
    var facts = { http_status: 0, reads: 0, n_chunks: 0, malformed: 0, ended: false, cancelled: false };
    var t0 = performance.now();
    st.startedAt = (performance.timeOrigin + t0) / 1000;
    cur = st;
    return connect(cmd).then(function () {
      return new Promise(function (resolve) {
        var t1 = performance.now();
        st.startedAt = (performance.timeOrigin + t1) / 1000;
        var names = [], counts = [], open = 0, finished = false, timers = [];
        var sock = socket;
        function finish(failure) {
          if (finished) return;
          finished = true;
          if (failure && !facts.failure) facts.failure = failure;
          facts.last_ms = performance.now() - t1;
          timers.forEach(clearTimeout);
          clearTimeout(firstChunkTimer);
          names.forEach(function (name) { sock.off(name); });
          sock.off("disconnect", onDisconnect);
          facts.listeners = names;
          resolve(facts);
        }
        function onDisconnect(reason) {
          finish(["disconnect", "connection lost: " + reason + " after " + facts.n_chunks + " chunks"]);
        }
        sock.on("disconnect", onDisconnect);
        var ackTimer = setTimeout(function () {
          finish(["ack", "no ack within ack_timeout=" + cmd.first_chunk_timeout_s + " s"]);
        }, cmd.first_chunk_timeout_s * 1000);
        var firstChunkTimer = setTimeout(function () {
          finish(["timeout", "no chunk within first_chunk_timeout=" + cmd.first_chunk_timeout_s + " s"]);
        }, cmd.first_chunk_timeout_s * 1000);
        timers.push(ackTimer, setTimeout(function () {
          finish(["timeout", "stream not done within stream_timeout=" + cmd.stream_timeout_s + " s (" +
            facts.n_chunks + " chunks)"]);
        }, cmd.stream_timeout_s * 1000));

        function onMessage(li, msg) {
          var now = performance.now();
          if (finished) return;
          var t = now - t1;
          var read = facts.reads++;
          stampRead(now);
          var seq = counts[li]++;
          if (typeof msg === "string") {
            add(st, CHUNK, t, read, seq, null, li);
            facts.n_chunks++;
            if (facts.n_chunks === 1) clearTimeout(firstChunkTimer);
            render(msg);
            return;
          }
          if (msg === null || typeof msg !== "object" || Array.isArray(msg)) { add(st, OTHER, t, read, seq, null, li); return; }
          var ends = msg.end === true || msg.end === "true" || msg.end === "True";
          if (msg.error) {
            add(st, ERROR, t, read, seq, null, li);
            if (!facts.error_detail) {
              var e = msg.error;
              facts.error_detail = (e && typeof e === "object"
                ? (e.error_type || "error") + ": " + (e.message || e.user_message || "") : String(e)).slice(0, 200);
            }
          } else if ("broker" in msg) add(st, KIND.broker, t, read, seq, null, li);
          else if ("data" in msg) add(st, KIND.data, t, read, seq, null, li);
          else if ("info" in msg) add(st, KIND.info, t, read, seq, null, li);
          else if (!ends) add(st, OTHER, t, read, seq, null, li);
          if (ends) {
            add(st, END, t, read, seq, null, li);
            if (typeof msg.reason === "string" && msg.reason.toLowerCase().indexOf("cancel") === 0) facts.cancelled = true;
            open--;
            if (open === 0) { facts.ended = true; facts.end_ms = t; finish(null); }
          }
        }

        sock.emit(cmd.service, { taskName: cmd.task_name, taskData: cmd.task_data }, function (reply) {
          facts.headers_ms = performance.now() - t1;
          clearTimeout(ackTimer);
          if (finished) return;
          var listeners = reply && reply.response_listener_events;
          if (reply && reply.error) {
            var e = reply.error;
            finish(["ack", "error reply: " + (e && typeof e === "object"
              ? (e.error_type || "error") + ": " + (e.message || e.user_message || "") : String(e)).slice(0, 200)]);
          } else if (!Array.isArray(listeners) || !listeners.length ||
                     !listeners.every(function (n) { return typeof n === "string"; })) {
            finish(["ack", "no response_listener_events in ack reply " + JSON.stringify(reply).slice(0, 120)]);
          } else {
            names = listeners;
            open = listeners.length;
            listeners.forEach(function (name, li) {
              counts.push(0);
              sock.on(name, function (msg) { onMessage(li, msg); });
            });
          }
        });
      });
    }, function (err) {
      facts.failure = ["connect", "Socket.io connect failed: " + String(err && err.message || err).slice(0, 160)];
      return facts;
    });
  }

  // ------------------------------------------------------------------ the loop
  function run(cmd) {
    view.textContent = "";
    shown = "";
    text = view.appendChild(document.createTextNode(""));
    var running = cmd.transport === "socketio" ? runSocketio(cmd) : runNdjson(cmd);
    return running.then(function (facts) {
      return nextFrame().then(nextFrame).then(function () { // the last reads' frame has come
        // (and the fetch's resource timing entry, which appears once its body is done)
        if (cmd.transport === "ndjson") facts.http_version = protocolOf(cmd.url);
        facts.started_at = cur.startedAt;
        facts.cross_origin_isolated = window.crossOriginIsolated === true;
        var done = flush(facts);
        cur = null;
        return done;
      });
    });
  }

  function poll() {
    fetch(BASE + "/next", { cache: "no-store" }).then(function (res) {
      if (res.status === 204) return null;
      if (!res.ok) throw new Error("bridge said " + res.status);
      return res.json();
    }).then(function (cmd) {
      if (cmd === null) return poll();
      if (cmd.op === "stop") { if (socket) socket.close(); return null; }
      return run(cmd).then(poll);
    }).catch(function () { setTimeout(poll, 200); });
  }

  poll();
})();
