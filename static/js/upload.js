/* Technician uploads: drop files on the area (or choose them with the file input, which
   is the keyboard path). Each file is its own POST /api/patients/{id}/images/ so each gets
   its own progress bar; two run at a time. After a file is stored its processing status
   is polled until completed or failed. */
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

  function formatSize(bytes) {
    if (bytes < 1024) {
      return bytes + " B";
    }
    if (bytes < 1024 * 1024) {
      return (bytes / 1024).toFixed(0) + " KB";
    }
    return (bytes / (1024 * 1024)).toFixed(1) + " MB";
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

  function stored(item, scan) {
    item.progress.value = 100;
    item.progress.hidden = true;
    var status = Medimg.status.create(scan, Medimg.urlFor(statusTemplate, scan.id));
    var link = Medimg.element("a", "upload__link", "Open image");
    link.href = Medimg.urlFor(scanTemplate, scan.id);
    item.state.replaceChildren(status, " ", link);
    item.row.setAttribute("data-scan-id", String(scan.id));
    var refresh = document.querySelector("[data-refresh-list]");
    if (refresh) {
      refresh.hidden = false;
    }
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
      queue.push(addRow(file));
    });
    next();
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
    if (event.dataTransfer && event.dataTransfer.files.length) {
      enqueue(event.dataTransfer.files);
    }
  });
  // A file dropped beside the area must not make the browser navigate away to it.
  ["dragover", "drop"].forEach(function (type) {
    window.addEventListener(type, function (event) {
      event.preventDefault();
    });
  });
})();
