// Security keys and passkeys (WebAuthn) for the Habilis pages. Vanilla, loaded from the same
// origin under the strict CSP; every page also works without it (other factors stay available).
// Elements opt in with data attributes:
//   [data-webauthn-login]     login with a key/passkey (data-interaction, data-csrf; the login
//                             field #login, when present, gives an identifier-first login)
//   [data-webauthn-register]  register a new key (data-csrf; the name field #passkey-name)
// Errors are shown in #webauthn-error.
(function () {
  "use strict";
  if (!window.PublicKeyCredential) {
    document.querySelectorAll("[data-webauthn-login],[data-webauthn-register]").forEach(function (el) {
      el.hidden = true;
    });
    return;
  }

  function toBuffer(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    if (!buffer) return null;
    var bytes = new Uint8Array(buffer);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function showError(message) {
    var box = document.getElementById("webauthn-error");
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
  }

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (json) {
        if (!response.ok) throw new Error(json.error_description || json.error || response.statusText);
        return json;
      });
    });
  }

  function requestOptions(options) {
    var pk = options.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = toBuffer(c.id); });
    return pk;
  }

  function creationOptions(options) {
    var pk = options.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    pk.user.id = toBuffer(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = toBuffer(c.id); });
    return pk;
  }

  // The credential as webauthn-rs reads it: binary members base64url, `response` as given.
  function credentialJson(credential, response) {
    return {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      extensions: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: response
    };
  }

  function assertionJson(credential) {
    var r = credential.response;
    return credentialJson(credential, {
      authenticatorData: toB64url(r.authenticatorData),
      clientDataJSON: toB64url(r.clientDataJSON),
      signature: toB64url(r.signature),
      userHandle: toB64url(r.userHandle)
    });
  }

  function attestationJson(credential) {
    var r = credential.response;
    return credentialJson(credential, {
      attestationObject: toB64url(r.attestationObject),
      clientDataJSON: toB64url(r.clientDataJSON),
      transports: r.getTransports ? r.getTransports() : null
    });
  }

  function logIn(el, login, mediation) {
    var start = { interaction: el.dataset.interaction, csrf: el.dataset.csrf };
    if (login) start.login = login;
    return post("/webauthn/authenticate/start", start).then(function (started) {
      var request = { publicKey: requestOptions(started.options) };
      if (mediation) request.mediation = mediation;
      return navigator.credentials.get(request).then(function (credential) {
        return post("/webauthn/authenticate/finish", {
          interaction: el.dataset.interaction,
          csrf: el.dataset.csrf,
          ceremony: started.ceremony,
          credential: assertionJson(credential)
        });
      });
    }).then(function (done) { window.location.assign(done.redirect); });
  }

  document.querySelectorAll("[data-webauthn-login]").forEach(function (el) {
    el.hidden = false;
    el.addEventListener("click", function (event) {
      event.preventDefault();
      var field = document.getElementById("login");
      logIn(el, field ? field.value.trim() : "", null).catch(function (e) { showError(e.message); });
    });
    // Passkeys offered in the login field's autofill (conditional mediation), usernameless.
    if (el.dataset.conditional && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (available) logIn(el, "", "conditional").catch(function () { /* the user typed a password */ });
      });
    }
  });

  document.querySelectorAll("[data-webauthn-register]").forEach(function (el) {
    el.hidden = false;
    el.addEventListener("click", function (event) {
      event.preventDefault();
      var nameField = document.getElementById("passkey-name");
      post("/account/passkeys/register/start", { csrf: el.dataset.csrf }).then(function (started) {
        return navigator.credentials.create({ publicKey: creationOptions(started.options) }).then(function (credential) {
          return post("/account/passkeys/register/finish", {
            csrf: el.dataset.csrf,
            ceremony: started.ceremony,
            name: nameField ? nameField.value : null,
            credential: attestationJson(credential)
          });
        });
      }).then(function () { window.location.reload(); }).catch(function (e) { showError(e.message); });
    });
  });
})();
