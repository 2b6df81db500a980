// Keyboard shortcuts of the incident list (listed on the page): never while typing in a field.
(function () {
  "use strict";
  var chosen = -1;

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(el.tagName));
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("table.incidents tbody tr[data-ref]")); }

  function choose(n) {
    var all = rows();
    if (!all.length) { return; }
    chosen = Math.max(0, Math.min(all.length - 1, n));
    all.forEach(function (r, i) { r.classList.toggle("chosen", i === chosen); });
    var link = all[chosen].querySelector("a");
    if (link) { link.focus(); }
  }

  function go(id) {
    var a = document.getElementById(id);
    if (a) { window.location.href = a.getAttribute("href"); }
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) { return; }
    if (!document.getElementById("console-title")) { return; }
    var key = e.key;
    if (key === "/") { e.preventDefault(); document.getElementById("q").focus(); }
    else if (key === "j") { choose(chosen + 1); }
    else if (key === "k") { choose(chosen - 1); }
    else if (key === "n") { go("page-next"); }
    else if (key === "p") { go("page-prev"); }
    else if (key === "c") {
      var href = document.getElementById("console-title").getAttribute("data-new-href");
      if (href) { window.location.href = href; }
    }
  });
})();
