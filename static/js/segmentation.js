/* Segmentation panel (templates/imaging/_segmentation_slot.html): choose a model, run it,
   follow the job, toggle the overlay, show the legend and the volumes or areas per class.
   Data comes from data-* attributes; no inline script (CSP). Needs medimg.js. */
(function () {
  "use strict";

  var POLL_MS = 1500;

  function init(panel) {
    var form = panel.querySelector("[data-segmentation-form]");
    var select = panel.querySelector("[data-segmentation-model]");
    var spacing = panel.querySelector("[data-segmentation-spacing]");
    var series = panel.querySelector("[data-segmentation-series]");
    var status = panel.querySelector("[data-segmentation-status]");
    var result = panel.querySelector("[data-segmentation-result]");
    var overlay = panel.querySelector("[data-segmentation-overlay]");
    var toggle = panel.querySelector("[data-segmentation-toggle]");
    var frameInput = panel.querySelector("[data-segmentation-frame]");
    var frameGroup = panel.querySelector("[data-segmentation-frames]");
    var legend = panel.querySelector("[data-segmentation-legend]");
    var table = panel.querySelector("[data-segmentation-table] tbody");
    var unit = panel.querySelector("[data-segmentation-unit]");
    var notes = panel.querySelector("[data-segmentation-notes]");
    var modelInfo = panel.querySelector("[data-segmentation-model-info]");
    var segLink = panel.querySelector("[data-segmentation-seg]");
    var view3dLink = panel.querySelector("[data-segmentation-3d]");
    var runButton = panel.querySelector("[data-segmentation-run]");
    var current = null;

    // Refusals and failures read as errors (styled like the review panel's), not as notes.
    function say(text, isError) {
      status.textContent = text;
      status.classList.toggle("review__message--error", Boolean(isError));
    }

    var FAILURES = {
      processing_error: "an unexpected error while segmenting; an administrator can see the log",
      decrypt_failed: "the stored image could not be opened",
      model_unavailable: "the model could not be loaded",
      needs_volume: "this model needs a volume (several slices)",
    };

    function overlaySrc(job) {
      var frame = Math.max(0, (parseInt(frameInput.value, 10) || 1) - 1);
      return Medimg.urlFor(panel.dataset.overlayUrl, job.id) + "?frame=" + frame;
    }

    function showOverlay() {
      if (!current) {
        return;
      }
      overlay.hidden = !toggle.checked;
      if (toggle.checked) {
        overlay.src = overlaySrc(current);
      }
    }

    function render(job) {
      current = job;
      var res = job.results || {};
      var classes = res.classes || {};
      var colours = res.colours || {};
      legend.textContent = "";
      table.textContent = "";
      var sizes = res.volumes_ml || res.areas_mm2 || null;
      unit.textContent = res.volumes_ml ? "Volume (mL)" : res.areas_mm2 ? "Area (mm²)" : "Size";
      Object.keys(classes).forEach(function (key) {
        var name = classes[key];
        if (key === "0") {
          return;
        }
        var item = Medimg.element("li", "segmentation__legend-item");
        var swatch = Medimg.element("span", "segmentation__swatch");
        swatch.style.backgroundColor = colours[key] || "#888";
        swatch.setAttribute("aria-hidden", "true");
        item.appendChild(swatch);
        item.appendChild(document.createTextNode(" " + name.replace(/_/g, " ")));
        legend.appendChild(item);
        var row = Medimg.element("tr");
        row.appendChild(Medimg.element("td", null, name.replace(/_/g, " ")));
        row.appendChild(Medimg.element("td", "mono", sizes ? String(sizes[name]) : "–"));
        row.appendChild(Medimg.element("td", "mono", String((res.pixels || {})[name] || 0)));
        table.appendChild(row);
      });
      notes.textContent = (res.notes || []).join(" ");
      // Which model made this result: name, version and the start of its weights' SHA-256.
      modelInfo.textContent = "Model: " + job.model +
        (job.model_version ? ", version " + job.model_version : " (no version stated)") +
        (job.model_sha256 ? " · weights " + job.model_sha256.slice(0, 12) : "");
      modelInfo.title = job.model_sha256 ? "SHA-256 of the weights file: " + job.model_sha256 : "";
      // A multi-frame image or a series: one overlay per frame (slice).
      frameInput.max = String(res.frames || 1);
      if (parseInt(frameInput.value, 10) > (res.frames || 1)) {
        frameInput.value = "1";
      }
      frameGroup.hidden = !(res.frames > 1);
      if (job.has_dicom_seg) {
        segLink.href = Medimg.urlFor(panel.dataset.segUrl, job.id);
        segLink.setAttribute("download", "segmentation-" + job.id + ".dcm");
        segLink.hidden = false;
      } else {
        segLink.hidden = true;
      }
      // A volume (a series run, or a multi-frame image): the 3D view (pages/views/volume3d.py).
      if (view3dLink) {
        view3dLink.href = Medimg.urlFor(panel.dataset.view3dUrl, job.id);
        view3dLink.hidden = !(res.frames > 1);
      }
      result.hidden = false;
      // Brain volumetrics and atrophy (volumetrics.js) read the same job.
      panel.dispatchEvent(new CustomEvent("medimg:segmentation-result", { detail: job, bubbles: true }));
      showOverlay();
    }

    function follow(job) {
      if (job.status === "completed") {
        say("Done in " + Math.round(job.runtime_ms || 0) + " ms (" + job.model + ").");
        runButton.disabled = false;
        render(job);
        return;
      }
      if (job.status === "failed") {
        var reason = FAILURES[job.failure_reason] || job.failure_reason || "unknown reason";
        say("The segmentation failed: " + reason + ".", true);
        runButton.disabled = false;
        return;
      }
      say(job.status === "running" ? "Segmenting…" : "Queued…");
      window.setTimeout(function () {
        Medimg.fetchJSON(Medimg.urlFor(panel.dataset.jobUrl, job.id)).then(follow, fail);
      }, POLL_MS);
    }

    function fail(err) {
      say(err.message, true);
      runButton.disabled = false;
    }

    Medimg.fetchJSON(panel.dataset.modelsUrl).then(function (models) {
      select.textContent = "";
      if (!models.length) {
        select.appendChild(Medimg.element("option", null, "No models installed"));
        runButton.disabled = true;
        return;
      }
      models.forEach(function (model) {
        var option = Medimg.element("option", null, model.title || model.name);
        option.value = model.name;
        select.appendChild(option);
      });
    }, fail);

    // The latest finished job of this image, if any, is shown at once.
    Medimg.fetchJSON(panel.dataset.jobsUrl).then(function (jobs) {
      var latest = (jobs || [])[0];
      if (latest) {
        follow(latest);
      }
    }, fail);

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = { model: select.value };
      if (spacing && spacing.value.trim()) {
        var mm = parseFloat(spacing.value);
        if (!(mm > 0)) {
          say("Pixel spacing must be a positive number of millimetres.", true);
          return;
        }
        body.pixel_spacing_mm = [mm, mm];
      }
      if (series && series.checked) {
        body.series = true;
        var age = panel.querySelector("[data-segmentation-age]");
        var sex = panel.querySelector("[data-segmentation-sex]");
        if (age && age.value.trim()) {
          body.patient_age_years = parseFloat(age.value);
        }
        if (sex && sex.value) {
          body.patient_sex = sex.value;
        }
      }
      runButton.disabled = true;
      say("Sending…");
      Medimg.fetchJSON(panel.dataset.jobsUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      }).then(follow, fail);
    });

    toggle.addEventListener("change", showOverlay);
    frameInput.addEventListener("change", showOverlay);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-segmentation]").forEach(init);
  });
})();
