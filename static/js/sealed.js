/* Sealed restores and decrypted regions in the browser (WebCrypto): the restored original and
   each region crop are decrypted here, in the page, and nowhere in between.

   1. Key exchange with /api/auth/key-exchange/ (session cookie and CSRF token): an X25519 key
      pair made by crypto.subtle (not extractable), the server's public key from GET, ours
      sent with POST. HKDF-SHA256 over the shared secret, exactly as accounts/keyexchange.py:
        salt = "medimg/key-exchange/v1"
        info = "medimg/session-key/v1" || lp(group) || lp(user id) || lp(exchange id)
               || lp(server public key) || lp(client public key)   (lp = 4-byte length || bytes)
        48 bytes out: the AES-256-GCM key (32), then the key id (16, hex). The server's key id
        must equal ours: that is the key confirmation.
   2. The restore POST carries X-Medimg-Seal: <key id> and X-Medimg-Seal-Nonce: <16 random
      bytes, hex, new per request>; the response body is
        "MSEAL" | 1 | len(key id) | key id | nonce (12) | ciphertext || tag (16)
      opened with AES-GCM, associated data = that header || transfer_aad("restore", ...):
        "medimg/sealed-restore/v1\n" + {"enhance":..,"format":..,"frame":..,"nonce":..,"scan":..}
      (keys sorted, no spaces), built from the URL, JSON body and nonce this page sent, so a
      body sealed for another scan, frame, format or request does not open (and the server
      refuses a nonce it has seen). A region crop (GET /api/regions/{id}/) is the same with
      "medimg/sealed-region/v1\n" + {"nonce":..,"region":..}.
   The session key lives in this page's memory only, until the server's expires_in; an expired
   or revoked key (401 session_key_expired) is replaced once by a new exchange. */
(function () {
  "use strict";

  var EXCHANGE_URL = "/api/auth/key-exchange/";
  var ME_URL = "/api/auth/me/";
  var SEAL_HEADER = "X-Medimg-Seal";
  var NONCE_HEADER = "X-Medimg-Seal-Nonce";
  var GROUP = "x25519";
  var MAGIC = "MSEAL";
  var NONCE_BYTES = 12;
  var encoder = new TextEncoder();
  var current = null; // {keyId, key (CryptoKey), expiresAt}

  function bytes(text) {
    return encoder.encode(text);
  }

  function concat(parts) {
    var total = parts.reduce(function (n, part) {
      return n + part.length;
    }, 0);
    var out = new Uint8Array(total);
    var offset = 0;
    parts.forEach(function (part) {
      out.set(part, offset);
      offset += part.length;
    });
    return out;
  }

  function lp(part) {
    var n = part.length;
    return concat([new Uint8Array([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]), part]);
  }

  function fromBase64(text) {
    var raw = atob(text);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) {
      out[i] = raw.charCodeAt(i);
    }
    return out;
  }

  function toBase64(data) {
    var raw = "";
    for (var i = 0; i < data.length; i++) {
      raw += String.fromCharCode(data[i]);
    }
    return btoa(raw);
  }

  function hex(data) {
    return Array.prototype.map
      .call(data, function (b) {
        return (b < 16 ? "0" : "") + b.toString(16);
      })
      .join("");
  }

  function supported() {
    return Boolean(window.crypto && window.crypto.subtle && window.TextEncoder);
  }

  // The HKDF info of accounts/keyexchange.py, byte for byte.
  function hkdfInfo(userId, exchangeId, serverPublic, clientPublic) {
    return concat([
      bytes("medimg/session-key/v1"),
      lp(bytes(GROUP)),
      lp(bytes(String(userId))),
      lp(bytes(exchangeId)),
      lp(serverPublic),
      lp(clientPublic),
    ]);
  }

  function exchange() {
    var subtle = window.crypto.subtle;
    var state = {};
    return Promise.all([
      Medimg.fetchJSON(EXCHANGE_URL + "?group=" + GROUP),
      Medimg.fetchJSON(ME_URL),
      subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]),
    ])
      .then(function (results) {
        state.offer = results[0];
        state.userId = results[1].id;
        state.pair = results[2];
        state.serverPublic = fromBase64(state.offer.server_public_key);
        return Promise.all([
          subtle.exportKey("raw", state.pair.publicKey),
          subtle.importKey("raw", state.serverPublic, { name: "X25519" }, false, []),
        ]);
      })
      .then(function (keys) {
        state.clientPublic = new Uint8Array(keys[0]);
        return subtle.deriveBits({ name: "X25519", public: keys[1] }, state.pair.privateKey, 256);
      })
      .then(function (secret) {
        return subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
      })
      .then(function (ikm) {
        return subtle.deriveBits(
          {
            name: "HKDF",
            hash: "SHA-256",
            salt: bytes("medimg/key-exchange/v1"),
            info: hkdfInfo(state.userId, state.offer.exchange_id, state.serverPublic, state.clientPublic),
          },
          ikm,
          384
        );
      })
      .then(function (okm) {
        okm = new Uint8Array(okm);
        state.keyId = hex(okm.slice(32, 48));
        return Promise.all([
          subtle.importKey("raw", okm.slice(0, 32), "AES-GCM", false, ["decrypt"]),
          Medimg.fetchJSON(EXCHANGE_URL, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({
              exchange_id: state.offer.exchange_id,
              public_key: toBase64(state.clientPublic),
            }),
          }),
        ]);
      })
      .then(function (done) {
        if (done[1].key_id !== state.keyId) {
          throw new Error("Key confirmation failed: the server derived a different key.");
        }
        current = {
          keyId: state.keyId,
          key: done[0],
          expiresAt: Date.now() + (done[1].expires_in - 30) * 1000,
        };
        return current;
      });
  }

  function sessionKey() {
    if (current && current.expiresAt > Date.now()) {
      return Promise.resolve(current);
    }
    current = null;
    return exchange();
  }

  // transfer_aad("restore", scan=, format=, frame=, enhance=) for the restore being POSTed
  // (`fields` is its JSON body), with the server's defaults and parsing (imaging/apis/scans.py
  // ScanRestoreApi).
  function restoreAad(url, fields, nonce) {
    var parsed = new URL(url, window.location.href);
    var match = parsed.pathname.match(/\/images\/(\d+)\/restore\/$/);
    if (!match) {
      throw new Error("Not a restore URL.");
    }
    var body = fields || {};
    var enhance =
      body.enhance === true ||
      ["true", "1", "yes", "on"].indexOf(String(body.enhance || "").toLowerCase()) >= 0;
    var frame = body.frame ? parseInt(body.frame, 10) : 0;
    // Keys in sorted order, as Python's json.dumps(sort_keys=True) writes them.
    var aad =
      '{"enhance":' + (enhance ? "true" : "false") +
      ',"format":' + JSON.stringify(body.format || "png") +
      ',"frame":' + frame +
      ',"nonce":' + JSON.stringify(nonce) +
      ',"scan":' + parseInt(match[1], 10) + "}";
    return bytes("medimg/sealed-restore/v1\n" + aad);
  }

  // transfer_aad("region", nonce=, region=) for a decrypted-region URL (imaging/apis/scans.py).
  function regionAad(url, nonce) {
    var parsed = new URL(url, window.location.href);
    var match = parsed.pathname.match(/\/regions\/(\d+)\/$/);
    if (!match) {
      throw new Error("Not a region URL.");
    }
    return bytes(
      'medimg/sealed-region/v1\n{"nonce":' + JSON.stringify(nonce) +
        ',"region":' + parseInt(match[1], 10) + "}"
    );
  }

  // 16 random bytes as hex: new for every request (X-Medimg-Seal-Nonce). The server refuses
  // one it has seen with this key, and seals its answer to it, so no answer can be replayed.
  function newNonce() {
    return hex(window.crypto.getRandomValues(new Uint8Array(16)));
  }

  function open(key, sealed, aad) {
    var magic = bytes(MAGIC);
    var idLength = sealed[magic.length + 1];
    var headerEnd = magic.length + 2 + idLength;
    for (var i = 0; i < magic.length; i++) {
      if (sealed[i] !== magic[i]) {
        return Promise.reject(new Error("The server did not seal the image."));
      }
    }
    if (sealed[magic.length] !== 1 || sealed.length < headerEnd + NONCE_BYTES + 16) {
      return Promise.reject(new Error("The sealed image is malformed."));
    }
    var header = sealed.slice(0, headerEnd);
    var nonce = sealed.slice(headerEnd, headerEnd + NONCE_BYTES);
    var body = sealed.slice(headerEnd + NONCE_BYTES);
    return window.crypto.subtle
      .decrypt({ name: "AES-GCM", iv: nonce, additionalData: concat([header, aad]), tagLength: 128 }, key, body)
      .catch(function () {
        throw new Error("The sealed image did not open: it was altered or sealed for something else.");
      });
  }

  function fetchOnce(url, options, session, aadFor) {
    var opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({}, opts.headers || {});
    var nonce = newNonce();
    opts.headers[SEAL_HEADER] = session.keyId;
    opts.headers[NONCE_HEADER] = nonce;
    return fetch(url, opts).then(
      function (response) {
        document.dispatchEvent(new Event("medimg:server-activity"));
        if (response.ok) {
          if (response.headers.get("X-Medimg-Sealed") !== session.keyId) {
            throw new Error("The server did not seal the image.");
          }
          var type = response.headers.get("X-Medimg-Content-Type") || "application/octet-stream";
          return response.arrayBuffer().then(function (buffer) {
            return open(session.key, new Uint8Array(buffer), aadFor(url, nonce)).then(function (plain) {
              return new Blob([plain], { type: type });
            });
          });
        }
        return response.text().then(function (text) {
          var body = Medimg.parseJSON(text);
          var error = new Error(Medimg.errorMessage(response.status, body));
          error.code = body && body.error ? body.error.code : null;
          throw error;
        });
      },
      function () {
        throw new Error(Medimg.errorMessage(0, null));
      }
    );
  }

  // Fetch a URL sealed under the session key; resolves to the decrypted image as a Blob. A key
  // the server no longer knows is replaced by one new exchange, then the request is retried.
  function fetchSealed(url, options, aadFor) {
    if (!supported()) {
      return Promise.reject(new Error("This browser cannot decrypt sealed images (WebCrypto)."));
    }
    return sessionKey()
      .then(function (session) {
        return fetchOnce(url, options, session, aadFor);
      })
      .catch(function (err) {
        if (err.code !== "session_key_expired") {
          throw err;
        }
        current = null;
        return exchange().then(function (session) {
          return fetchOnce(url, options, session, aadFor);
        });
      });
  }

  // POST a restore (`fields` is its JSON body, with the CSRF token: restores are never GETs).
  function fetchRestore(url, fields) {
    var options = {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": Medimg.csrfToken() },
      body: JSON.stringify(fields || {}),
    };
    return fetchSealed(url, options, function (target, nonce) {
      return restoreAad(target, fields, nonce);
    });
  }

  function fetchRegion(url, options) {
    return fetchSealed(url, options, regionAad);
  }

  window.MedimgSealed = {
    fetchRestore: fetchRestore,
    fetchRegion: fetchRegion,
    supported: supported,
  };
})();
