/* Technician review of a processed image (templates/imaging/_review.html):
   - add a missed region: "Draw a box" then drag on the image, or type the corners; POST
     /api/images/{id}/regions/ with {x1, y1, x2, y2, frame, label} (image pixels, x2/y2
     exclusive, frame = the one the viewer shows);
   - ask for a false region's removal after a confirmation dialog: DELETE
     /api/regions/{id}/?group=true (the whole group; a doctor approves it, the region stays
     filled until then, so its pixels are never shown here); undo it until the review is
     confirmed: DELETE /api/regions/{id}/removal/?group=true;
   - resolve each leftover detection of the verification pass (one row per box, its frames
     together): cover it with a region on each of its frames (the POST above with its box and
     `frames`) or dismiss them with a typed reason: POST /api/leftovers/{id}/dismissal/?group=true;
   - confirm: POST /api/images/{id}/review/ (409 while a leftover is unresolved).
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

  // Remove buttons live in the region list, outside the review panel. A removal asks first
  // (a dialog naming the region and its frames), acts on the whole group, and can be undone
  // until the review is confirmed.
  var dialog = document.querySelector("[data-remove-dialog]");
  function askToRemove(button) {
    var number = button.getAttribute("data-number");
    var frames = button.getAttribute("data-frames");
    if (!dialog || typeof dialog.showModal !== "function") {
      return Promise.resolve(
        window.confirm("Ask a doctor to remove region " + number + "? It stays filled until then.")
      );
    }
    dialog.querySelector("[data-remove-number]").textContent =
      number + (frames ? " (frames " + frames + ")" : "");
    return new Promise(function (resolve) {
      dialog.addEventListener(
        "close",
        function () {
          resolve(dialog.returnValue === "remove");
        },
        { once: true }
      );
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  document.querySelectorAll("[data-remove-region]").forEach(function (button) {
    button.addEventListener("click", function () {
      var number = button.getAttribute("data-number");
      askToRemove(button).then(function (yes) {
        if (!yes) {
          say("Nothing changed: region " + number + " stays.", false);
          button.focus();
          return;
        }
        button.disabled = true;
        say("Asking to remove region " + number + "…", false);
        Medimg.fetchJSON(button.getAttribute("data-url"), { method: "DELETE" })
          .then(function () {
            reloadWith(
              "Removal of region " + number + " requested. A doctor decides; until then the " +
                "region stays filled. Undo it in the region list until you confirm."
            );
          })
          .catch(function (err) {
            button.disabled = false;
            say("Could not ask for the removal: " + err.message, true);
          });
      });
    });
  });

  document.querySelectorAll("[data-undo-removal]").forEach(function (button) {
    button.addEventListener("click", function () {
      button.disabled = true;
      Medimg.fetchJSON(button.getAttribute("data-url"), { method: "DELETE" })
        .then(function () {
          reloadWith("Removal request undone: the region stays as it was.");
        })
        .catch(function (err) {
          button.disabled = false;
          say("Could not undo the removal: " + err.message, true);
        });
    });
  });

  // A long region list shows its first rows; the rest on demand.
  var more = document.querySelector("[data-regions-more]");
  if (more) {
    var moreLabel = more.textContent;
    more.addEventListener("click", function () {
      var open = more.getAttribute("aria-expanded") !== "true";
      document.querySelectorAll("[data-region-more]").forEach(function (row) {
        row.hidden = !open;
      });
      more.setAttribute("aria-expanded", open ? "true" : "false");
      more.textContent = open ? "Show fewer regions" : moreLabel;
    });
  }

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

  // --- Leftover detections: cover with a region, or dismiss with a reason ------------------
  panel.querySelectorAll("[data-cover-leftover]").forEach(function (button) {
    button.addEventListener("click", function () {
      var b = button.getAttribute("data-box").split(",").map(Number);
      var margin = 2; // the detector's box is tight: a little room around the text
      var body = {
        x1: Math.max(0, b[0] - margin),
        y1: Math.max(0, b[1] - margin),
        x2: Math.min(Number(fields.x2.max) || b[2] + margin, b[2] + margin),
        y2: Math.min(Number(fields.y2.max) || b[3] + margin, b[3] + margin),
        // Every frame the same text was still found on: one region each, one rebuild.
        frames: button.getAttribute("data-frames").split(",").map(Number),
        label: button.getAttribute("data-label") || "phi_text",
      };
      if (["phi_text", "tech_text", "barcode"].indexOf(body.label) < 0) {
        body.label = "phi_text";
      }
      button.disabled = true;
      say("Covering the leftover text with a region…", false);
      Medimg.fetchJSON(panel.getAttribute("data-add-url"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      })
        .then(function (region) {
          reloadWith("Leftover text covered by region " + (region.index + 1) + ".");
        })
        .catch(function (err) {
          button.disabled = false;
          say("Could not cover the leftover text: " + err.message, true);
        });
    });
  });

  panel.querySelectorAll("[data-dismiss-leftover]").forEach(function (dismiss) {
    dismiss.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = dismiss.querySelector("[name=reason]");
      var reason = input.value.trim();
      if (reason.length < 5) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
        say("Type why this is not identifying text (at least 5 characters).", true);
        return;
      }
      input.removeAttribute("aria-invalid");
      var submit = dismiss.querySelector("button[type=submit]");
      submit.disabled = true;
      Medimg.fetchJSON(dismiss.getAttribute("data-url"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: reason }),
      })
        .then(function () {
          reloadWith("Leftover detection dismissed: “" + reason + "”.");
        })
        .catch(function (err) {
          submit.disabled = false;
          say("Could not dismiss: " + err.message, true);
        });
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
