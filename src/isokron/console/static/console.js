/* IsoKron operator console — plain JavaScript, no build step, no third-party code.
 *
 * One app, two homes: standalone (`isokron console`, index.html mounts it) and a tab in
 * Hermes's dashboard (the plugin entry registers a component that mounts it, and every request
 * goes through the dashboard SDK's authedFetch so it carries the dashboard's session header).
 * Data is put into the page with textContent only (never innerHTML), so workspace content
 * cannot inject markup. Charts and the graph are hand-written SVG.
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var PANELS = [
    ["gates", "Boot gates"], ["chain", "Chain"], ["verification", "Verification"],
    ["escalations", "Escalations"], ["proposals", "Proposals"], ["policies", "Policies"],
    ["capabilities", "Capabilities"], ["charter", "Charter"], ["constitution", "Constitution"],
    ["scratchpad", "Scratchpad"], ["graph", "Knowledge graph"], ["tokens", "Tokens"],
    ["activity", "Activity"], ["runbooks", "Runbooks"]
  ];

  // ------------------------------------------------------------------ DOM helpers
  function h(tag, attrs) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function s(tag, attrs) {
    var el = document.createElementNS(SVG_NS, tag);
    for (var k in attrs || {}) el.setAttribute(k, attrs[k]);
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function setAttrs(el, attrs) {
    for (var k in attrs || {}) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  function short(hex, n) { return hex ? hex.slice(0, n || 12) + "…" : "—"; }
  function when(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : "—"; }
  function pretty(v) { return JSON.stringify(v, null, 2); }
  function table(headers, rows, attrs) {
    return h("table", Object.assign({ class: "ik-table" }, attrs || {}),
      h("thead", null, h("tr", null, headers.map(function (x) { return h("th", null, x); }))),
      h("tbody", null, rows));
  }

  // ------------------------------------------------------------------ the app
  function IsoKronConsole(root, opts) {
    this.root = root;
    this.apiBase = opts.apiBase || "";        // prefix of every API path
    this.hrefBase = opts.hrefBase || "";      // prefix of links the browser follows itself
    this.fetchImpl = opts.fetchImpl || function (url, init) { return fetch(url, init); };
    this.hermes = !!opts.hermes;
    this.session = null;
    this.current = "gates";
    this.timers = [];
    root.classList.add("ik-console");
  }

  IsoKronConsole.prototype.api = function (method, path, body) {
    var self = this;
    var init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET" && this.session) init.headers["X-IsoKron-CSRF"] = this.session.csrf_token;
    return this.fetchImpl(this.apiBase + path, init).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (resp.status === 401 && path !== "/api/session") { self.signedOut(data.message); }
        if (!resp.ok) {
          var err = new Error(data.message || ("HTTP " + resp.status));
          err.code = data.error; err.status = resp.status;
          throw err;
        }
        return data;
      });
    });
  };

  IsoKronConsole.prototype.start = function () {
    var self = this;
    return this.api("GET", "/api/session").then(function (s) {
      if (s.signed_in) { self.session = s; self.shell(); } else { self.signIn(); }
    }, function (err) { self.signIn(err.message); });
  };

  IsoKronConsole.prototype.clearTimers = function () {
    this.timers.forEach(function (t) { clearInterval(t); clearTimeout(t); });
    this.timers = [];
  };

  IsoKronConsole.prototype.signedOut = function (message) {
    if (!this.session) return;
    this.session = null; this.clearTimers(); this.signIn(message);
  };

  IsoKronConsole.prototype.signIn = function (message) {
    var self = this;
    this.clearTimers();
    var token = h("input", { type: "password", name: "token", id: "ik-token", autocomplete: "off",
      placeholder: "wsk_…", "aria-label": "Operator token" });
    var ro = h("input", { type: "checkbox", id: "ik-readonly" });
    var msg = h("p", { class: "ik-error", role: "alert", text: message || "" });
    var form = h("form", { class: "ik-signin", onsubmit: function (ev) {
      ev.preventDefault();
      var value = token.value; token.value = "";
      self.api("POST", "/api/session", { token: value, read_only: ro.checked }).then(function (s) {
        self.session = s; self.shell();
      }, function (err) { msg.textContent = err.message; });
    } },
      h("h1", null, "IsoKron console"),
      h("p", null, "Sign in with an operator token of your workspace. It is sent once, in this ",
        "request's body; the console keeps only its SHA-256, and checks it again on every request."),
      h("label", { for: "ik-token" }, "Operator token"), token,
      h("label", { class: "ik-check" }, ro, " Read-only (auditor): no changes from this session"),
      h("button", { type: "submit", class: "ik-primary", id: "ik-signin" }, "Sign in"), msg);
    this.root.replaceChildren(form);
  };

  IsoKronConsole.prototype.diagBundleHref = function () {
    return this.hrefBase + "/api/diagnostics/bundle";
  };

  IsoKronConsole.prototype.downloadBundle = function (ev) {
    // In Hermes the request must carry the dashboard's session header, which a plain link
    // cannot: fetch it and hand the browser the blob under the same file name.
    if (!this.hermes) return;
    ev.preventDefault();
    var self = this;
    this.fetchImpl(this.apiBase + "/api/diagnostics/bundle", { credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) { throw new Error("diagnostics bundle: HTTP " + resp.status); }
        var cd = resp.headers.get("Content-Disposition") || "";
        var m = /filename="([^"]+)"/.exec(cd);
        return resp.blob().then(function (b) { return [b, m ? m[1] : "isokron-diagnostics.zip"]; });
      }).then(function (pair) {
        var url = URL.createObjectURL(pair[0]);
        var a = h("a", { href: url, download: pair[1] });
        self.root.appendChild(a); a.click(); a.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
      }).catch(function (err) {
        if (err.message.indexOf("401") >= 0) { self.signedOut("session ended; sign in again"); }
      });
  };

  IsoKronConsole.prototype.canWrite = function () {
    return this.session && !this.session.read_only && !this.session.server_read_only;
  };

  IsoKronConsole.prototype.shell = function () {
    var self = this, ss = this.session;
    this.nav = h("nav", { class: "ik-nav", "aria-label": "Panels" }, PANELS.map(function (p) {
      return h("button", { type: "button", "data-panel": p[0], onclick: function () { self.show(p[0]); } }, p[1]);
    }));
    this.main = h("main", { class: "ik-main", id: "ik-main" });
    var header = h("header", { class: "ik-header" },
      h("div", { class: "ik-brand" }, "IsoKron"),
      h("div", { class: "ik-who" }, "workspace ", h("b", { id: "ik-workspace" }, ss.workspace_id),
        " · ", ss.actor_kind, " ", h("code", null, ss.token_prefix + "…"),
        this.canWrite() ? null : h("span", { class: "ik-badge ik-ro", id: "ik-readonly-badge" }, "read-only (auditor)")),
      h("div", { class: "ik-actions" },
        h("button", { type: "button", id: "ik-reload", onclick: function () { self.show(self.current); } }, "Reload"),
        h("a", { class: "ik-button", id: "ik-diag", href: this.diagBundleHref(), download: "",
          onclick: function (ev) { self.downloadBundle(ev); } }, "Diagnostics bundle"),
        h("button", { type: "button", id: "ik-signout", onclick: function () {
          self.api("POST", "/api/session/signout", {}).finally(function () { self.signedOut(); });
        } }, "Sign out")));
    this.root.replaceChildren(header, h("div", { class: "ik-body" }, this.nav, this.main));
    this.show(this.current);
  };

  IsoKronConsole.prototype.show = function (name) {
    var self = this;
    this.clearTimers();
    this.current = name;
    Array.prototype.forEach.call(this.nav.children, function (b) {
      b.classList.toggle("ik-active", b.getAttribute("data-panel") === name);
    });
    var title = PANELS.filter(function (p) { return p[0] === name; })[0][1];
    var body = h("div", { class: "ik-panel-body" }, h("p", { class: "ik-muted" }, "loading…"));
    this.main.replaceChildren(h("section", { class: "ik-panel", id: "ik-panel-" + name, "data-panel": name },
      h("h2", null, title), body));
    return this.api("GET", "/api/panels/" + name).then(function (data) {
      body.replaceChildren();
      RENDER[name].call(self, body, data);
      body.setAttribute("data-loaded", "1");
    }, function (err) {
      body.replaceChildren(h("p", { class: "ik-error", role: "alert" }, err.message));
    });
  };

  IsoKronConsole.prototype.write = function (method, path, payload, status) {
    var self = this;
    status.textContent = "…"; status.className = "ik-status";
    return this.api(method, path, payload).then(function (r) {
      status.textContent = "done" + (r.event_id ? " — event " + r.event_id : "");
      status.className = "ik-status ik-ok";
      return r;
    }, function (err) {
      status.textContent = err.message + (err.code ? " (" + err.code + ")" : "");
      status.className = "ik-status ik-bad";
      throw err;
    });
  };

  // ------------------------------------------------------------------ panels
  var RENDER = {};

  RENDER.gates = function (body, data) {
    body.appendChild(h("ul", { class: "ik-gates" }, data.gates.map(function (g) {
      return h("li", { class: "ik-gate ik-" + g.status, "data-gate": g.key, "data-status": g.status },
        h("span", { class: "ik-dot", "aria-label": g.status }),
        h("span", { class: "ik-gate-title" }, g.title),
        h("span", { class: "ik-gate-status" }, g.status),
        h("span", { class: "ik-gate-reason" }, g.reason));
    })));
  };

  RENDER.chain = function (body, data) {
    var self = this;
    var typeSel = h("select", { id: "ik-f-type" }, h("option", { value: "" }, "all types"),
      data.event_types.map(function (t) { return h("option", { value: t }, t); }));
    var actorSel = h("select", { id: "ik-f-actor" }, h("option", { value: "" }, "all actors"),
      ["kora", "operator", "critic", "oracle", "claude_pm"].map(function (k) { return h("option", { value: k }, k); }));
    var since = h("input", { type: "datetime-local", id: "ik-f-since", "aria-label": "since" });
    var until = h("input", { type: "datetime-local", id: "ik-f-until", "aria-label": "until" });
    var live = h("input", { type: "checkbox", id: "ik-live", checked: true });
    var rows = h("tbody", { id: "ik-chain-rows" });
    var detail = h("aside", { class: "ik-detail", id: "ik-event-detail" }, h("p", { class: "ik-muted" }, "Select an event to see its payload and hash links."));
    var newest = 0;
    function row(e) {
      if (e.seq > newest) newest = e.seq;
      return h("tr", { "data-seq": e.seq, "data-type": e.event_type, class: "ik-click", onclick: function () { self.eventDetail(detail, e.seq); } },
        h("td", null, String(e.seq)), h("td", null, when(e.occurred_at)), h("td", null, h("code", null, e.event_type)),
        h("td", null, e.actor_kind || "?"), h("td", null, h("code", null, short(e.this_event_hash))));
    }
    function fill(events) { newest = 0; rows.replaceChildren(); events.forEach(function (e) { rows.appendChild(row(e)); }); }
    function query(extra) {
      var q = [];
      if (typeSel.value) q.push("type=" + encodeURIComponent(typeSel.value));
      if (actorSel.value) q.push("actor_kind=" + encodeURIComponent(actorSel.value));
      if (since.value) q.push("since=" + encodeURIComponent(since.value));
      if (until.value) q.push("until=" + encodeURIComponent(until.value));
      if (extra) q.push(extra);
      return "/api/chain" + (q.length ? "?" + q.join("&") : "");
    }
    function apply() { self.api("GET", query()).then(function (d) { fill(d.events); }); }
    [typeSel, actorSel, since, until].forEach(function (el) { el.addEventListener("change", apply); });
    fill(data.events);
    this.timers.push(setInterval(function () {
      if (!live.checked || until.value) return;
      self.api("GET", query("after_seq=" + newest)).then(function (d) {
        d.events.slice().reverse().forEach(function (e) {
          var tr = row(e); tr.classList.add("ik-new"); rows.insertBefore(tr, rows.firstChild);
        });
      });
    }, 2000));
    body.append(
      h("div", { class: "ik-filters" }, typeSel, actorSel, h("label", null, "since ", since), h("label", null, "until ", until),
        h("label", { class: "ik-check" }, live, " live tail")),
      h("div", { class: "ik-split" },
        table(["seq", "occurred", "type", "actor", "hash"], rows, { id: "ik-chain-table" }), detail));
  };

  IsoKronConsole.prototype.eventDetail = function (detail, seq) {
    this.api("GET", "/api/chain/" + seq).then(function (e) {
      var ok = function (v) { return v === null ? "— (head)" : v ? "✓ links" : "✗ BROKEN"; };
      detail.replaceChildren(
        h("h3", null, "Event " + e.seq + " · ", h("code", null, e.event_type)),
        h("dl", { class: "ik-dl" },
          h("dt", null, "event_id"), h("dd", null, h("code", null, e.event_id)),
          h("dt", null, "actor"), h("dd", null, (e.actor_kind || "?") + " · " + (e.actor_label || "") + " · ", h("code", null, e.actor_id)),
          h("dt", null, "occurred_at"), h("dd", null, when(e.occurred_at)),
          h("dt", null, "prev_event_hash"), h("dd", null, h("code", { class: "ik-hash" }, e.prev_event_hash), " ", h("span", { id: "ik-prev-link" }, ok(e.links.prev_matches))),
          h("dt", null, "this_event_hash"), h("dd", null, h("code", { class: "ik-hash", id: "ik-this-hash" }, e.this_event_hash)),
          h("dt", null, "next event"), h("dd", null, e.next_seq ? "seq " + e.next_seq + " " + ok(e.links.next_matches) : "— (chain head)"),
          h("dt", null, "payload_digest"), h("dd", null, h("code", { class: "ik-hash" }, e.payload_digest), e.payload_erased ? " (payload erased; digest kept)" : "")),
        h("pre", { class: "ik-json", id: "ik-payload" }, pretty(e.payload)));
    });
  };

  // The row and state checks after the chain (isokron.chain.state.RowProgress).
  var VERIFY_PHASES = {
    scratchpad: "scratchpad entries re-hashed",
    records: "events' row records read",
    rows: "state rows checked"
  };

  RENDER.verification = function (body, data) {
    var self = this;
    var bar = h("progress", { id: "ik-verify-progress", max: "1", value: "0" });
    var out = h("div", { id: "ik-verify-result" });
    var status = h("span", { class: "ik-status", id: "ik-verify-status" });
    function poll(job) {
      bar.max = String(Math.max(job.total, 1)); bar.value = String(job.checked);
      var phase = VERIFY_PHASES[job.phase];
      status.textContent = job.state + " — " + job.checked + " of " + job.total + " events" +
        (phase ? "; " + job.phase_count + " " + phase : "");
      if (job.state === "running") {
        self.timers.push(setTimeout(function () { self.api("GET", "/api/verify/" + job.job_id).then(poll); }, 300));
        return;
      }
      out.replaceChildren(job.error ? h("p", { class: "ik-error" }, job.error) : verifyResult(job.result));
    }
    var run = h("button", { type: "button", class: "ik-primary", id: "ik-verify-run", onclick: function () {
      out.replaceChildren(); self.api("POST", "/api/verify", {}).then(poll, function (e) { status.textContent = e.message; });
    } }, "Run verification");
    var cpStatus = h("span", { class: "ik-status" });
    var cp = h("button", { type: "button", id: "ik-checkpoint", onclick: function () {
      self.write("POST", "/api/checkpoint", {}, cpStatus).then(function () { self.show("verification"); });
    } }, "Take checkpoint");
    body.append(h("p", null, "Re-computes every hash link of the workspace's chain, the chain head, and the hashes of the charter, ",
      "scratchpad and constitution rows, and confirms each checkpoint kept outside the database."),
      h("div", { class: "ik-row" }, run, cp, bar, status, cpStatus), out,
      h("h3", null, "Checkpoints (kept outside the database)"),
      data.checkpoints.length ? table(["seq", "this_event_hash", "tenant"], data.checkpoints.map(function (c) {
        return h("tr", null, h("td", null, String(c.seq)), h("td", null, h("code", null, short(c.this_event_hash, 24))), h("td", null, h("code", null, c.tenant_id)));
      }), { id: "ik-checkpoints" }) : h("p", { class: "ik-muted" }, "No checkpoint yet."));
  };

  function verifyResult(r) {
    var c = r.chain;
    return h("div", { class: "ik-verdict " + (r.ok ? "ik-pass" : "ik-fail"), id: "ik-verdict" },
      h("strong", null, r.ok ? "Verified" : "NOT verified"),
      " — " + c.events_checked + " events, head seq " + c.head_seq +
        (r.rows_checked !== undefined ? ", " + r.rows_checked + " state rows proven against their events" : "") +
        ", " + c.checkpoints.length + " checkpoint(s) checked",
      c.problems.concat(r.findings).length ? h("ul", null, c.problems.concat(r.findings).map(function (f) {
        return h("li", null, h("code", null, f.kind), " ", f.message);
      })) : null,
      c.checkpoints.length ? h("ul", null, c.checkpoints.map(function (k) {
        return h("li", null, "checkpoint seq " + k.checkpoint.seq + ": " + (k.ok ? "confirmed" : "MISMATCH"));
      })) : null);
  }

  RENDER.escalations = function (body, data) {
    var self = this;
    if (!data.escalations.length) { body.appendChild(h("p", { class: "ik-muted" }, "No escalations.")); return; }
    body.appendChild(h("div", { class: "ik-cards" }, data.escalations.map(function (e) {
      var reason = h("input", { type: "text", class: "ik-reason", placeholder: "reason (chained with the decision)", "aria-label": "reason" });
      var status = h("span", { class: "ik-status" });
      function decide(d) {
        self.write("POST", "/api/escalations/" + e.escalation_id + "/decision", { decision: d, reason: reason.value }, status)
          .then(function () { self.show("escalations"); }, function () {});
      }
      var req = e.request || {};
      return h("article", { class: "ik-card", "data-escalation": e.escalation_id, "data-status": e.status },
        h("h3", null, h("code", null, e.tool), " ", h("span", { class: "ik-badge ik-" + e.status }, e.status)),
        h("p", null, e.reason),
        h("dl", { class: "ik-dl" },
          h("dt", null, "raised by"), h("dd", null, (e.actor_kind || "?") + " at " + when(e.created_at)),
          h("dt", null, "rule"), h("dd", null, e.rule_id || "—"),
          h("dt", null, "held operation"), h("dd", null, h("code", null, req.op || "—"))),
        h("pre", { class: "ik-json" }, pretty(req.args || req)),
        e.status === "open" && self.canWrite() ? h("div", { class: "ik-row" }, reason,
          h("button", { type: "button", class: "ik-primary ik-approve", onclick: function () { decide("approve"); } }, "Approve"),
          h("button", { type: "button", class: "ik-danger ik-deny", onclick: function () { decide("reject"); } }, "Deny"), status)
          : h("p", { class: "ik-muted" }, e.decided_at ? "decided " + when(e.decided_at) + ": " + (e.decision_note || "") : ""));
    })));
  };

  RENDER.proposals = function (body, data) {
    var self = this;
    if (!data.proposals.length) { body.appendChild(h("p", { class: "ik-muted" }, "No proposals.")); return; }
    body.appendChild(h("div", { class: "ik-cards" }, data.proposals.map(function (p) {
      var reason = h("input", { type: "text", class: "ik-reason", placeholder: "note (chained)", "aria-label": "note" });
      var status = h("span", { class: "ik-status" });
      function decide(d) {
        self.write("POST", "/api/proposals/" + p.proposal_id + "/decision", { kind: p.proposal_kind, decision: d, reason: reason.value }, status)
          .then(function () { self.show("proposals"); }, function () {});
      }
      return h("article", { class: "ik-card", "data-proposal": p.proposal_id, "data-status": p.status },
        h("h3", null, p.proposal_kind + ": ", p.title, " ", h("span", { class: "ik-badge ik-" + p.status }, p.status)),
        h("p", null, p.rationale || ""), h("pre", { class: "ik-json" }, pretty(p.detail)),
        p.status === "pending" && self.canWrite() ? h("div", { class: "ik-row" }, reason,
          h("button", { type: "button", class: "ik-primary", onclick: function () { decide("accept"); } }, "Accept"),
          h("button", { type: "button", class: "ik-danger", onclick: function () { decide("reject"); } }, "Reject"), status) : null);
    })));
  };

  RENDER.policies = function (body, data) {
    var self = this;
    body.appendChild(table(["policy", "value", "description", ""], data.policies.map(function (p) {
      var input = h("input", { type: "text", class: "ik-policy-value", value: JSON.stringify(p.value), "aria-label": p.policy_key });
      var status = h("span", { class: "ik-status" });
      var save = h("button", { type: "button", class: "ik-save", onclick: function () {
        var value;
        try { value = JSON.parse(input.value); } catch (e) { status.textContent = "not JSON: quote strings"; status.className = "ik-status ik-bad"; return; }
        self.write("POST", "/api/policies", { policy_key: p.policy_key, value: value }, status);
      } }, "Save");
      return h("tr", { "data-policy": p.policy_key }, h("td", null, h("code", null, p.policy_key)),
        h("td", null, self.canWrite() ? input : h("code", null, JSON.stringify(p.value))),
        h("td", null, p.description), h("td", null, self.canWrite() ? [save, status] : null));
    }), { id: "ik-policies" }));
  };

  RENDER.capabilities = function (body, data) {
    var kinds = data.actor_kinds;
    var counts = kinds.map(function (k) { return data.capabilities.filter(function (c) { return c.grants[k]; }).length; });
    body.append(h("p", null, data.capabilities.length + " capabilities × " + kinds.length + " actor kinds. Unknown capabilities are denied."),
      table(["capability", "group"].concat(kinds.map(function (k, i) { return k + " (" + counts[i] + ")"; })),
        data.capabilities.map(function (c) {
          return h("tr", { title: c.description }, h("td", null, h("code", null, c.cap_name)), h("td", null, c.group),
            kinds.map(function (k) {
              var g = c.grants[k];
              return h("td", { class: "ik-cell " + (g ? "ik-granted" : "ik-denied"), "data-kind": k }, g ? "✓" : "·");
            }));
        }), { id: "ik-matrix", class: "ik-table ik-grid" }));
  };

  function lineDiff(a, b) {
    // Longest-common-subsequence diff of two texts, line by line.
    var x = a.split("\n"), y = b.split("\n"), n = x.length, m = y.length, i, j;
    var L = []; for (i = 0; i <= n; i++) { L.push(new Array(m + 1).fill(0)); }
    for (i = n - 1; i >= 0; i--) for (j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    var out = []; i = 0; j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
      else if (L[i + 1][j] >= L[i][j + 1]) { out.push(["-", x[i]]); i++; }
      else { out.push(["+", y[j]]); j++; }
    }
    while (i < n) out.push(["-", x[i++]]);
    while (j < m) out.push(["+", y[j++]]);
    return out;
  }

  RENDER.charter = function (body, data) {
    var hist = data.history;
    var active = hist.filter(function (c) { return c.is_active; })[0];
    var from = h("select", { id: "ik-diff-from", "aria-label": "from version" }, hist.map(function (c) { return h("option", { value: c.version }, "v" + c.version); }));
    var to = h("select", { id: "ik-diff-to", "aria-label": "to version" }, hist.map(function (c) { return h("option", { value: c.version }, "v" + c.version); }));
    if (hist.length > 1) from.value = String(hist[1].version);
    var diff = h("pre", { class: "ik-diff", id: "ik-charter-diff" });
    function show() {
      var a = hist.filter(function (c) { return String(c.version) === from.value; })[0];
      var b = hist.filter(function (c) { return String(c.version) === to.value; })[0];
      // Changed lines with two lines of context; unchanged runs fold into "…".
      var lines = lineDiff(a.content_md, b.content_md), keep = [], CONTEXT = 2;
      lines.forEach(function (l, i) {
        if (l[0] === " ") return;
        for (var k = Math.max(0, i - CONTEXT); k <= Math.min(lines.length - 1, i + CONTEXT); k++) keep[k] = true;
      });
      var out = [], skipped = false;
      lines.forEach(function (l, i) {
        if (!keep[i]) { if (!skipped) out.push(h("span", { class: "ik-muted" }, "  …\n")); skipped = true; return; }
        skipped = false;
        out.push(h("span", { class: l[0] === "+" ? "ik-add" : l[0] === "-" ? "ik-del" : "" }, l[0] + " " + l[1] + "\n"));
      });
      diff.replaceChildren();
      append(diff, out.length ? out : h("span", { class: "ik-muted" }, "the two versions are identical"));
    }
    from.addEventListener("change", show); to.addEventListener("change", show);
    body.append(
      data.identity_error ? h("p", { class: "ik-error", role: "alert" }, data.identity_error)
        : h("p", { class: "ik-verdict ik-pass", id: "ik-charter-verified" }, "Active charter v" + data.verified_version + " matches its SHA-256 ", h("code", null, active ? active.content_hash : "")),
      h("div", { class: "ik-split" },
        h("pre", { class: "ik-doc", id: "ik-charter-current" }, active ? active.content_md : "(no active charter)"),
        h("div", null, h("h3", null, "History"),
          table(["version", "sha256", "installed", ""], hist.map(function (c) {
            return h("tr", null, h("td", null, "v" + c.version), h("td", null, h("code", null, short(c.content_hash, 16))), h("td", null, when(c.created_at)), h("td", null, c.is_active ? "active" : ""));
          })),
          h("h3", null, "Diff"), h("div", { class: "ik-row" }, from, " → ", to), diff)));
    show();
  };

  RENDER.constitution = function (body, data) {
    var self = this, revs = data.revisions;
    if (!revs.length) { body.appendChild(h("p", { class: "ik-muted" }, "No constitution revision yet.")); return; }
    var sel = h("select", { id: "ik-rev", "aria-label": "revision" }, revs.map(function (r) { return h("option", { value: r.revision_number }, "revision " + r.revision_number + (r === revs[0] ? " (active)" : "")); }));
    var rules = h("div", { id: "ik-rules" });
    function show() {
      var r = revs.filter(function (x) { return String(x.revision_number) === sel.value; })[0];
      rules.replaceChildren(h("p", null, "rules_hash ", h("code", null, r.rules_hash), " · installed " + when(r.created_at)),
        table(["id", "effect", "applies to", "description"], (r.rules.rules || []).map(function (x) {
          var scope = x.pattern ? "content /" + x.pattern + "/" : x.event_types ? "event types " + x.event_types.join(", ") : x.tools ? "tools " + x.tools.join(", ") : x.max_bytes ? "size > " + x.max_bytes + " bytes" : "";
          return h("tr", null, h("td", null, h("code", null, x.id || "")), h("td", null, h("span", { class: "ik-badge ik-" + x.effect }, x.effect)), h("td", null, h("code", null, scope)), h("td", null, x.description || ""));
        })));
    }
    sel.addEventListener("change", show);
    var text = h("textarea", { id: "ik-dry-text", rows: "4", placeholder: "text an agent might write…", "aria-label": "text to screen" });
    var tool = h("input", { type: "text", id: "ik-dry-tool", value: "kora__write_agent_scratchpad", "aria-label": "tool" });
    var verdict = h("div", { id: "ik-dry-result" });
    var run = h("button", { type: "button", class: "ik-primary", id: "ik-dry-run", onclick: function () {
      self.api("POST", "/api/constitution/dry-run", { text: text.value, tool: tool.value, revision_number: Number(sel.value) }).then(function (d) {
        verdict.replaceChildren(h("p", { class: "ik-verdict ik-" + (d.effect === "allow" ? "pass" : d.effect === "deny" ? "fail" : "unknown") },
          h("strong", { id: "ik-dry-effect" }, d.effect), " — ", d.reason));
      }, function (e) { verdict.textContent = e.message; });
    } }, "Dry run");
    body.append(h("div", { class: "ik-row" }, sel), rules, h("h3", null, "Dry run: screen a text against these rules"),
      h("p", { class: "ik-muted" }, "Nothing is written; the result says whether a write carrying this text would be allowed, denied or held."),
      text, h("div", { class: "ik-row" }, tool, run), verdict);
    show();
  };

  RENDER.scratchpad = function (body, data) {
    var drifted = data.entries.filter(function (e) { return e.drifted; }).length;
    body.append(h("p", null, data.entries.length + " active entries; " + drifted + " drifted (content no longer matches its BLAKE3 hash)."),
      table(["created", "actor", "kind", "visibility", "summary", "integrity"], data.entries.map(function (e) {
        return h("tr", { class: e.drifted ? "ik-drifted" : "", "data-entry": e.entry_id, "data-drifted": e.drifted ? "1" : "0" },
          h("td", null, when(e.created_at)), h("td", null, e.actor_kind), h("td", null, e.kind), h("td", null, e.visibility_scope),
          h("td", null, e.summary), h("td", null, e.drifted ? h("span", { class: "ik-badge ik-fail" }, "drifted") : e.content_uri ? "external" : "✓ BLAKE3"));
      }), { id: "ik-scratchpad" }));
  };

  RENDER.graph = function (body, data) {
    var nodes = data.nodes, links = data.links;
    if (!nodes.length) { body.appendChild(h("p", { class: "ik-muted" }, "The knowledge graph is empty.")); return; }
    var W = 900, H = 560, cx = W / 2, cy = H / 2, R = Math.min(W, H) / 2 - 80;
    var pos = {};
    nodes.forEach(function (n, i) {
      var a = 2 * Math.PI * i / nodes.length - Math.PI / 2;
      pos[n.node_id] = [cx + R * Math.cos(a), cy + R * Math.sin(a)];
    });
    var svg = s("svg", { viewBox: "0 0 " + W + " " + H, class: "ik-graph", id: "ik-graph", role: "img", "aria-label": "knowledge graph" },
      s("defs", null, s("marker", { id: "ik-arrow", viewBox: "0 0 10 10", refX: "22", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", class: "ik-arrowhead" }))));
    links.forEach(function (l) {
      var a = pos[l.from_node_id], b = pos[l.to_node_id];
      if (!a || !b) return;
      svg.appendChild(s("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "ik-link", "marker-end": "url(#ik-arrow)" }));
      svg.appendChild(s("text", { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 4, class: "ik-link-label" }, l.link_type));
    });
    nodes.forEach(function (n) {
      if (!n.superseded_by || !pos[n.superseded_by]) return;
      var a = pos[n.node_id], b = pos[n.superseded_by];
      svg.appendChild(s("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "ik-supersede", "marker-end": "url(#ik-arrow)" }));
      svg.appendChild(s("text", { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 + 12, class: "ik-link-label ik-supersede-label" }, "superseded by"));
    });
    nodes.forEach(function (n) {
      var p = pos[n.node_id];
      svg.appendChild(s("g", { class: "ik-node ik-node-" + n.status, "data-node": n.node_id },
        s("title", null, n.node_type + ": " + n.title + " (" + n.status + ")"),
        s("circle", { cx: p[0], cy: p[1], r: "14" }),
        s("text", { x: p[0], y: p[1] + 30, class: "ik-node-label" }, (n.title || "").slice(0, 28))));
    });
    body.append(h("p", null, nodes.length + " nodes, " + links.length + " links. Dashed arrows: supersede chains (grey nodes are superseded)."), svg);
  };

  RENDER.tokens = function (body, data) {
    var self = this;
    var shown = h("div", { id: "ik-token-once" });
    var rows = data.tokens.map(function (t) {
      var status = h("span", { class: "ik-status" });
      return h("tr", { "data-token": t.token_id, "data-prefix": t.token_prefix, "data-status": t.status },
        h("td", null, h("code", null, t.token_prefix + "…")), h("td", null, t.actor_kind), h("td", null, t.label),
        h("td", null, h("span", { class: "ik-badge ik-" + t.status }, t.status)), h("td", null, when(t.created_at)), h("td", null, t.expires_at ? when(t.expires_at) : "never"),
        h("td", null, t.status === "active" && self.canWrite() ? [h("button", { type: "button", class: "ik-danger ik-revoke", onclick: function () {
          self.write("POST", "/api/tokens/" + t.token_id + "/revoke", {}, status).then(function () { self.show("tokens"); }, function () {});
        } }, "Revoke"), status] : null));
    });
    body.appendChild(table(["prefix", "actor", "label", "status", "created", "expires", ""], rows, { id: "ik-tokens" }));
    if (!this.canWrite()) return;
    var kind = h("select", { id: "ik-issue-kind", "aria-label": "actor kind" }, data.actor_kinds.map(function (k) { return h("option", { value: k }, k); }));
    kind.value = "kora";
    var label = h("input", { type: "text", id: "ik-issue-label", placeholder: "label", "aria-label": "label" });
    var days = h("input", { type: "number", id: "ik-issue-days", min: "0", step: "1", placeholder: "expires in days (empty: never)", "aria-label": "expires in days" });
    var status = h("span", { class: "ik-status" });
    body.append(h("h3", null, "Issue a token"), h("div", { class: "ik-row" }, kind, label, days,
      h("button", { type: "button", class: "ik-primary", id: "ik-issue", onclick: function () {
        self.write("POST", "/api/tokens", { actor_kind: kind.value, label: label.value, expires_in_days: days.value ? Number(days.value) : null }, status).then(function (r) {
          self.show("tokens").then(function () {
            var box = document.getElementById("ik-token-once") || shown;
            box.replaceChildren(h("div", { class: "ik-once" }, h("strong", null, "Copy this token now — it is not shown again: "),
              h("code", { id: "ik-new-token" }, r.token), " ",
              h("button", { type: "button", onclick: function (ev) { ev.target.parentNode.remove(); } }, "I have stored it")));
          });
        }, function () {});
      } }, "Issue"), status), shown);
  };

  RENDER.activity = function (body, data) {
    var b = data.buckets, codes = data.codes;
    var W = 900, H = 260, P = 40;
    var maxW = Math.max.apply(null, [1].concat(b.map(function (x) { return x.writes; })));
    var maxD = Math.max.apply(null, [1].concat(b.map(function (x) { var t = 0; for (var k in x.denials) t += x.denials[k]; return t; })));
    var bw = b.length ? (W - 2 * P) / b.length : 0;
    function chart(id, title, max, draw) {
      var svg = s("svg", { viewBox: "0 0 " + W + " " + H, class: "ik-chart", id: id, role: "img", "aria-label": title },
        s("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "ik-axis" }),
        s("line", { x1: P, y1: P / 2, x2: P, y2: H - P, class: "ik-axis" }),
        s("text", { x: P - 6, y: P / 2 + 4, class: "ik-tick", "text-anchor": "end" }, String(max)),
        s("text", { x: P - 6, y: H - P, class: "ik-tick", "text-anchor": "end" }, "0"));
      b.forEach(function (x, i) {
        draw(svg, x, P + i * bw, bw);
        if (i % Math.max(1, Math.ceil(b.length / 8)) === 0) svg.appendChild(s("text", { x: P + i * bw + bw / 2, y: H - P + 16, class: "ik-tick", "text-anchor": "middle" }, x.hour.slice(5, 13).replace("T", " ") + "h"));
      });
      return h("figure", null, h("figcaption", null, title), svg);
    }
    var scale = function (v, max) { return (H - 1.5 * P) * v / max; };
    var legend = h("ul", { class: "ik-legend" }, codes.map(function (c, i) { return h("li", null, h("span", { class: "ik-swatch ik-c" + (i % 8) }), c); }));
    body.append(h("p", null, "Last " + data.hours + " hours, per hour."),
      chart("ik-chart-writes", "Writes (accepted, chained)", maxW, function (svg, x, left, w) {
        var hh = scale(x.writes, maxW);
        svg.appendChild(s("rect", { x: left + 2, y: H - P - hh, width: Math.max(w - 4, 1), height: hh, class: "ik-bar" }, s("title", null, x.hour + ": " + x.writes + " writes")));
      }),
      chart("ik-chart-denials", "Denials by code", maxD, function (svg, x, left, w) {
        var y = H - P;
        codes.forEach(function (c, i) {
          var v = x.denials[c] || 0; if (!v) return;
          var hh = scale(v, maxD); y -= hh;
          svg.appendChild(s("rect", { x: left + 2, y: y, width: Math.max(w - 4, 1), height: hh, class: "ik-c" + (i % 8) }, s("title", null, x.hour + ": " + v + " " + c)));
        });
      }), legend);
  };

  RENDER.runbooks = function (body, data) {
    var self = this;
    body.appendChild(h("div", { class: "ik-cards" }, data.runbooks.map(function (r) {
      return h("article", { class: "ik-card", "data-runbook": r.id }, h("h3", null, r.title),
        h("p", { class: "ik-muted" }, r.when), h("ol", null, r.steps.map(function (st) { return h("li", null, st); })),
        h("button", { type: "button", onclick: function () { self.show(r.panel); } }, "Open " + r.panel));
    })));
  };

  // ------------------------------------------------------------------ mounting
  window.IsoKronConsole = IsoKronConsole;

  var standalone = document.getElementById("isokron-console");
  if (standalone) {
    var base = standalone.getAttribute("data-base") || "";
    new IsoKronConsole(standalone, { apiBase: base, hrefBase: base }).start();
  }

  if (window.__HERMES_PLUGINS__ && window.__HERMES_PLUGIN_SDK__) {
    var SDK = window.__HERMES_PLUGIN_SDK__, React = SDK.React;
    var prefix = "/api/plugins/isokron";
    var hermesBase = (window.__HERMES_BASE_PATH__ || "").replace(/\/+$/, "");
    var IsoKronTab = function () {
      var ref = SDK.hooks.useRef(null);
      SDK.hooks.useEffect(function () {
        var app = new IsoKronConsole(ref.current, {
          apiBase: prefix, hrefBase: hermesBase + prefix, hermes: true,
          fetchImpl: function (url, init) { return SDK.authedFetch(url, init); }
        });
        app.start();
        return function () { app.clearTimers(); };
      }, []);
      return React.createElement("div", { ref: ref, id: "isokron-hermes-tab" });
    };
    window.__HERMES_PLUGINS__.register("isokron", IsoKronTab);
  }
})();
