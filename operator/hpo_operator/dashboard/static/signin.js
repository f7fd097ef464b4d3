// The sign-in page: the token goes to the server once (POST /api/session, the page's own custom
// header, so another site cannot sign a browser in); the answer's cookie is the session.
"use strict";

(() => {
  const {replace, postJSON, q} = hpo;
  q("live").hidden = true;
  q("signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = q("signin-error");
    q("signin-button").disabled = true;
    try {
      await postJSON("/api/session", {token: q("token").value});
      q("token").value = "";
      location.reload();
    } catch (e) {
      box.hidden = false;
      replace(box, e.message);
    } finally {
      q("signin-button").disabled = false;
    }
  });
  q("token").focus();
})();
