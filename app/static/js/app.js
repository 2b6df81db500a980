// Live pages: clocks computed from absolute times, and regions re-fetched in place when /live reports a change.
(function () {
  "use strict";
  var body = document.body;
  var lang = document.documentElement.lang || "vi";

  function duration(ms) {
    var negative = ms < 0;
    var s = Math.floor(Math.abs(ms) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    var text = (d ? d + (lang === "en" ? "d " : " ngày ") : "") + String(h).padStart(2, "0") + ":" +
      String(m).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
    return negative ? "−" + text : text;
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-age]").forEach(function (el) {
      el.textContent = duration(now - Date.parse(el.getAttribute("datetime")));
    });
    document.querySelectorAll("time[data-deadline]").forEach(function (el) {
      var left = Date.parse(el.getAttribute("datetime")) - now;
      el.textContent = duration(left);
      el.classList.toggle("overdue", left < 0);
    });
  }

  var charts = [];
  function drawCharts() {
    if (typeof window.Chart === "undefined") { return; }
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var data = JSON.parse(canvas.getAttribute("data-chart"));
      charts.push(new window.Chart(canvas, {
        type: canvas.getAttribute("data-chart-type") || "bar",
        data: data,
        // data-chart-axis="y" lays the bars sideways, so long category names stay readable.
        options: {animation: false, responsive: true, maintainAspectRatio: false,
          spanGaps: true, indexAxis: canvas.getAttribute("data-chart-axis") || "x",
          scales: canvas.getAttribute("data-chart-axis") === "y"
            ? {x: {beginAtZero: true, ticks: {precision: 0}}, y: {ticks: {autoSkip: false}}}
            : {x: {stacked: true, ticks: {autoSkip: true, maxRotation: 0}},
               y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}}
      }));
    });
  }

  function refreshed() {
    tick(); drawCharts();
    document.dispatchEvent(new CustomEvent("ucsc:refreshed"));
  }

  // Replace a region's content, keeping what the user is typing in it (a directive, a note) and the focus.
  function swap(el, html) {
    // A chosen file cannot be put back into a new input: leave such a region as it is until the next change.
    var chosen = Array.prototype.some.call(el.querySelectorAll("input[type=file]"), function (f) {
      return f.files && f.files.length > 0;
    });
    if (chosen) { return; }
    var kept = {};
    el.querySelectorAll("textarea[id], select[id], input[id]:not([type=hidden]):not([type=file]):not([type=submit])")
      .forEach(function (f) {
        if (f.type === "checkbox" || f.type === "radio") {
          if (f.checked !== f.defaultChecked) { kept[f.id] = {checked: f.checked}; }
        } else if (f.tagName === "SELECT") {
          var changed = Array.prototype.some.call(f.options, function (o) { return o.selected !== o.defaultSelected; });
          if (changed) { kept[f.id] = {value: f.value}; }
        } else if (f.value !== f.defaultValue) {
          kept[f.id] = {value: f.value};
        }
      });
    var active = document.activeElement && el.contains(document.activeElement) ? document.activeElement.id : null;
    el.innerHTML = html;
    Object.keys(kept).forEach(function (id) {
      var f = document.getElementById(id);
      if (!f) { return; }
      if ("checked" in kept[id]) { f.checked = kept[id].checked; } else { f.value = kept[id].value; }
    });
    if (active && document.getElementById(active)) { document.getElementById(active).focus(); }
  }

  var pending = null, inFlight = false, again = false;
  function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live-src]"));
    Promise.all(regions.map(function (el) {
      return fetch(el.getAttribute("data-live-src"), {headers: {"X-Fragment": "1"}, credentials: "same-origin"})
        .then(function (r) {
          if (r.redirected || r.status === 401) { window.location.reload(); return; }
          if (r.ok) { return r.text().then(function (html) { swap(el, html); }); }
        });
    })).catch(function () {}).then(function () {
      inFlight = false;
      refreshed();
      body.setAttribute("data-refreshed", String(Date.now()));
      if (again) { again = false; schedule(); }
    });
  }
  function schedule() {
    if (pending) { return; }
    pending = setTimeout(function () { pending = null; refresh(); }, 40);
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshed();
    setInterval(tick, 1000);
    if (body.getAttribute("data-live") !== "1" || typeof window.io === "undefined") { return; }
    var last = Number(body.getAttribute("data-last-event") || 0);
    var beatEvery = Number(body.getAttribute("data-heartbeat") || 10) * 1000;
    var lastBeat = Date.now();
    var banner = document.getElementById("live-status");
    // auth is a function so that every reconnect sends the newest event id this page has seen.
    var socket = window.io("/live", {auth: function (cb) { cb({last_event_id: last}); }, reconnectionDelayMax: 3000});
    window.ucscLive = socket;
    socket.onAny(function (name, data) {
      if (data && typeof data.event_id === "number" && name !== "heartbeat" && name !== "ready") {
        last = Math.max(last, data.event_id);
      }
      if (name === "heartbeat") { lastBeat = Date.now(); return; }
      if (name === "ready") {
        lastBeat = Date.now();
        if (data && data.event_id > last) { last = data.event_id; schedule(); }
        return;
      }
      if (name === "resync") { window.location.reload(); return; }
      // The server closes the socket when this sign-in ends (logout, revocation): the reload goes to the login page.
      if (name === "signed_out") { window.location.reload(); return; }
      schedule();
    });
    socket.on("connect", function () { lastBeat = Date.now(); });
    setInterval(function () {
      var stale = !socket.connected || Date.now() - lastBeat > beatEvery * 2.5;
      banner.hidden = !stale;
      body.setAttribute("data-live-state", stale ? "reconnecting" : "live");
    }, 500);
  });
})();
