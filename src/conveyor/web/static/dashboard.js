// conveyor dashboard: live refresh from the JSON API. The pages work without it; this only keeps
// the numbers and the chart current. No framework, no network access but the app's own /api/.
"use strict";
(function () {
  var REFRESH_MS = 5000;
  var SVG = "http://www.w3.org/2000/svg";

  function setText(scope, field, value) {
    scope.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) {
      if (typeof value === "boolean") { value = value ? "yes" : "no"; }
      el.textContent = value === null || value === undefined ? "" : String(value);
    });
  }

  function setFields(scope, row) {
    Object.keys(row).forEach(function (key) {
      var value = row[key];
      if (value === null || typeof value !== "object") { setText(scope, key, value); }
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
    if (typeof data.workers === "number") { setText(document, "workers", data.workers); }
    if (data.queues) {
      data.queues.forEach(function (q) {
        var row = document.querySelector('tr[data-queue="' + CSS.escape(q.queue) + '"]');
        if (row) { setFields(row, q); }
      });
    } else if (data.stats) {
      setFields(document.querySelector("main"), data.stats);
    } else {
      setFields(document.querySelector("main"), data);
    }
  }

  function refresh(url) {
    if (document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { /* the next tick tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var url = document.body.getAttribute("data-refresh");
    if (url) { setInterval(function () { refresh(url); }, REFRESH_MS); }
  });
})();
