/* medimg: helpers shared by the page scripts (loaded first, all with `defer`).
   No inline scripts anywhere: data reaches the scripts through data-* attributes and
   json_script tags, so a strict Content-Security-Policy can forbid inline code. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function jsonData(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : {};
  }

  // URLs are rendered by Django with a 0 as the id (e.g. /api/images/0/status/); put the
  // real id in its place so the scripts never hard-code a route.
  // The last "/0/" is the id, whatever path follows it (/api/segmentations/0/overlay/).
  function urlFor(template, id) {
    return template.replace(/\/0\/(?!.*\/0\/)/, "/" + encodeURIComponent(id) + "/");
  }

  // The API's error body is {"error": {"code", "message"}}; anything else gets a plain text.
  function errorMessage(status, body) {
    if (body && body.error && body.error.message) {
      return body.error.message;
    }
    if (status === 0) {
      return "The server could not be reached.";
    }
    if (status === 413) {
      return "The file is too large.";
    }
    return "The request failed (HTTP " + status + ").";
  }

  function parseJSON(text) {
    try {
      return JSON.parse(text);
    } catch (err) {
      return null;
    }
  }

  // fetch() with the session cookie and CSRF token; resolves to the parsed JSON body or
  // rejects with an Error whose message is fit to show.
  function fetchJSON(url, options) {
    var opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign(
      { Accept: "application/json", "X-CSRFToken": csrfToken() },
      opts.headers || {}
    );
    return fetch(url, opts).then(
      function (response) {
        // The server renewed the session (static/js/session.js restarts its count).
        document.dispatchEvent(new Event("medimg:server-activity"));
        return response.text().then(function (text) {
          var body = parseJSON(text);
          if (!response.ok) {
            throw new Error(errorMessage(response.status, body));
          }
          return body;
        });
      },
      function () {
        throw new Error(errorMessage(0, null));
      }
    );
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = text;
    }
    return node;
  }

  window.Medimg = {
    csrfToken: csrfToken,
    jsonData: jsonData,
    urlFor: urlFor,
    errorMessage: errorMessage,
    parseJSON: parseJSON,
    fetchJSON: fetchJSON,
    element: element,
  };
})();
