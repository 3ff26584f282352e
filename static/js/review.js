/* Technician review of a processed image (templates/imaging/_review.html):
   - add a missed region: "Draw a box" then drag on the image, or type the corners; POST
     /api/images/{id}/regions/ with {x1, y1, x2, y2, frame, label} (image pixels, x2/y2
     exclusive, frame = the one the viewer shows);
   - ask for a false region's removal: DELETE /api/regions/{id}/ (a doctor approves it; the
     region stays filled until then, so its pixels are never shown here);
   - confirm: POST /api/images/{id}/review/.
   Each change re-renders the page from the server (new grid image, region list, metrics). */
(function () {
  "use strict";

  var FLASH_KEY = "medimg-review-message";

  var panel = document.querySelector("[data-review]");
  var message = document.querySelector("[data-review-message]");

  function say(text, isError) {
    if (!message) {
      return;
    }
    message.textContent = text;
    message.classList.toggle("review__message--error", Boolean(isError));
  }

  // The page reloads after every change; the outcome is shown on the new page.
  function reloadWith(text) {
    try {
      window.sessionStorage.setItem(FLASH_KEY, text);
    } catch (err) {
      /* Private mode without storage: the reloaded page simply shows no message. */
    }
    window.location.reload();
  }

  try {
    var flash = window.sessionStorage.getItem(FLASH_KEY);
    if (flash) {
      window.sessionStorage.removeItem(FLASH_KEY);
      say(flash, false);
    }
  } catch (err) {
    /* No storage: nothing to show. */
  }

  // Remove buttons live in the region list, outside the review panel.
  document.querySelectorAll("[data-remove-region]").forEach(function (button) {
    button.addEventListener("click", function () {
      var label = button.getAttribute("aria-label") || "Remove region";
      button.disabled = true;
      say(label.replace(/^Remove/, "Asking to remove") + "…", false);
      Medimg.fetchJSON(button.getAttribute("data-url"), { method: "DELETE" })
        .then(function () {
          reloadWith(
            label.replace(/^Remove region/, "Removal of region") +
              " requested. A doctor decides; until then the region stays filled."
          );
        })
        .catch(function (err) {
          button.disabled = false;
          say("Could not remove the region: " + err.message, true);
        });
    });
  });

  if (!panel) {
    return;
  }

  var form = panel.querySelector("[data-add-region-form]");
  var toggle = panel.querySelector("[data-draw-toggle]");
  var confirmButton = panel.querySelector("[data-confirm-review]");
  var viewerRoot = document.querySelector("[data-viewer]");
  var viewer = viewerRoot ? viewerRoot.medimgViewer : null;
  var fields = {
    x1: form.querySelector("[name=x1]"),
    y1: form.querySelector("[name=y1]"),
    x2: form.querySelector("[name=x2]"),
    y2: form.querySelector("[name=y2]"),
  };
  var labelField = form.querySelector("[name=label]");

  // The four corners as numbers, or null; `mark` flags the bad fields for the user.
  function box(mark) {
    var values = {};
    var ok = true;
    Object.keys(fields).forEach(function (name) {
      var text = fields[name].value.trim();
      var value = Number(text);
      var valid = text !== "" && Number.isInteger(value) && value >= 0;
      if (valid) {
        fields[name].removeAttribute("aria-invalid");
      } else {
        if (mark) {
          fields[name].setAttribute("aria-invalid", "true");
        }
        ok = false;
      }
      values[name] = value;
    });
    return ok ? values : null;
  }

  // --- Drawing on the image ----------------------------------------------------------------
  if (viewer) {
    var viewport = viewer.viewport;
    var image = viewer.image;
    var selection = viewerRoot.querySelector("[data-selection]");
    var start = null;

    var size = function () {
      return { w: image.naturalWidth || 1, h: image.naturalHeight || 1 };
    };

    // Client (screen) coordinates to image pixels, clamped to the image.
    var toImage = function (clientX, clientY) {
      var rect = image.getBoundingClientRect();
      var s = size();
      var x = ((clientX - rect.left) / rect.width) * s.w;
      var y = ((clientY - rect.top) / rect.height) * s.h;
      return {
        x: Math.max(0, Math.min(s.w, Math.round(x))),
        y: Math.max(0, Math.min(s.h, Math.round(y))),
      };
    };

    // Show the box in the fields over the image, wherever zoom and pan have put it.
    var showSelection = function () {
      var b = box();
      if (!b || b.x2 <= b.x1 || b.y2 <= b.y1) {
        selection.hidden = true;
        return;
      }
      var rect = image.getBoundingClientRect();
      var view = viewport.getBoundingClientRect();
      var s = size();
      var kx = rect.width / s.w;
      var ky = rect.height / s.h;
      selection.style.left = rect.left - view.left + b.x1 * kx + "px";
      selection.style.top = rect.top - view.top + b.y1 * ky + "px";
      selection.style.width = (b.x2 - b.x1) * kx + "px";
      selection.style.height = (b.y2 - b.y1) * ky + "px";
      selection.hidden = false;
    };
    var showSoon = function () {
      window.setTimeout(showSelection, 0);
    };

    var setDrawing = function (on) {
      viewerRoot.classList.toggle("viewer--drawing", on);
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      toggle.textContent = on ? "Cancel drawing" : "Draw a box";
      if (on) {
        // The button sits below the image: bring the image into view to draw on it.
        viewport.scrollIntoView({ block: "nearest" });
        say("Drag over the text on the image to draw the box.", false);
      }
    };

    toggle.addEventListener("click", function () {
      setDrawing(!viewerRoot.classList.contains("viewer--drawing"));
    });

    viewport.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 || !viewerRoot.classList.contains("viewer--drawing")) {
        return;
      }
      event.preventDefault();
      viewport.setPointerCapture(event.pointerId);
      start = { id: event.pointerId, point: toImage(event.clientX, event.clientY) };
    });
    viewport.addEventListener("pointermove", function (event) {
      if (!start || start.id !== event.pointerId) {
        return;
      }
      var point = toImage(event.clientX, event.clientY);
      fields.x1.value = Math.min(start.point.x, point.x);
      fields.y1.value = Math.min(start.point.y, point.y);
      fields.x2.value = Math.max(start.point.x, point.x);
      fields.y2.value = Math.max(start.point.y, point.y);
      showSelection();
    });
    var finish = function (event) {
      if (!start || start.id !== event.pointerId) {
        return;
      }
      start = null;
      setDrawing(false);
      if (box()) {
        say("Box drawn. Check the numbers, then press Add region.", false);
        form.querySelector("button[type=submit]").focus();
      }
    };
    viewport.addEventListener("pointerup", finish);
    viewport.addEventListener("pointercancel", finish);
    viewport.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && viewerRoot.classList.contains("viewer--drawing")) {
        setDrawing(false);
        say("Drawing cancelled.", false);
      }
      showSoon();
    });
    viewport.addEventListener("wheel", showSoon, { passive: true });
    viewport.addEventListener("pointermove", showSoon);
    viewerRoot.addEventListener("click", showSoon);
    image.addEventListener("load", showSoon);
    window.addEventListener("resize", showSoon);
    Object.keys(fields).forEach(function (name) {
      fields[name].addEventListener("input", showSelection);
    });
  } else {
    toggle.hidden = true;
  }

  // --- Add, confirm --------------------------------------------------------------------------
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var b = box(true);
    if (!b) {
      say("Enter all four corners as whole numbers of pixels.", true);
      return;
    }
    if (b.x2 <= b.x1 || b.y2 <= b.y1) {
      say("Right must be greater than left, and bottom greater than top.", true);
      return;
    }
    var submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    say("Adding the region…", false);
    var body = {
      x1: b.x1,
      y1: b.y1,
      x2: b.x2,
      y2: b.y2,
      frame: viewer ? viewer.frame : 0,
      label: labelField.value,
    };
    Medimg.fetchJSON(panel.getAttribute("data-add-url"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })
      .then(function (region) {
        reloadWith("Region " + (region.index + 1) + " added: it is encrypted and filled in the redacted image.");
      })
      .catch(function (err) {
        submit.disabled = false;
        say("Could not add the region: " + err.message, true);
      });
  });

  confirmButton.addEventListener("click", function () {
    confirmButton.disabled = true;
    say("Confirming…", false);
    Medimg.fetchJSON(panel.getAttribute("data-confirm-url"), { method: "POST" })
      .then(function (result) {
        reloadWith("Regions confirmed (" + result.region_count + " in this image).");
      })
      .catch(function (err) {
        confirmButton.disabled = false;
        say("Could not confirm: " + err.message, true);
      });
  });
})();
