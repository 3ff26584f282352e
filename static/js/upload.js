/* Technician uploads: drop files or a folder of a series on the area (or choose them with
   the file input, which is the keyboard path). Each file is its own POST
   /api/patients/{id}/images/ so each gets its own progress bar; two run at a time. After a
   file is stored its processing status is polled until completed or failed.

   Before anything is sent, each file's type is read from its first bytes (as the server
   does) and its size checked against the server's limit for that kind (data-max-*-bytes on
   the drop area), so a file the server would refuse is refused here at once, with the limit
   named, instead of after a long upload. The server still checks everything. */
(function () {
  "use strict";

  var PARALLEL = 2;
  var zone = document.querySelector("[data-dropzone]");
  if (!zone) {
    return;
  }
  var input = zone.querySelector('input[type="file"]');
  var list = document.querySelector("[data-upload-list]");
  var uploadUrl = zone.getAttribute("data-upload-url");
  var statusTemplate = zone.getAttribute("data-status-url-template");
  var scanTemplate = zone.getAttribute("data-scan-url-template");
  var queue = [];
  var running = 0;
  var limits = {
    image: Number(zone.getAttribute("data-max-image-bytes")) || 0,
    dicom: Number(zone.getAttribute("data-max-dicom-bytes")) || 0,
    archive: Number(zone.getAttribute("data-max-archive-bytes")) || 0,
  };
  var KINDS = {
    jpeg: { limit: "image", words: "JPEG and PNG images" },
    png: { limit: "image", words: "JPEG and PNG images" },
    dicom: { limit: "dicom", words: "DICOM files" },
    zip: { limit: "archive", words: "zip archives" },
  };
  // Files a folder of a series holds beside its images: nothing to upload.
  var SKIPPED = /^(\.|dicomdir$|thumbs\.db$|desktop\.ini$)/i;

  function formatSize(bytes) {
    if (bytes < 1024) {
      return bytes + " B";
    }
    if (bytes < 1024 * 1024) {
      return (bytes / 1024).toFixed(0) + " KB";
    }
    if (bytes < 1024 * 1024 * 1024) {
      return (bytes / (1024 * 1024)).toFixed(1) + " MB";
    }
    return (bytes / (1024 * 1024 * 1024)).toFixed(1) + " GB";
  }

  // The kind from the content, as the server decides it: never from the name.
  function sniff(bytes) {
    function starts(magic, offset) {
      for (var i = 0; i < magic.length; i += 1) {
        if (bytes[(offset || 0) + i] !== magic[i]) {
          return false;
        }
      }
      return true;
    }
    if (starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) {
      return "png";
    }
    if (starts([0xff, 0xd8, 0xff])) {
      return "jpeg";
    }
    if (bytes.length >= 132 && starts([0x44, 0x49, 0x43, 0x4d], 128)) {
      return "dicom";
    }
    if (starts([0x50, 0x4b, 0x03, 0x04])) {
      return "zip";
    }
    return null;
  }

  // Resolves to null when the file may be sent, else the message saying why not.
  function refusal(file) {
    if (!file.size) {
      return Promise.resolve("The file is empty.");
    }
    return file
      .slice(0, 132)
      .arrayBuffer()
      .then(function (buffer) {
        var kind = sniff(new Uint8Array(buffer));
        if (!kind) {
          return "Not a JPEG, PNG or DICOM image, nor a zip of them: nothing was sent.";
        }
        var limit = limits[KINDS[kind].limit];
        if (limit && file.size > limit) {
          return (
            "The file is " + formatSize(file.size) + "; " + KINDS[kind].words +
            " may be at most " + formatSize(limit) + ". Nothing was sent."
          );
        }
        return null;
      });
  }

  function addRow(file) {
    var row = Medimg.element("li", "upload");
    row.setAttribute("data-upload", "");
    var head = Medimg.element("div", "upload__head");
    head.append(
      Medimg.element("span", "upload__name", file.name),
      Medimg.element("span", "upload__size", formatSize(file.size))
    );
    var progress = Medimg.element("progress", "upload__progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", "Upload progress of " + file.name);
    var state = Medimg.element("div", "upload__state");
    state.setAttribute("data-upload-state", "");
    state.textContent = "Waiting…";
    row.append(head, progress, state);
    list.prepend(row);
    return { file: file, row: row, progress: progress, state: state };
  }

  function fail(item, message) {
    item.row.classList.add("upload--failed");
    item.progress.hidden = true;
    item.state.replaceChildren(
      Medimg.element("span", "badge badge--failed", "Refused"),
      " ",
      Medimg.element("span", "upload__error", message)
    );
  }

  // The page's image list follows the uploads: once a file is stored, the list card is read
  // again from the server (one request for a burst of uploads) and swapped in, its statuses
  // polled like on a fresh page. If that fails, the "Show new uploads" link is offered.
  var listCard = document.querySelector("[data-scan-list-card]");
  var refreshTimer = null;

  function showRefreshLink() {
    var refresh = document.querySelector("[data-refresh-list]");
    if (refresh) {
      refresh.hidden = false;
    }
  }

  function refreshList() {
    if (!listCard || !window.DOMParser) {
      showRefreshLink();
      return;
    }
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(function () {
      fetch(window.location.pathname + window.location.search, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          document.dispatchEvent(new Event("medimg:server-activity"));
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser()
            .parseFromString(html, "text/html")
            .querySelector("[data-scan-list-card]");
          if (!fresh) {
            throw new Error("no list");
          }
          listCard.replaceChildren.apply(
            listCard,
            Array.prototype.map.call(fresh.childNodes, function (node) {
              return document.importNode(node, true);
            })
          );
          listCard.querySelectorAll("[data-scan-status]").forEach(function (node) {
            if (!Medimg.status.TERMINAL[node.getAttribute("data-status")]) {
              Medimg.status.watch(node);
            }
          });
          listCard.setAttribute("data-list-refreshed", String(Date.now()));
        })
        .catch(showRefreshLink);
    }, 800);
  }

  if (listCard) {
    // A row that was still processing when the list was read: read it again when it is done
    // (its regions and review link appear then).
    listCard.addEventListener("medimg:status-done", refreshList);
  }

  function stored(item, scan) {
    item.progress.value = 100;
    item.progress.hidden = true;
    var status = Medimg.status.create(scan, Medimg.urlFor(statusTemplate, scan.id));
    var link = Medimg.element("a", "upload__link", "Open image");
    link.href = Medimg.urlFor(scanTemplate, scan.id);
    item.state.replaceChildren(status, " ", link);
    item.row.setAttribute("data-scan-id", String(scan.id));
    refreshList();
    if (!Medimg.status.TERMINAL[scan.status]) {
      Medimg.status.watch(status);
    }
  }

  function send(item) {
    running += 1;
    var form = new FormData();
    form.append("files", item.file, item.file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", Medimg.csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        var percent = Math.round((event.loaded / event.total) * 100);
        item.progress.value = percent;
        item.state.textContent = "Uploading… " + percent + "%";
      }
    });
    xhr.upload.addEventListener("load", function () {
      item.progress.value = 100;
      item.state.textContent = "Checking and storing…";
    });
    xhr.addEventListener("load", function () {
      var body = Medimg.parseJSON(xhr.responseText);
      if (xhr.status === 201 && Array.isArray(body) && body.length) {
        stored(item, body[0]);
      } else {
        fail(item, Medimg.errorMessage(xhr.status, body));
      }
    });
    xhr.addEventListener("error", function () {
      fail(item, Medimg.errorMessage(0, null));
    });
    xhr.addEventListener("loadend", function () {
      running -= 1;
      next();
    });
    item.state.textContent = "Uploading… 0%";
    xhr.send(form);
  }

  function next() {
    while (running < PARALLEL && queue.length) {
      send(queue.shift());
    }
  }

  function enqueue(files) {
    Array.prototype.forEach.call(files, function (file) {
      var item = addRow(file);
      item.state.textContent = "Checking…";
      refusal(file).then(
        function (message) {
          if (message) {
            fail(item, message);
            return;
          }
          item.state.textContent = "Waiting…";
          queue.push(item);
          next();
        },
        function () {
          fail(item, "The file could not be read.");
        }
      );
    });
  }

  // Every file under a dropped folder (a series), depth first, in name order.
  function filesUnder(entry) {
    if (entry.isFile) {
      return new Promise(function (resolve) {
        entry.file(
          function (file) {
            resolve(SKIPPED.test(file.name) ? [] : [file]);
          },
          function () {
            resolve([]);
          }
        );
      });
    }
    if (!entry.isDirectory) {
      return Promise.resolve([]);
    }
    var reader = entry.createReader();
    var entries = [];
    // readEntries answers in batches (100 in Chromium) until it answers with none.
    function readAll() {
      return new Promise(function (resolve) {
        reader.readEntries(
          function (batch) {
            if (!batch.length) {
              resolve();
              return;
            }
            entries = entries.concat(Array.prototype.slice.call(batch));
            resolve(readAll());
          },
          function () {
            resolve();
          }
        );
      });
    }
    return readAll().then(function () {
      entries.sort(function (a, b) {
        return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
      });
      return Promise.all(entries.map(filesUnder)).then(function (lists) {
        return [].concat.apply([], lists);
      });
    });
  }

  function dropped(transfer) {
    var items = transfer.items ? Array.prototype.slice.call(transfer.items) : [];
    var entries = items
      .filter(function (item) {
        return item.kind === "file" && typeof item.webkitGetAsEntry === "function";
      })
      .map(function (item) {
        return item.webkitGetAsEntry();
      })
      .filter(Boolean);
    if (!entries.length) {
      // No entry API: plain files only.
      return Promise.resolve(Array.prototype.slice.call(transfer.files || []));
    }
    return Promise.all(entries.map(filesUnder)).then(function (lists) {
      return [].concat.apply([], lists);
    });
  }

  input.addEventListener("change", function () {
    enqueue(input.files);
    input.value = "";
  });

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      zone.classList.add("dropzone--active");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      if (type === "dragleave" && zone.contains(event.relatedTarget)) {
        return;
      }
      zone.classList.remove("dropzone--active");
    });
  });
  zone.addEventListener("drop", function (event) {
    if (!event.dataTransfer) {
      return;
    }
    // The entries must be taken now: the DataTransfer is emptied once the event returns.
    dropped(event.dataTransfer).then(function (files) {
      if (files.length) {
        enqueue(files);
      }
    });
  });
  // A file dropped beside the area must not make the browser navigate away to it.
  ["dragover", "drop"].forEach(function (type) {
    window.addEventListener(type, function (event) {
      event.preventDefault();
    });
  });
})();
