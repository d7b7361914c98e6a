// conveyor dashboard: live refresh from the JSON API. The pages work without it; this only keeps
// what they show current. No framework, no network access but the app's own /api/.
//
// What the templates mark up for it:
//   data-field="name"      an element showing the field `name` of the data (of its row, inside a
//                          list); a "state" badge gets its class too; data-time shows a time as
//                          the when() macro does. Text is replaced only when it changed, so the
//                          markup the server rendered (links) stays until then.
//   data-list="name"       a table body listing the data's array `name`, one row per item, keyed
//   data-key="field"       by `field` (rows carry data-key): rows follow the data's order, rows of
//                          items gone are removed, new items are cloned from the body's <template>
//                          (whose data-href / data-action patterns, "/workflows/{id}", get the
//                          item's fields).
//   data-count="name"      the length of the array `name`.
//   data-empty-for="name"  shown only while the array `name` is empty (its table the other way).
//   data-show-if="field"   shown only while `field` (of the row, or the data) is true (a
//                          non-empty string or array, true); "field:value" while the array
//                          `field` holds `value` (a task's buttons: "actions:run");
//   data-hide-if="field"   the other way round. The server renders them hidden or not already.
//   data-link="pattern"    with data-field: the text is a link to the pattern filled with the
//   data-link-if="field"   row's fields ("/queues/{queue}/tasks/{last_task_id}"), while `field`
//                          is set (plain text otherwise).
//   data-links="queues"    with data-field: a worker's queues (name -> weight), each a link to
//                          its queue; data-links="tasks": task ids, each a link to its task when
//                          the row's `queues` names one queue. As the server renders them.
//   data-step="position"   a workflow step's state badge (workflow page, from step_list), and
//                          beside it data-task-state (its task's state), data-step-retried,
//                          data-step-link (the link to its task, hidden while the step waits)
//                          and data-step-name (its name without the link, while it waits).
"use strict";
(function () {
  var REFRESH_MS = 5000;
  var SVG = "http://www.w3.org/2000/svg";

  function text(value, el) {
    if (value === null || value === undefined || value === "") {
      return el.hasAttribute("data-time") ? "—" : "";
    }
    if (typeof value === "boolean") { return value ? "yes" : "no"; }
    if (Array.isArray(value)) { return value.join(", "); }
    if (typeof value === "object") {
      return Object.keys(value).map(function (k) { return k + " (" + value[k] + ")"; }).join(", ");
    }
    if (el.hasAttribute("data-time")) { return String(value).substr(0, 19).replace("T", " "); }
    return String(value);
  }

  // Elements of `scope` matching `selector`, but not those inside a list (rows refresh apart).
  function own(scope, selector, inRow) {
    return Array.prototype.filter.call(scope.querySelectorAll(selector), function (el) {
      return inRow || !el.closest("[data-list]");
    });
  }

  function link(href, label) {
    var a = document.createElement("a");
    a.setAttribute("href", href);
    a.textContent = label;
    return a;
  }

  // A worker's queues or active tasks as links, the markup templates/workers.html renders.
  function links(el, kind, row) {
    var parts = [];
    if (kind === "queues") {
      Object.keys(row.queues || {}).forEach(function (name) {
        parts.push([link(fill("/queues/{q}", { q: name }), name), " (" + row.queues[name] + ")"]);
      });
    } else {
      var queues = Object.keys(row.queues || {});
      (row.active || []).forEach(function (id) {
        var code = document.createElement("code");
        code.textContent = id;
        if (queues.length === 1) {
          var a = link(fill("/queues/{q}/tasks/{id}", { q: queues[0], id: id }), "");
          a.appendChild(code);
          code = a;
        }
        parts.push([code]);
      });
    }
    el.textContent = "";
    parts.forEach(function (nodes, i) {
      if (i > 0) { el.appendChild(document.createTextNode(", ")); }
      nodes.forEach(function (n) {
        el.appendChild(typeof n === "string" ? document.createTextNode(n) : n);
      });
    });
  }

  function show(el, shown, row) {
    var kind = el.getAttribute("data-links");
    if (kind) { links(el, kind, row); return; }
    var pattern = el.getAttribute("data-link"), when = el.getAttribute("data-link-if");
    if (pattern && (!when || row[when])) {
      el.textContent = "";
      el.appendChild(link(fill(pattern, row), shown));
      return;
    }
    el.textContent = shown;
  }

  function isOn(spec, row) {
    var at = spec.indexOf(":"), key = at < 0 ? spec : spec.substr(0, at), value = row[key];
    if (at >= 0) { return Array.isArray(value) && value.indexOf(spec.substr(at + 1)) >= 0; }
    return Array.isArray(value) ? value.length > 0 : !!value;
  }

  function setFields(scope, row, inRow) {
    own(scope, "[data-field]", inRow).forEach(function (el) {
      var key = el.getAttribute("data-field");
      if (!(key in row)) { return; }
      var shown = text(row[key], el);
      if (el.textContent !== shown) { show(el, shown, row); }
      if (el.classList.contains("state")) { el.className = "state " + row[key]; }
    });
    own(scope, "[data-show-if], [data-hide-if]", inRow).forEach(function (el) {
      var spec = el.getAttribute("data-show-if") || el.getAttribute("data-hide-if");
      if (!(spec.split(":")[0] in row)) { return; }
      var on = isOn(spec, row);
      el.hidden = el.hasAttribute("data-show-if") ? !on : on;
    });
  }

  function fill(pattern, item) {
    var base = document.body.getAttribute("data-base") || "";
    return base + pattern.replace(/\{(\w+)\}/g, function (_, key) {
      return encodeURIComponent(item[key] === undefined ? "" : String(item[key]));
    });
  }

  function newRow(body, item) {
    var template = body.querySelector("template");
    if (!template) { return null; }
    var row = template.content.firstElementChild.cloneNode(true);
    row.querySelectorAll("[data-href]").forEach(function (el) {
      el.setAttribute("href", fill(el.getAttribute("data-href"), item));
    });
    row.querySelectorAll("[data-action]").forEach(function (el) {
      el.setAttribute("action", fill(el.getAttribute("data-action"), item));
    });
    return row;
  }

  function updateList(body, items) {
    var keyField = body.getAttribute("data-key");
    var rows = {};
    body.querySelectorAll(":scope > [data-key]").forEach(function (row) {
      rows[row.getAttribute("data-key")] = row;
    });
    var template = body.querySelector(":scope > template");
    items.forEach(function (item) {
      var key = String(item[keyField]);
      var row = rows[key];
      delete rows[key];
      if (!row) {
        row = newRow(body, item);
        if (!row) { return; }
        row.setAttribute("data-key", key);
      }
      setFields(row, item, true);
      body.insertBefore(row, template);  // in the data's order (moves a row already there)
    });
    Object.keys(rows).forEach(function (key) { rows[key].remove(); });
  }

  function updateLists(data) {
    document.querySelectorAll("[data-list]").forEach(function (body) {
      var items = data[body.getAttribute("data-list")];
      if (!Array.isArray(items)) { return; }
      updateList(body, items);
      var table = body.closest("table");
      if (table) { table.hidden = items.length === 0; }
    });
    Object.keys(data).forEach(function (name) {
      if (!Array.isArray(data[name])) { return; }
      var sel = '[data-count="' + CSS.escape(name) + '"]';
      document.querySelectorAll(sel).forEach(function (el) {
        el.textContent = String(data[name].length);
      });
      sel = '[data-empty-for="' + CSS.escape(name) + '"]';
      document.querySelectorAll(sel).forEach(function (el) {
        el.hidden = data[name].length > 0;
      });
    });
  }

  function updateSteps(steps) {
    steps.forEach(function (s) {
      function at(attr) {
        return document.querySelector("[" + attr + '="' + CSS.escape(s.position) + '"]');
      }
      var el = at("data-step");
      if (el && el.textContent !== s.state) {
        el.textContent = s.state;
        el.className = "state " + s.state;
      }
      el = at("data-task-state");
      var label = s.task_state ? "task " + s.task_state : "";
      if (el && el.textContent !== label) {
        el.textContent = label;
        el.className = "state " + (s.task_state || "");
      }
      if (el) { el.hidden = !s.task_state; }
      el = at("data-step-retried");
      if (el) {
        el.textContent = s.retried ? "retried " + s.retried : "";
        el.hidden = !s.retried;
      }
      // A waiting step's task does not exist yet: its name links to it once it is enqueued.
      var waiting = s.state === "waiting";
      el = at("data-step-link");
      if (el) { el.hidden = waiting; }
      el = at("data-step-name");
      if (el) { el.hidden = !waiting; }
    });
  }

  function rect(cls, x, y, w, h, title) {
    var r = document.createElementNS(SVG, "rect");
    r.setAttribute("class", cls);
    r.setAttribute("x", x.toFixed(1)); r.setAttribute("y", y.toFixed(1));
    r.setAttribute("width", w.toFixed(1)); r.setAttribute("height", Math.max(h, 0).toFixed(1));
    var t = document.createElementNS(SVG, "title");
    t.textContent = title;
    r.appendChild(t);
    return r;
  }

  // Same geometry as the chart macro in templates/macros.html.
  function drawChart(svg, minutes) {
    if (!svg || !minutes || !minutes.length) { return; }
    var peak = 1;
    minutes.forEach(function (m) { peak = Math.max(peak, m.processed); });
    var step = 600 / minutes.length;
    svg.querySelectorAll("rect").forEach(function (r) { r.remove(); });
    var axis = svg.querySelector(".axis");
    minutes.forEach(function (m, i) {
      var h = m.processed / peak * 100, hf = m.failed / peak * 100, at = m.minute.substr(11, 5);
      svg.insertBefore(rect("ok", i * step + 1, 110 - h, step - 2, h - hf,
        at + " UTC: " + m.processed + " processed, " + m.failed + " failed"), axis);
      svg.insertBefore(rect("failed", i * step + 1, 110 - hf, step - 2, hf,
        at + " UTC: " + m.failed + " failed"), axis);
    });
    var labels = svg.querySelectorAll(".label");
    if (labels.length === 3) { labels[2].textContent = peak + "/min"; }
  }

  function apply(data) {
    drawChart(document.querySelector("svg[data-chart]"), data.minutes);
    var main = document.querySelector("main");
    if (typeof data.workers === "number") { setText(document, "workers", data.workers); }
    if (data.queues) {
      data.queues.forEach(function (q) {
        var row = document.querySelector('tr[data-queue="' + CSS.escape(q.queue) + '"]');
        if (row) { setFields(row, q, true); }
      });
    } else if (data.stats) {
      setFields(main, data.stats, false);
    } else {
      updateLists(data);
      if (Array.isArray(data.step_list)) { updateSteps(data.step_list); }
      setFields(main, data, false);
    }
  }

  function setText(scope, field, value) {
    scope.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) {
      el.textContent = text(value, el);
    });
  }

  function refresh(url) {
    if (document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { /* the next tick tries again */ });
  }

  // data-refresh holds one URL, or several separated by spaces (the queue page: its counts, and
  // its tab's tasks), each fetched and applied on every tick.
  document.addEventListener("DOMContentLoaded", function () {
    var urls = (document.body.getAttribute("data-refresh") || "").split(" ").filter(Boolean);
    if (urls.length) {
      setInterval(function () { urls.forEach(refresh); }, REFRESH_MS);
    }
  });
})();
