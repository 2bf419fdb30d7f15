/* Loaded between require.js and @jupyter-widgets/html-manager's embed-amd.js on pages with saved
   widget state (see nb_ipywidgets_js in _config.yml). Two fixes for that bundle on a Jupyter Book page:
   1. Its modules are named AMD modules, so require.js gives them a URL relative to the page and
      the Font Awesome fonts of their CSS were fetched from chapters/@jupyter-widgets/... (404).
      Mapping the package to the CDN folder the bundle comes from (this script's
      data-html-manager) before the bundle runs makes those URLs right.
   2. It typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue); the book loads
      MathJax 3, so a small Hub.Queue that calls MathJax 3's typesetPromise stands in for it. */
(function () {
  "use strict";
  var me = document.currentScript;
  var base = me && me.dataset.htmlManager;
  if (base && window.require && window.require.config) {
    window.require.config({ paths: { "@jupyter-widgets/html-manager": base.replace(/\/$/, "") } });
  }

  function mathjax2Hub() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) {
      return;
    }
    mj.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          var element = Array.isArray(job) && job[0] === "Typeset" ? job[2] : null;
          var ready = mj.startup && mj.startup.promise;
          if (!element || !ready) {
            return;
          }
          ready.then(function () {
            return mj.typesetPromise ? mj.typesetPromise([element]) : null;
          }).catch(function (err) {
            console.warn("s2s-widgets: MathJax could not typeset a widget label", err);
          });
        });
      },
    };
  }
  // MathJax 3 is a deferred script: it has replaced window.MathJax by DOMContentLoaded, and this
  // listener is registered before the widget manager's own, so it runs first.
  document.addEventListener("DOMContentLoaded", mathjax2Hub);
  if (document.readyState !== "loading") {
    mathjax2Hub();
  }
})();
