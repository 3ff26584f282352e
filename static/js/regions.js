/* Doctors: "Show" beside a region fetches GET /api/regions/{id}/ (the decrypted crop, audited
   by the API) and shows it under the region's row; "Hide" folds it away. Crops live only in
   object URLs, released when the page goes. A sealed transport can take over by defining
   window.MedimgSealed.fetchRegion(url) (static/js/sealed.js).
   "Approve removal" / "Keep" beside a region a technician asked to remove POST
   /api/regions/{id}/removal/ with {"approve": true|false}, then reload the page. */
(function () {
  "use strict";

  var urls = [];

  function fetchRegion(url) {
    if (window.MedimgSealed && window.MedimgSealed.fetchRegion) {
      return window.MedimgSealed.fetchRegion(url);
    }
    return fetch(url, { credentials: "same-origin" }).then(
      function (response) {
        document.dispatchEvent(new Event("medimg:server-activity"));
        if (response.ok) {
          return response.blob();
        }
        return response.text().then(function (text) {
          throw new Error(Medimg.errorMessage(response.status, Medimg.parseJSON(text)));
        });
      },
      function () {
        throw new Error(Medimg.errorMessage(0, null));
      }
    );
  }

  document.querySelectorAll("[data-show-region]").forEach(function (button) {
    var row = document.getElementById(button.getAttribute("aria-controls"));
    var image = row.querySelector("[data-region-image]");
    var label = button.getAttribute("aria-label");
    var loaded = false;

    function show(open) {
      row.hidden = !open;
      button.setAttribute("aria-expanded", open ? "true" : "false");
      button.textContent = open ? "Hide" : "Show";
      button.setAttribute("aria-label", open ? label.replace(/^Show/, "Hide") : label);
    }

    button.addEventListener("click", function () {
      if (loaded) {
        show(row.hidden);
        return;
      }
      button.disabled = true;
      fetchRegion(button.getAttribute("data-url"))
        .then(function (blob) {
          var url = URL.createObjectURL(blob);
          urls.push(url);
          image.src = url;
          loaded = true;
          show(true);
        })
        .catch(function (err) {
          row.hidden = false;
          image.replaceWith(Medimg.element("span", "review__message--error", err.message));
        })
        .finally(function () {
          button.disabled = false;
        });
    });
  });

  var removalMessage = document.querySelector("[data-removal-message]");

  document.querySelectorAll("[data-removal-decision]").forEach(function (button) {
    button.addEventListener("click", function () {
      var approve = button.getAttribute("data-approve") === "true";
      button.disabled = true;
      Medimg.fetchJSON(button.getAttribute("data-removal-url"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ approve: approve }),
      })
        .then(function () {
          window.location.reload();
        })
        .catch(function (err) {
          button.disabled = false;
          if (removalMessage) {
            removalMessage.textContent = "Could not record the decision: " + err.message;
          }
        });
    });
  });

  window.addEventListener("pagehide", function () {
    urls.forEach(function (url) {
      URL.revokeObjectURL(url);
    });
  });
})();
