/* Notes on the patient record: GET /api/patients/{id}/notes/ (every page, oldest first)
   and POST to add one.

   A note being written is kept as a draft in this tab's sessionStorage, keyed by user and
   patient reference, as the user types, so an idle sign-out does not lose it: after logging
   in again (session.js brings the user back to this page) the text is put back. A note may
   hold patient data, so it is not kept in localStorage (which stays on disk and is shared by
   every tab and every later user of the browser profile): sessionStorage belongs to this tab
   only, is never sent to the server, and goes when the tab is closed. It is removed when the
   note is saved, when the user signs out on purpose, and after DRAFT_HOURS. */
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
  var draftStatus = form.querySelector("[data-notes-draft-status]");
  var DRAFT_PREFIX = "medimg-note-draft:";
  var DRAFT_HOURS = 12;
  var draftKey = DRAFT_PREFIX + section.getAttribute("data-notes-draft");

  function draftStore() {
    try {
      return window.sessionStorage;
    } catch (err) {
      return null; // Storage refused (privacy settings): drafts are not kept.
    }
  }

  function draftSave() {
    var store = draftStore();
    if (!store) {
      return;
    }
    try {
      if (textarea.value.trim()) {
        store.setItem(draftKey, JSON.stringify({ text: textarea.value, saved: Date.now() }));
      } else {
        store.removeItem(draftKey);
      }
    } catch (err) {
      /* Storage full: the draft is not kept. */
    }
  }

  function draftClear(all) {
    var store = draftStore();
    if (!store) {
      return;
    }
    if (!all) {
      store.removeItem(draftKey);
      return;
    }
    for (var i = store.length - 1; i >= 0; i -= 1) {
      var key = store.key(i);
      if (key && key.indexOf(DRAFT_PREFIX) === 0) {
        store.removeItem(key);
      }
    }
  }

  function draftRestore() {
    var store = draftStore();
    var raw = store ? store.getItem(draftKey) : null;
    if (!raw) {
      return;
    }
    var draft = null;
    try {
      draft = JSON.parse(raw);
    } catch (err) {
      draft = null;
    }
    if (!draft || typeof draft.text !== "string" ||
        Date.now() - Number(draft.saved) > DRAFT_HOURS * 3600 * 1000) {
      store.removeItem(draftKey);
      return;
    }
    if (!textarea.value) {
      textarea.value = draft.text;
      draftStatus.textContent = "Your unsaved note was restored. Add it, or clear the text to discard it.";
      draftStatus.hidden = false;
    }
  }

  draftRestore();
  textarea.addEventListener("input", draftSave);
  document.addEventListener("medimg:idle-signout", draftSave);
  document.addEventListener("medimg:signout", function () {
    draftClear(true);
  });

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
        draftClear(false);
        draftStatus.hidden = true;
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
