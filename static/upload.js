// Drag and drop and a size check on top of the plain upload form (which works without this).
// Loaded as a file from 'self': the Content-Security-Policy allows no inline script.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.upload")) {
    const input = form.querySelector("input[type=file]");
    const zone = form.querySelector(".dropzone");
    const hint = form.querySelector(".drop-hint");
    const message = form.querySelector(".form-message");
    const button = form.querySelector("button[type=submit]");
    const maxBytes = Number(form.dataset.maxBytes || 0);
    if (!input || !zone) continue;
    if (hint) hint.hidden = false;

    const check = () => {
      const file = input.files && input.files[0];
      const tooLarge = Boolean(file && maxBytes && file.size > maxBytes);
      message.textContent = tooLarge
        ? `This file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ` +
          `${(maxBytes / 1048576).toFixed(0)} MB.`
        : "";
      button.disabled = tooLarge;
      zone.classList.toggle("has-file", Boolean(file));
    };

    input.addEventListener("change", check);
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        check();
      }
    });
    form.addEventListener("submit", () => {
      // Let the post go ahead; just show that something is happening.
      button.disabled = true;
      button.textContent = "Analysing…";
    });
  }

  // If a heat map can't be drawn (result expired), say so instead of a broken image.
  for (const img of document.querySelectorAll("img.heatmap, .thumb img")) {
    img.addEventListener("error", () => {
      img.alt = "The heat map is no longer available: upload the image again.";
      img.classList.add("missing");
    });
  }
});
