/* Image viewer: zoom and pan with a CSS transform (pointer drag, wheel, keyboard + - 0 and
   arrows); frame scrolling for multi-frame images (slider, buttons, Page Up/Down) and window
   presets for DICOM (?frame= and ?window= on the image URLs); and for doctors "Restore
   original", which POSTs to /api/images/{id}/restore/ (audited by the API; its options and
   the reason in a JSON body, never in the URL) and shows the original in place of the
   redacted image, plus downloads of the restored image.

   Every restore request goes through fetchRestore(url, fields), and only through it, so
   the transport (plain, or sealed under the session key) is decided in one place. */
(function () {
  "use strict";

  var MIN_SCALE = 0.05;
  var MAX_SCALE = 16;
  var STEP = 1.25;
  var PAN_STEP = 48;

  function Viewer(root) {
    this.root = root;
    this.viewport = root.querySelector("[data-viewport]");
    this.image = root.querySelector("[data-viewer-image]");
    this.level = root.querySelector("[data-zoom-level]");
    this.scale = 1;
    this.x = 0;
    this.y = 0;
    this.fitted = true;
    this.drag = null;
    // The image shown and its view parameters (frame is 0-based, window a preset name).
    this.src = root.getAttribute("data-src") || this.image.getAttribute("src");
    this.frames = Number(root.getAttribute("data-frames")) || 1;
    this.frame = 0;
    this.window = "";
    this.listeners = [];
    this.bind();
    if (this.image.complete && this.image.naturalWidth) {
      this.fit();
    }
  }

  Viewer.prototype.size = function () {
    // The width/height attributes hold the scan's pixel size; naturalWidth once loaded.
    return {
      w: this.image.naturalWidth || Number(this.image.getAttribute("width")) || 1,
      h: this.image.naturalHeight || Number(this.image.getAttribute("height")) || 1,
    };
  };

  Viewer.prototype.apply = function () {
    var size = this.size();
    var vw = this.viewport.clientWidth;
    var vh = this.viewport.clientHeight;
    var w = size.w * this.scale;
    var h = size.h * this.scale;
    // Smaller than the viewport: centred. Larger: no edge may come inside the viewport.
    this.x = w <= vw ? (vw - w) / 2 : Math.min(0, Math.max(vw - w, this.x));
    this.y = h <= vh ? (vh - h) / 2 : Math.min(0, Math.max(vh - h, this.y));
    this.image.style.width = size.w + "px";
    this.image.style.height = size.h + "px";
    this.image.style.transform =
      "translate(" + this.x + "px, " + this.y + "px) scale(" + this.scale + ")";
    this.level.textContent = Math.round(this.scale * 100) + "%";
  };

  Viewer.prototype.fit = function () {
    var size = this.size();
    var vw = this.viewport.clientWidth;
    var vh = this.viewport.clientHeight;
    this.scale = Math.min(vw / size.w, vh / size.h, MAX_SCALE);
    this.fitted = true;
    this.apply();
  };

  // Zoom by `factor`, keeping the image point under (px, py) (viewport pixels) in place.
  Viewer.prototype.zoom = function (factor, px, py) {
    var next = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    if (px === undefined) {
      px = this.viewport.clientWidth / 2;
      py = this.viewport.clientHeight / 2;
    }
    this.x = px - (px - this.x) * (next / this.scale);
    this.y = py - (py - this.y) * (next / this.scale);
    this.scale = next;
    this.fitted = false;
    this.apply();
  };

  Viewer.prototype.pan = function (dx, dy) {
    this.x += dx;
    this.y += dy;
    this.fitted = false;
    this.apply();
  };

  Viewer.prototype.bind = function () {
    var self = this;
    var viewport = this.viewport;

    this.image.addEventListener("load", function () {
      if (self.fitted) {
        self.fit();
      } else {
        self.apply();
      }
    });
    window.addEventListener("resize", function () {
      if (self.fitted) {
        self.fit();
      } else {
        self.apply();
      }
    });

    this.root.querySelectorAll("[data-zoom]").forEach(function (button) {
      button.addEventListener("click", function () {
        var action = button.getAttribute("data-zoom");
        if (action === "in") {
          self.zoom(STEP);
        } else if (action === "out") {
          self.zoom(1 / STEP);
        } else {
          self.fit();
        }
      });
    });

    viewport.addEventListener(
      "wheel",
      function (event) {
        event.preventDefault();
        var rect = viewport.getBoundingClientRect();
        var factor = Math.pow(1.0015, -event.deltaY);
        self.zoom(factor, event.clientX - rect.left, event.clientY - rect.top);
      },
      { passive: false }
    );

    viewport.addEventListener("pointerdown", function (event) {
      // In drawing mode (static/js/review.js) a drag draws a box instead of panning.
      if (event.button !== 0 || self.root.classList.contains("viewer--drawing")) {
        return;
      }
      viewport.setPointerCapture(event.pointerId);
      self.drag = { id: event.pointerId, x: event.clientX, y: event.clientY };
      viewport.classList.add("viewer__viewport--dragging");
    });
    viewport.addEventListener("pointermove", function (event) {
      if (!self.drag || self.drag.id !== event.pointerId) {
        return;
      }
      self.pan(event.clientX - self.drag.x, event.clientY - self.drag.y);
      self.drag.x = event.clientX;
      self.drag.y = event.clientY;
    });
    function endDrag(event) {
      if (self.drag && self.drag.id === event.pointerId) {
        self.drag = null;
        viewport.classList.remove("viewer__viewport--dragging");
      }
    }
    viewport.addEventListener("pointerup", endDrag);
    viewport.addEventListener("pointercancel", endDrag);

    viewport.addEventListener("keydown", function (event) {
      var handled = true;
      switch (event.key) {
        case "+":
        case "=":
          self.zoom(STEP);
          break;
        case "-":
        case "_":
          self.zoom(1 / STEP);
          break;
        case "0":
          self.fit();
          break;
        case "PageDown":
        case "]":
          self.showFrame(self.frame + 1);
          break;
        case "PageUp":
        case "[":
          self.showFrame(self.frame - 1);
          break;
        // Arrows move the view the way the arrow points, so the image moves the other way.
        case "ArrowLeft":
          self.pan(PAN_STEP, 0);
          break;
        case "ArrowRight":
          self.pan(-PAN_STEP, 0);
          break;
        case "ArrowUp":
          self.pan(0, PAN_STEP);
          break;
        case "ArrowDown":
          self.pan(0, -PAN_STEP);
          break;
        default:
          handled = false;
      }
      if (handled) {
        event.preventDefault();
      }
    });
  };

  // `url` with the given query parameters set (empty ones left out).
  function withParams(url, params) {
    var parsed = new URL(url, window.location.origin);
    Object.keys(params).forEach(function (name) {
      var value = params[name];
      if (value !== "" && value !== null && value !== undefined) {
        parsed.searchParams.set(name, value);
      }
    });
    return parsed.pathname + parsed.search;
  }

  // The view parameters of the image on screen, for the image URL and restores alike.
  Viewer.prototype.viewParams = function () {
    return { frame: this.frames > 1 ? this.frame : "", window: this.window };
  };

  Viewer.prototype.displayUrl = function () {
    var params = this.viewParams();
    // The grid image is a stored PNG per frame: no window applies to it.
    if (this.root.hasAttribute("data-no-window")) {
      params.window = "";
    }
    return withParams(this.src, params);
  };

  Viewer.prototype.onChange = function (listener) {
    this.listeners.push(listener);
  };

  Viewer.prototype.changed = function () {
    var self = this;
    var handled = false;
    this.listeners.forEach(function (listener) {
      handled = listener(self) || handled;
    });
    if (!handled) {
      this.image.src = this.displayUrl();
    }
  };

  // The frame on screen changed (Cornerstone's wheel, cine, arrows): slider and label follow.
  Viewer.prototype.frameShown = function (frame) {
    this.frame = frame;
    this.root.setAttribute("data-frame", String(frame));
    var input = this.root.querySelector("[data-frame-input]");
    if (input) {
      input.value = String(frame + 1);
    }
    var label = this.root.querySelector("[data-frame-label]");
    if (label) {
      label.textContent = "Frame " + (frame + 1) + " of " + this.frames;
    }
  };

  Viewer.prototype.showFrame = function (frame) {
    if (this.frames < 2) {
      return;
    }
    var next = Math.max(0, Math.min(this.frames - 1, frame));
    if (next === this.frame) {
      return;
    }
    if (this.cs) {
      // Cornerstone holds every frame; its new-image event calls frameShown.
      this.cs.setFrame(next);
      return;
    }
    this.frame = next;
    this.root.setAttribute("data-frame", String(next));
    var input = this.root.querySelector("[data-frame-input]");
    if (input) {
      input.value = String(next + 1);
    }
    var label = this.root.querySelector("[data-frame-label]");
    if (label) {
      label.textContent = "Frame " + (next + 1) + " of " + this.frames;
    }
    this.changed();
  };

  function bindFrames(viewer) {
    var root = viewer.root;
    root.querySelectorAll("[data-frame-step]").forEach(function (button) {
      button.addEventListener("click", function () {
        viewer.showFrame(viewer.frame + Number(button.getAttribute("data-frame-step")));
      });
    });
    var input = root.querySelector("[data-frame-input]");
    if (input) {
      input.addEventListener("input", function () {
        viewer.showFrame(Number(input.value) - 1);
      });
    }
    var select = root.querySelector("[data-window-select]");
    if (select) {
      select.addEventListener("change", function () {
        viewer.window = select.value;
        root.setAttribute("data-window", select.value);
        viewer.changed();
      });
    }
  }

  // POST a restore (`fields`: format, frame, window, reason) with the CSRF token; resolves
  // to the image as a Blob, or rejects with an Error whose message is fit to show. The one
  // place restores are fetched (see the header comment).
  function fetchRestore(url, fields) {
    // Sealed under a session key agreed in this browser, decrypted only here (sealed.js,
    // loaded on the doctor's page).
    if (window.MedimgSealed) {
      return window.MedimgSealed.fetchRestore(url, fields);
    }
    var opts = {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": Medimg.csrfToken() },
      body: JSON.stringify(fields),
    };
    return fetch(url, opts).then(
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

  // Doctors only: the template for technicians has no restore control at all.
  function bindRestore(viewer) {
    var root = viewer.root;
    var restoreButton = root.querySelector("[data-restore]");
    if (!restoreButton) {
      return;
    }
    var redactedButton = root.querySelector("[data-show-redacted]");
    var message = root.querySelector("[data-restore-message]");
    var mode = document.querySelector("[data-view-mode]");
    var reasonInput = document.querySelector("[data-restore-reason]");
    var reasonRequired = reasonInput && reasonInput.hasAttribute("required");
    var image = viewer.image;
    var restoreBase = root.getAttribute("data-restore-url");
    var redactedAlt = image.getAttribute("alt");
    var objectUrl = null;
    var restored = false;

    function release() {
      if (objectUrl) {
        URL.revokeObjectURL(objectUrl);
        objectUrl = null;
      }
    }

    function showMode(isRestored) {
      restored = isRestored;
      mode.textContent = isRestored ? "Original (restored)" : "Redacted";
      mode.className = "badge " + (isRestored ? "badge--restored" : "badge--redacted");
      restoreButton.hidden = isRestored;
      redactedButton.hidden = !isRestored;
      root.classList.toggle("viewer--restored", isRestored);
    }

    // The reason, or null (with the field marked and focused) when one is required.
    function reason() {
      var text = reasonInput ? reasonInput.value.trim() : "";
      if (reasonRequired && !text) {
        reasonInput.setAttribute("aria-invalid", "true");
        reasonInput.focus();
        return null;
      }
      if (reasonInput) {
        reasonInput.removeAttribute("aria-invalid");
      }
      return text;
    }

    // The restore's JSON body: the view on screen, the format and the reason.
    function restoreFields(format, why) {
      var params = viewer.viewParams();
      var fields = { format: format };
      if (why) {
        fields.reason = why;
      }
      if (format !== "dicom") {
        if (params.frame !== "") {
          fields.frame = params.frame;
        }
        if (params.window) {
          fields.window = params.window;
        }
      }
      return fields;
    }

    // With Cornerstone (static/vendor/viewer/viewer.js) the original goes to its viewport:
    // one restore as DICOM for a DICOM file (every frame, real values), else PNG per frame.
    function restoreInViewer(why) {
      restoreButton.disabled = true;
      message.textContent = "Restoring the original…";
      return viewer.cs
        .restore(function (fields) {
          return fetchRestore(restoreBase, fields);
        }, why)
        .then(function () {
          var wasRestored = restored;
          root.setAttribute("data-restored", "true");
          showMode(true);
          message.textContent = "Showing the restored original. This restore was recorded.";
          if (!wasRestored) {
            redactedButton.focus();
          }
        })
        .catch(function (err) {
          message.textContent = "Restore failed: " + err.message;
        })
        .finally(function () {
          restoreButton.disabled = false;
        });
    }

    function restore(why) {
      if (viewer.cs) {
        return restoreInViewer(why);
      }
      restoreButton.disabled = true;
      message.textContent = "Restoring the original…";
      return fetchRestore(restoreBase, restoreFields("png", why))
        .then(function (blob) {
          release();
          objectUrl = URL.createObjectURL(blob);
          image.addEventListener(
            "load",
            function () {
              image.setAttribute("data-restored", "true");
            },
            { once: true }
          );
          image.src = objectUrl;
          image.alt = redactedAlt.replace(/^Redacted image/, "Restored original image");
          var wasRestored = restored;
          showMode(true);
          message.textContent = "Showing the restored original. This restore was recorded.";
          if (!wasRestored) {
            redactedButton.focus();
          }
        })
        .catch(function (err) {
          message.textContent = "Restore failed: " + err.message;
        })
        .finally(function () {
          restoreButton.disabled = false;
        });
    }

    restoreButton.addEventListener("click", function () {
      var why = reason();
      if (why === null) {
        message.textContent = "Enter the reason for restoring the original first.";
        return;
      }
      restore(why);
    });

    redactedButton.addEventListener("click", function () {
      if (viewer.cs) {
        root.removeAttribute("data-restored");
        viewer.cs.showRedacted();
        showMode(false);
        message.textContent = "Showing the redacted image.";
        restoreButton.focus();
        return;
      }
      image.removeAttribute("data-restored");
      image.src = viewer.displayUrl();
      image.alt = redactedAlt;
      release();
      showMode(false);
      message.textContent = "Showing the redacted image.";
      restoreButton.focus();
    });

    // Another frame or window while the original is shown: restore that one (audited too).
    viewer.onChange(function () {
      if (!restored || viewer.cs) {
        return false;
      }
      image.removeAttribute("data-restored");
      restore(reasonInput ? reasonInput.value.trim() : "");
      return true;
    });

    document.querySelectorAll("[data-download]").forEach(function (button) {
      button.addEventListener("click", function () {
        var format = button.getAttribute("data-download");
        var why = reason();
        if (why === null) {
          message.textContent = "Enter the reason for restoring the original first.";
          return;
        }
        button.disabled = true;
        message.textContent = "Preparing the download…";
        fetchRestore(restoreBase, restoreFields(format, why))
          .then(function (blob) {
            var url = URL.createObjectURL(blob);
            var link = document.createElement("a");
            link.href = url;
            link.download = button.getAttribute("data-filename");
            document.body.appendChild(link);
            link.click();
            link.remove();
            // Give the browser a moment to start the download before the URL goes.
            window.setTimeout(function () {
              URL.revokeObjectURL(url);
            }, 10000);
            message.textContent = "Downloaded " + link.download + ". This restore was recorded.";
          })
          .catch(function (err) {
            message.textContent = "Download failed: " + err.message;
          })
          .finally(function () {
            button.disabled = false;
          });
      });
    });

    // The restored pixels must not outlive the page in memory.
    window.addEventListener("pagehide", function () {
      release();
      if (viewer.cs) {
        viewer.cs.forget();
      }
    });
  }

  // The Cornerstone viewer (static/vendor/viewer/viewer.js, built by `make install`) draws the
  // image when it loads; without it (or if it fails) the plain <img> viewer above stays. The
  // technician's box drawing (review.js) works on the plain viewer, shown while drawing.
  function mountCornerstone(viewer) {
    if (!window.MedimgCornerstone) {
      return;
    }
    var root = viewer.root;
    new MutationObserver(function () {
      if (root.classList.contains("viewer--drawing")) {
        viewer.fit();
      }
    }).observe(root, { attributes: true, attributeFilter: ["class"] });
    window.MedimgCornerstone.mount(viewer).catch(function (err) {
      viewer.cs = null;
      root.classList.remove("viewer--cs");
      var shell = root.querySelector("[data-cs-viewer]");
      if (shell) {
        shell.remove();
      }
      viewer.fit();
      if (window.console) {
        window.console.error("Cornerstone viewer unavailable:", err);
      }
    });
  }

  document.querySelectorAll("[data-viewer]").forEach(function (root) {
    var viewer = new Viewer(root);
    root.medimgViewer = viewer; // for static/js/review.js
    bindFrames(viewer);
    bindRestore(viewer);
    mountCornerstone(viewer);
  });
})();
