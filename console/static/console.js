// paystream console: the one script (no inline script: the CSP forbids it).
// A page whose body has data-refresh="N" (N > 0) reloads itself every N
// seconds — the overview and a running replay — unless the operator is
// typing in a form or the tab is hidden.
(function () {
  "use strict";
  var secs = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!(secs > 0)) {
    return;
  }
  function busy() {
    var a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }
  function tick() {
    if (document.hidden || busy()) {
      window.setTimeout(tick, secs * 1000);
      return;
    }
    window.location.reload();
  }
  window.setTimeout(tick, secs * 1000);
})();
