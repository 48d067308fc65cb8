// Create form templates ("OOM lab"): one click fills the form's fields.
(function () {
  "use strict";
  document.querySelectorAll("#form-templates [data-template]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var t = JSON.parse(document.getElementById(btn.dataset.template).textContent);
      ["image", "memory", "command", "name"].forEach(function (f) {
        var el = document.getElementById("id_" + f);
        if (el && t[f] !== undefined) { el.value = t[f]; el.dispatchEvent(new Event("change", { bubbles: true })); }
      });
      var help = document.getElementById("form-template-help");
      if (!help) {
        help = document.createElement("p");
        help.id = "form-template-help";
        help.className = "help";
        btn.parentNode.appendChild(help);
      }
      help.textContent = t.help;
    });
  });
})();
