/* Sign-out after inactivity. The server ends a session SESSION_COOKIE_AGE seconds after its
   last request (MEDIMG_SESSION_IDLE_MINUTES); this script warns a minute before, offers
   "Stay signed in" (one request to the server, which renews the session), and signs out
   when the time is up. Activity is shared between tabs through localStorage, so a tab left
   open in the background does not sign out a user who is working in another one. */
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
  var countdown = dialog.querySelector("[data-idle-countdown]");
  var lastLocal = Date.now();
  var tick = null;

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

  function signOut() {
    window.clearInterval(tick);
    var next = document.createElement("input");
    next.type = "hidden";
    next.name = "next";
    next.value = "/login/?idle=1";
    form.appendChild(next);
    form.submit();
  }

  function stay() {
    fetch(body.getAttribute("data-keepalive-url"), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          // Too late: the server already ended the session.
          window.location.assign("/login/?idle=1");
          return;
        }
        touched();
        if (dialog.open) {
          dialog.close();
        }
      })
      .catch(function () {
        countdown.textContent = "a few";
      });
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

  touched();
  tick = window.setInterval(check, 1000);
  // For the browser tests: how a page reports its own state.
  body.setAttribute("data-idle-ready", "true");
})();
