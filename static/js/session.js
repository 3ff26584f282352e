/* Sign-out after inactivity. The server ends a session SESSION_COOKIE_AGE seconds after its
   last request (MEDIMG_SESSION_IDLE_MINUTES); this script warns a minute before, offers
   "Stay signed in" (one request to the server, which renews the session), and signs out
   when the time is up. Activity is shared between tabs through localStorage, so a tab left
   open in the background does not sign out a user who is working in another one.

   Work that makes no request (zooming, panning, windowing and scrolling frames in the viewer,
   typing a note) is activity too: a pointer press or drag, the wheel, a key or typing renews
   the session on the server (the keep-alive request, at most every RENEW_SECONDS), so a doctor
   reading an image is not signed out. After an idle sign-out the login page brings the user
   back to the page they were on (next=); a draft note is kept by notes.js. */
(function () {
  "use strict";

  var body = document.body;
  var idleSeconds = Number(body.getAttribute("data-session-idle"));
  var dialog = document.querySelector("[data-idle-dialog]");
  var form = document.querySelector("[data-logout-form]");
  if (!idleSeconds || !dialog || !form) {
    return;
  }
  var WARN_SECONDS = Math.min(60, Math.floor(idleSeconds / 2));
  var KEY = "medimg-last-activity";
  // Renew often enough that the warning never comes while the user is working.
  var RENEW_SECONDS = Math.min(30, Math.floor(idleSeconds / 4));
  var countdown = dialog.querySelector("[data-idle-countdown]");
  var lastLocal = Date.now();
  var tick = null;
  var renewing = false;

  function lastActivity() {
    var shared = 0;
    try {
      shared = Number(window.localStorage.getItem(KEY)) || 0;
    } catch (err) {
      shared = 0;
    }
    return Math.max(lastLocal, shared);
  }

  // The server saw a request from us just now (page load, API call, keep-alive).
  function touched() {
    lastLocal = Date.now();
    try {
      window.localStorage.setItem(KEY, String(lastLocal));
    } catch (err) {
      /* No storage: this tab keeps its own count. */
    }
  }

  // The login page after an idle sign-out, bringing the user back here afterwards.
  function idleLoginUrl() {
    var here = window.location.pathname + window.location.search;
    var url = "/login/?idle=1";
    return here === "/" ? url : url + "&next=" + encodeURIComponent(here);
  }

  function signOut() {
    window.clearInterval(tick);
    // Scripts keep what must survive (a draft note) before the page goes.
    document.dispatchEvent(new CustomEvent("medimg:idle-signout"));
    var next = document.createElement("input");
    next.type = "hidden";
    next.name = "next";
    next.value = idleLoginUrl();
    form.appendChild(next);
    form.submit();
  }

  function renew() {
    renewing = true;
    return fetch(body.getAttribute("data-keepalive-url"), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          // Too late: the server already ended the session.
          document.dispatchEvent(new CustomEvent("medimg:idle-signout"));
          window.location.assign(idleLoginUrl());
          return false;
        }
        touched();
        return true;
      })
      .finally(function () {
        renewing = false;
      });
  }

  function stay() {
    renew()
      .then(function (alive) {
        if (alive && dialog.open) {
          dialog.close();
        }
      })
      .catch(function () {
        countdown.textContent = "a few";
      });
  }

  // The user did something on the page. Renews the server's session when the last request
  // is older than RENEW_SECONDS; inside the warning dialog only its buttons count.
  function active(event) {
    if (dialog.open || dialog.contains(event.target) || renewing) {
      return;
    }
    if (event.type === "pointermove" && !event.buttons) {
      return; // A pointer resting or passing over is not work; a drag (window/level, pan) is.
    }
    if (Date.now() - lastActivity() >= RENEW_SECONDS * 1000) {
      renew().catch(function () {
        /* Offline for a moment: the next activity or "Stay signed in" tries again. */
      });
    }
  }

  function check() {
    var left = Math.round((lastActivity() + idleSeconds * 1000 - Date.now()) / 1000);
    if (left <= 0) {
      signOut();
      return;
    }
    if (left <= WARN_SECONDS) {
      countdown.textContent = String(left);
      if (!dialog.open) {
        dialog.showModal();
        dialog.querySelector("[data-idle-stay]").focus();
      }
    } else if (dialog.open) {
      // Another tab kept the session alive.
      dialog.close();
    }
  }

  dialog.querySelector("[data-idle-stay]").addEventListener("click", stay);
  dialog.querySelector("[data-idle-logout]").addEventListener("click", signOut);
  // Escape closes a modal dialog; here it means "I'm here".
  dialog.addEventListener("cancel", function (event) {
    event.preventDefault();
    stay();
  });
  // Requests made by the page scripts renew the session on the server too.
  document.addEventListener("medimg:server-activity", touched);
  // Capture phase and passive: the viewer's own handlers may stop these events.
  ["pointerdown", "pointermove", "wheel", "keydown", "input"].forEach(function (type) {
    document.addEventListener(type, active, { capture: true, passive: true });
  });
  // Signing out on purpose clears the drafts this tab kept (notes.js); an idle sign-out
  // (form.submit() above, which fires no submit event) keeps them.
  form.addEventListener("submit", function () {
    document.dispatchEvent(new CustomEvent("medimg:signout"));
  });

  touched();
  tick = window.setInterval(check, 1000);
  // For the browser tests: how a page reports its own state.
  body.setAttribute("data-idle-ready", "true");
})();
