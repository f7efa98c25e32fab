// keygate dashboard: small enhancements over forms that work without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Copy: shown only when a script can write to the clipboard.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const input = document.getElementById(button.dataset.copy);
    const status = button.closest("dialog, main").querySelector(".copied");
    if (!input || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(input.value);
        if (status) status.textContent = "Copied to the clipboard.";
      } catch {
        input.select();
        if (status) status.textContent = "Select the key and copy it (Ctrl+C).";
      }
    });
  }

  // The one-time key: a real modal dialog, which Escape does not dismiss by accident.
  const modal = document.getElementById("key-modal");
  // That page answered a POST. Turn this history entry into a plain GET of the key's (or the
  // accounts') page: reloading, or going back to it, then neither sends the form again (which
  // would make another key, roll again or make another account) nor shows a plaintext again.
  if (modal && modal.dataset.location && window.history && history.replaceState) {
    history.replaceState(null, "", modal.dataset.location);
  }
  if (modal && typeof modal.showModal === "function") {
    modal.close();
    modal.showModal();
    modal.addEventListener("cancel", (event) => event.preventDefault());
    const input = modal.querySelector("input[readonly]");
    if (input) input.addEventListener("focus", () => input.select());
  }

  // Select All without a round trip: every resource at its highest permission the role allows,
  // every action the role allows.
  for (const button of document.querySelectorAll("button.select-all")) {
    button.addEventListener("click", (event) => {
      event.preventDefault();
      const form = button.form;
      const restricted = form.querySelector('input[name="access"][value="restricted"]');
      if (restricted) restricted.checked = true;
      for (const group of form.querySelectorAll("fieldset.perm")) {
        const options = [...group.querySelectorAll('input[type="radio"]:not([disabled])')];
        const best = options.find((o) => o.value === "write") || options.find((o) => o.value === "read");
        if (best) best.checked = true;
      }
      for (const box of form.querySelectorAll('input[name="scope"]:not([disabled])')) box.checked = true;
    });
  }

  // Destructive inline forms ask first (the key actions have their own confirmation pages).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
