/* Image viewer: zoom and pan with a CSS transform (pointer drag, wheel, keyboard + - 0 and
   arrows), and for doctors "Restore original", which fetches GET /api/images/{id}/restore/
   (audited by the API) and shows the original in place of the redacted image. */
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
      if (event.button !== 0) {
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

  // Doctors only: the template for technicians has no restore button at all.
  function bindRestore(viewer) {
    var root = viewer.root;
    var restoreButton = root.querySelector("[data-restore]");
    if (!restoreButton) {
      return;
    }
    var redactedButton = root.querySelector("[data-show-redacted]");
    var message = root.querySelector("[data-restore-message]");
    var mode = document.querySelector("[data-view-mode]");
    var image = viewer.image;
    var redactedSrc = root.getAttribute("data-redacted-src");
    var redactedAlt = image.getAttribute("alt");
    var objectUrl = null;

    function release() {
      if (objectUrl) {
        URL.revokeObjectURL(objectUrl);
        objectUrl = null;
      }
    }

    function showMode(restored) {
      mode.textContent = restored ? "Original (restored)" : "Redacted";
      mode.className = "badge " + (restored ? "badge--restored" : "badge--redacted");
      restoreButton.hidden = restored;
      redactedButton.hidden = !restored;
      root.classList.toggle("viewer--restored", restored);
    }

    restoreButton.addEventListener("click", function () {
      restoreButton.disabled = true;
      message.textContent = "Restoring the original…";
      fetch(root.getAttribute("data-restore-url"), { credentials: "same-origin" })
        .then(function (response) {
          if (response.ok) {
            return response.blob();
          }
          return response.text().then(function (text) {
            throw new Error(Medimg.errorMessage(response.status, Medimg.parseJSON(text)));
          });
        }, function () {
          throw new Error(Medimg.errorMessage(0, null));
        })
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
          showMode(true);
          message.textContent = "Showing the restored original. This restore was recorded.";
          redactedButton.focus();
        })
        .catch(function (err) {
          message.textContent = "Restore failed: " + err.message;
        })
        .finally(function () {
          restoreButton.disabled = false;
        });
    });

    redactedButton.addEventListener("click", function () {
      image.removeAttribute("data-restored");
      image.src = redactedSrc;
      image.alt = redactedAlt;
      release();
      showMode(false);
      message.textContent = "Showing the redacted image.";
      restoreButton.focus();
    });

    // The restored pixels must not outlive the page in memory.
    window.addEventListener("pagehide", release);
  }

  document.querySelectorAll("[data-viewer]").forEach(function (root) {
    bindRestore(new Viewer(root));
  });
})();
