/* Nexus dashboard: small touches on top of htmx. Times arrive in UTC from the server and are
 * shown in the reader's local time; the UTC value stays in the tooltip. */
(function () {
  "use strict";

  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (node) {
      if (node.dataset.localised) return;
      var at = new Date(node.getAttribute("datetime"));
      if (Number.isNaN(at.getTime())) return;
      node.title = node.textContent;
      node.textContent = at.toLocaleString(undefined, {
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
      node.dataset.localised = "1";
    });
  }

  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("htmx:afterSwap", function (event) { localise(event.target); });
})();
