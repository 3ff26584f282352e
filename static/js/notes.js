/* Notes on the patient record: GET /api/patients/{id}/notes/ (every page, oldest first)
   and POST to add one. */
(function () {
  "use strict";

  var section = document.querySelector("[data-notes]");
  if (!section) {
    return;
  }
  var url = section.getAttribute("data-notes-url");
  var list = section.querySelector("[data-notes-list]");
  var form = section.querySelector("[data-notes-form]");
  var errorBox = section.querySelector("[data-notes-error]");
  var textarea = form.querySelector("textarea");
  var button = form.querySelector('button[type="submit"]');
  var dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function noteItem(note) {
    var item = Medimg.element("li", "note");
    item.setAttribute("data-note", "");
    var meta = Medimg.element("p", "note__meta");
    var time = Medimg.element("time", null, dateFormat.format(new Date(note.created_at)));
    time.setAttribute("datetime", note.created_at);
    meta.append(Medimg.element("strong", null, note.author || "Unknown author"), " · ", time);
    item.append(meta, Medimg.element("p", "note__text", note.text));
    return item;
  }

  function placeholder(text) {
    var item = Medimg.element("li", "empty", text);
    item.setAttribute("data-notes-placeholder", "");
    return item;
  }

  function load(pageUrl, notes) {
    return Medimg.fetchJSON(pageUrl).then(function (page) {
      notes = notes.concat(page.results);
      return page.next ? load(page.next, notes) : notes;
    });
  }

  load(url, []).then(
    function (notes) {
      list.replaceChildren();
      if (!notes.length) {
        list.appendChild(placeholder("No notes yet."));
      }
      notes.forEach(function (note) {
        list.appendChild(noteItem(note));
      });
    },
    function (err) {
      list.replaceChildren(placeholder("Notes could not be loaded: " + err.message));
    }
  );

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
    textarea.setAttribute("aria-invalid", message ? "true" : "false");
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = textarea.value.trim();
    if (!text) {
      showError("Write the note first.");
      textarea.focus();
      return;
    }
    button.disabled = true;
    Medimg.fetchJSON(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: text }),
    })
      .then(function (note) {
        showError("");
        textarea.value = "";
        var empty = list.querySelector("[data-notes-placeholder]");
        if (empty) {
          empty.remove();
        }
        list.appendChild(noteItem(note));
      }, function (err) {
        showError(err.message);
      })
      .finally(function () {
        button.disabled = false;
      });
  });
})();
