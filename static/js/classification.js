/* Classifier plug-ins panel (templates/imaging/_classification_slot.html): choose an active
   classifier, run it on this image, follow the run, list every result with its model.
   Research use only. Data comes from data-* attributes; no inline script (CSP). Needs medimg.js. */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var LABEL = "Research use only — not for diagnosis";
  var FAILURES = {
    processing_error: "an unexpected error while classifying; an administrator can see the log",
    classifier_broken: "the classifier could not be loaded",
    no_such_frame: "the image has no such frame",
  };

  function init(panel) {
    var form = panel.querySelector("[data-classification-form]");
    var select = panel.querySelector("[data-classification-model]");
    var use = panel.querySelector("[data-classification-use]");
    var frameInput = panel.querySelector("[data-classification-frame]");
    var status = panel.querySelector("[data-classification-status]");
    var table = panel.querySelector("[data-classification-table]");
    var body = table.querySelector("tbody");
    var runButton = panel.querySelector("[data-classification-run]");
    var classifiers = {};

    function say(text, isError) {
      status.textContent = text;
      status.classList.toggle("review__message--error", Boolean(isError));
    }

    function fail(err) {
      say(err.message, true);
      runButton.disabled = false;
    }

    function row(result) {
      var tr = Medimg.element("tr");
      tr.dataset.classificationResult = String(result.id);
      var model = Medimg.element("td", null, result.model_name + " " + result.model_version);
      model.appendChild(Medimg.element("br"));
      var sha = Medimg.element("code", "unit", "sha256 " + (result.model_sha256 || "").slice(0, 12));
      sha.title = result.model_sha256 || "";
      model.appendChild(sha);
      tr.appendChild(model);
      if (result.status === "completed") {
        var pred = Medimg.element("td");
        pred.appendChild(Medimg.element("strong", null, result.prediction));
        pred.appendChild(Medimg.element("br"));
        pred.appendChild(
          Medimg.element("span", "unit", "confidence " + (result.confidence * 100).toFixed(1) + " %")
        );
        pred.appendChild(Medimg.element("br"));
        pred.appendChild(Medimg.element("span", "unit", LABEL));
        tr.appendChild(pred);
        var probs = Medimg.element("td");
        Object.keys(result.probabilities).forEach(function (name) {
          probs.appendChild(
            Medimg.element("div", null, name + ": " + (result.probabilities[name] * 100).toFixed(1) + " %")
          );
        });
        if (result.threshold !== null) {
          probs.appendChild(Medimg.element("div", "unit", "threshold " + result.threshold));
        }
        tr.appendChild(probs);
      } else {
        var reason = result.status === "failed"
          ? "Failed: " + (FAILURES[result.failure_reason] || result.failure_reason)
          : result.status;
        var cell = Medimg.element("td", null, reason);
        cell.colSpan = 2;
        tr.appendChild(cell);
      }
      var frame = result.frame ? " (frame " + (result.frame + 1) + ")" : "";
      tr.appendChild(
        Medimg.element("td", null, new Date(result.created_at).toLocaleString() + frame)
      );
      return tr;
    }

    function list() {
      return Medimg.fetchJSON(panel.dataset.resultsUrl).then(function (results) {
        body.textContent = "";
        (results || []).forEach(function (r) { body.appendChild(row(r)); });
        table.hidden = !(results || []).length;
      }, fail);
    }

    function follow(result) {
      if (result.status === "completed" || result.status === "failed") {
        runButton.disabled = false;
        if (result.status === "completed") {
          say(result.model_name + ": " + result.prediction + " (" + LABEL + ").");
        } else {
          say("The classifier failed: " + (FAILURES[result.failure_reason] || result.failure_reason) + ".", true);
        }
        list();
        return;
      }
      say(result.status === "running" ? "Classifying…" : "Queued…");
      window.setTimeout(function () {
        Medimg.fetchJSON(Medimg.urlFor(panel.dataset.resultUrl, result.id)).then(follow, fail);
      }, POLL_MS);
    }

    function describe() {
      var c = classifiers[select.value];
      use.textContent = c ? c.intended_use : "";
    }

    Medimg.fetchJSON(panel.dataset.classifiersUrl).then(function (items) {
      select.textContent = "";
      if (!items.length) {
        select.appendChild(Medimg.element("option", null, "No classifiers registered"));
        runButton.disabled = true;
        return;
      }
      items.forEach(function (c) {
        classifiers[String(c.id)] = c;
        var option = Medimg.element("option", null, c.name + " " + c.version);
        option.value = String(c.id);
        select.appendChild(option);
      });
      describe();
    }, fail);
    list();

    select.addEventListener("change", describe);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var payload = { model: parseInt(select.value, 10) };
      if (frameInput) {
        var n = parseInt(frameInput.value, 10);
        var top = parseInt(panel.dataset.frames, 10) || 1;
        if (!(n >= 1 && n <= top)) {
          say("Frame must be a whole number from 1 to " + top + ".", true);
          return;
        }
        payload.frame = n - 1;
      }
      runButton.disabled = true;
      say("Sending…");
      Medimg.fetchJSON(panel.dataset.resultsUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      }).then(follow, fail);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-classification]").forEach(init);
  });
})();
