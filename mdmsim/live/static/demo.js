// mdmsim demo --web: small conveniences of our own; the pages work without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The overview's device filter: hides rows whose text does not contain what was typed.
  const filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", () => {
      const wanted = filter.value.trim().toLowerCase();
      for (const row of document.querySelectorAll("#devices tbody tr")) {
        row.hidden = wanted !== "" && !row.textContent.toLowerCase().includes(wanted);
      }
    });
  }
  // A form that moves the virtual world on takes a moment: say so and prevent a second submit.
  for (const form of document.querySelectorAll("form[method=post]")) {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; button.textContent = "working…"; }
    });
  }
});
