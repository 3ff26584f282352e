/* Patient identity panel (templates/imaging/_identity.html): on request, fetch the original
   DICOM header values (doctor only, audited) and show them. Nothing is kept or cached; the
   values are written as text, never as HTML. Needs medimg.js. */
(function () {
  "use strict";

  var LABELS = {
    PatientName: "Name",
    PatientID: "Patient ID",
    PatientBirthDate: "Birth date",
    PatientSex: "Sex",
    PatientAge: "Age",
    OtherPatientIDs: "Other IDs",
    PatientAddress: "Address",
    InstitutionName: "Institution",
    ReferringPhysicianName: "Referring physician",
    StudyDate: "Study date",
    AccessionNumber: "Accession number",
  };

  function init(panel) {
    var button = panel.querySelector("[data-identity-show]");
    var status = panel.querySelector("[data-identity-status]");
    var result = panel.querySelector("[data-identity-result]");
    var patient = panel.querySelector("[data-identity-patient]");
    var values = panel.querySelector("[data-identity-values] tbody");

    function show(body) {
      patient.textContent = "";
      Object.keys(body.patient || {}).forEach(function (keyword) {
        patient.appendChild(Medimg.element("dt", "", LABELS[keyword] || keyword));
        patient.appendChild(Medimg.element("dd", "", body.patient[keyword]));
      });
      patient.appendChild(Medimg.element("dt", "", "Pseudonym in the file"));
      patient.appendChild(Medimg.element("dd", "", body.pseudonym));
      values.textContent = "";
      (body.values || []).forEach(function (item) {
        var row = Medimg.element("tr");
        row.appendChild(Medimg.element("td", "", item.keyword || item.path));
        row.appendChild(Medimg.element("td", "", item.value));
        values.appendChild(row);
      });
      result.hidden = false;
      button.textContent = "Hide identity";
    }

    button.addEventListener("click", function () {
      if (!result.hidden) {
        result.hidden = true;
        patient.textContent = "";
        values.textContent = "";
        button.textContent = "Show identity";
        return;
      }
      button.disabled = true;
      status.textContent = "Decrypting…";
      Medimg.fetchJSON(panel.dataset.identityUrl)
        .then(function (body) {
          status.textContent = "";
          show(body);
        })
        .catch(function (error) {
          status.textContent = error.message;
        })
        .then(function () {
          button.disabled = false;
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-identity]").forEach(init);
  });
})();
