// The committee board's own controls: the dark wall mode and the opt-in alert (a sound and a desktop
// notification) for a new P1 or serious incident. Both choices live in localStorage, per browser.
(function () {
  "use strict";
  var WALL = "ucsc.board.wall";
  var ALERT = "ucsc.board.alert";
  var known = null;

  function stored(key) { try { return window.localStorage.getItem(key) === "1"; } catch (e) { return false; } }
  function store(key, on) { try { window.localStorage.setItem(key, on ? "1" : "0"); } catch (e) { /* private mode */ } }

  function showWall(on) {
    document.body.classList.toggle("wall", on);
    var b = document.getElementById("toggle-wall");
    if (b) { b.setAttribute("aria-pressed", on ? "true" : "false"); }
  }

  function showAlert(on) {
    var b = document.getElementById("toggle-alert");
    if (b) { b.setAttribute("aria-pressed", on ? "true" : "false"); }
  }

  function refs() {
    var el = document.getElementById("board-alerting");
    var text = el ? el.getAttribute("data-refs") || "" : "";
    return text.split(" ").filter(function (r) { return r; });
  }

  function beep() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) { return; }
    var ctx = new Ctx();
    var osc = ctx.createOscillator();
    var gain = ctx.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.2;
    osc.connect(gain); gain.connect(ctx.destination);
    osc.start(); osc.stop(ctx.currentTime + 0.6);
    osc.onended = function () { ctx.close(); };
  }

  function announce(fresh) {
    document.body.setAttribute("data-alerted", fresh.join(" "));
    if (!stored(ALERT)) { return; }
    beep();
    if ("Notification" in window && window.Notification.permission === "granted") {
      new window.Notification(document.getElementById("board-controls").getAttribute("data-alert-title") || "UCSC", {body: fresh.join(", "), tag: fresh.join(",")});
    }
  }

  function check() {
    var now = refs();
    if (known === null) { known = now; return; }
    var fresh = now.filter(function (r) { return known.indexOf(r) < 0; });
    known = now;
    if (fresh.length) { announce(fresh); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!document.getElementById("board-controls")) { return; }
    showWall(stored(WALL));
    showAlert(stored(ALERT));
    document.getElementById("toggle-wall").addEventListener("click", function () {
      var on = !stored(WALL);
      store(WALL, on); showWall(on);
    });
    document.getElementById("toggle-alert").addEventListener("click", function () {
      var on = !stored(ALERT);
      store(ALERT, on); showAlert(on);
      if (on && "Notification" in window && window.Notification.permission === "default") {
        window.Notification.requestPermission();
      }
    });
    check();
  });
  document.addEventListener("ucsc:refreshed", check);
})();
