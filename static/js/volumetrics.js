/* Brain volumetrics and atrophy (templates/imaging/_volumetrics.html): when the segmentation
   panel shows a finished job (event "medimg:segmentation-result" from segmentation.js) whose
   results carry "volumetrics" and "atrophy", fill the tables; otherwise hide them.
   Text only (textContent), no inline script (CSP). Needs medimg.js. */
(function () {
  "use strict";

  var GRADE_TEXT = {
    none: "No atrophy beyond the reference",
    mild: "Mild atrophy",
    moderate: "Moderate atrophy",
    severe: "Severe atrophy",
  };
  var GRADE_BADGE = {
    none: "badge--info", // neutral: the model card says a "none" grade does not exclude atrophy
    mild: "badge--warning",
    moderate: "badge--failed",
    severe: "badge--failed",
  };
  var MEASURE_TEXT = {
    bpf: "Brain parenchymal fraction",
    icv: "Intracranial volume",
    gm_fraction: "Grey matter fraction",
    wm_fraction: "White matter fraction",
    grey_white_ratio: "Grey/white ratio",
  };

  function label(name) {
    return String(name || "").replace(/_/g, " ");
  }

  function number(value, digits) {
    return typeof value === "number" ? value.toFixed(digits) : "–";
  }

  function cells(row, values, mono) {
    values.forEach(function (value, i) {
      row.appendChild(Medimg.element("td", mono && i > 0 ? "mono" : null, value));
    });
  }

  function render(box, job) {
    var res = (job && job.results) || {};
    var vol = res.volumetrics;
    var atrophy = res.atrophy;
    if (!vol || !atrophy) {
      box.hidden = true;
      return;
    }
    var grade = box.querySelector("[data-volumetrics-grade]");
    grade.textContent = GRADE_TEXT[atrophy.grade] || atrophy.grade;
    grade.dataset.grade = atrophy.grade;
    grade.className = "badge " + (GRADE_BADGE[atrophy.grade] || "");
    box.querySelector("[data-volumetrics-patient]").textContent =
      "Compared with the " + atrophy.age_band + " reference (age from " + atrophy.age_source +
      "), sex " + atrophy.sex + (atrophy.sex_source !== "unknown" ? " (from " + atrophy.sex_source + ")" : "") +
      ". Grade thresholds (z of the graded measures): mild < −1.5, moderate < −2, severe < −3.";

    var volumes = box.querySelector("[data-volumetrics-volumes] tbody");
    volumes.textContent = "";
    var sides = vol.hemispheres_ml || { left: {}, right: {} };
    ["grey_matter", "white_matter", "csf"].forEach(function (tissue) {
      var row = Medimg.element("tr");
      var ai = (vol.asymmetry || {})[tissue];
      cells(row, [
        label(tissue),
        number(vol.volumes_ml[tissue], 1),
        number(sides.left[tissue], 1),
        number(sides.right[tissue], 1),
        typeof ai === "number" ? (ai * 100).toFixed(1) + " %" : "–",
      ], true);
      volumes.appendChild(row);
    });
    var icvRow = Medimg.element("tr");
    cells(icvRow, ["intracranial (GM + WM + CSF)", number(vol.icv_ml, 1), "", "", ""], true);
    volumes.appendChild(icvRow);

    var measures = box.querySelector("[data-volumetrics-measures] tbody");
    measures.textContent = "";
    Object.keys(atrophy.measures || {}).forEach(function (name) {
      var m = atrophy.measures[name];
      var ref = m.reference;
      var row = Medimg.element("tr");
      var digits = m.unit === "mL" ? 0 : 3;
      cells(row, [
        (MEASURE_TEXT[name] || label(name)) + (m.graded ? " (graded)" : ""),
        number(m.value, digits) + " " + m.unit,
        m.z === null || m.z === undefined ? "not scored" : m.z.toFixed(2),
        ref ? number(ref.mean, digits) + " (" + number(ref.range[0], digits) + "–" + number(ref.range[1], digits) + ")" : "no matching published reference",
        ref ? ref.source : "",
      ], false);
      measures.appendChild(row);
    });

    var flagged = box.querySelector("[data-volumetrics-flagged]");
    flagged.textContent = "";
    (atrophy.flagged || []).forEach(function (f) {
      var text = label(f.name) + ", " + f.side + ": " +
        (f.z !== null && f.z !== undefined ? label(f.measure) + " z " + f.z.toFixed(2)
          : label(f.measure) + " " + (f.value * 100).toFixed(1) + " % (threshold " + (f.threshold * 100).toFixed(0) + " %)");
      flagged.appendChild(Medimg.element("li", null, text));
    });
    box.querySelector("[data-volumetrics-warnings]").textContent = (atrophy.warnings || []).join(" ");
    box.querySelector("[data-volumetrics-caveat]").textContent = atrophy.caveat || "";
    box.hidden = false;
  }

  document.addEventListener("medimg:segmentation-result", function (event) {
    var panel = event.target;
    var box = panel && panel.querySelector ? panel.querySelector("[data-volumetrics]") : null;
    if (box) {
      render(box, event.detail);
    }
  });
})();
