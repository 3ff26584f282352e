/* Live processing status: every [data-scan-status] still "uploaded" or "processing" polls
   GET /api/images/{id}/status/ until the scan is completed or failed, then shows the final
   state, the failure reason and the flags. With data-reload-when-done the page reloads
   then, so the server renders the finished image, regions and metrics. */
(function () {
  "use strict";

  var POLL_MS = 1500;
  var TERMINAL = { completed: true, failed: true };
  var statusLabels = null;
  var failureLabels = null;

  function labels() {
    if (statusLabels === null) {
      statusLabels = Medimg.jsonData("status-labels");
      failureLabels = Medimg.jsonData("failure-labels");
    }
  }

  function badge(text, modifier) {
    return Medimg.element("span", "badge badge--" + modifier, text);
  }

  function render(node, state) {
    labels();
    node.setAttribute("data-status", state.status);
    var label = node.querySelector("[data-status-label]");
    label.className = "badge badge--" + state.status;
    label.textContent = statusLabels[state.status] || state.status;
    var reason = node.querySelector("[data-status-reason]");
    reason.textContent =
      state.status === "failed"
        ? failureLabels[state.failure_reason] || state.failure_reason || "Unknown reason"
        : "";
    var flags = node.querySelector("[data-status-flags]");
    flags.replaceChildren();
    if (state.needs_review) {
      flags.appendChild(badge("Needs review", "warning"));
    }
    if (state.possible_duplicate) {
      flags.appendChild(badge("Possible duplicate", "info"));
    }
  }

  // Polls until the scan is terminal; `onChange(state)` sees every answer. A failed request
  // is retried (with a longer pause): a brief network hiccup must not freeze the badge.
  function watch(node, onChange) {
    var url = node.getAttribute("data-status-url");
    var delay = POLL_MS;

    function tick() {
      Medimg.fetchJSON(url).then(
        function (state) {
          delay = POLL_MS;
          render(node, state);
          if (onChange) {
            onChange(state);
          }
          if (TERMINAL[state.status]) {
            node.dispatchEvent(new CustomEvent("medimg:status-done", { detail: state, bubbles: true }));
            if (node.hasAttribute("data-reload-when-done")) {
              window.location.reload();
            }
          } else {
            window.setTimeout(tick, delay);
          }
        },
        function () {
          delay = Math.min(delay * 2, 15000);
          window.setTimeout(tick, delay);
        }
      );
    }
    tick();
  }

  // A status element for a scan created on this page (the upload list uses it).
  function create(scan, statusUrl) {
    var node = Medimg.element("span", "scan-status");
    node.setAttribute("data-scan-status", "");
    node.setAttribute("data-status-url", statusUrl);
    node.setAttribute("aria-live", "polite");
    var label = Medimg.element("span", "badge");
    label.setAttribute("data-status-label", "");
    var reason = Medimg.element("span", "scan-status__reason");
    reason.setAttribute("data-status-reason", "");
    var flags = Medimg.element("span", "scan-status__flags");
    flags.setAttribute("data-status-flags", "");
    node.append(label, " ", reason, " ", flags);
    render(node, scan);
    return node;
  }

  Medimg.status = { watch: watch, create: create, render: render, TERMINAL: TERMINAL };

  document.querySelectorAll("[data-scan-status]").forEach(function (node) {
    if (!TERMINAL[node.getAttribute("data-status")]) {
      watch(node);
    }
  });
})();
