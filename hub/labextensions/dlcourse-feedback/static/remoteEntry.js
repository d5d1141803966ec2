/* The course hub's one JupyterLab extension, written by hand as the module-federation container
 * JupyterLab loads (init and get; no build step, nothing shared).
 *
 * nbgrader's Assignments tab links "(view feedback)" to the command filebrowser:go-to-path, which
 * shows a folder (or selects a file) in the file browser. The hub's listing (dlcourse/assignments.py)
 * gives that link the feedback page's path, <assignment>/feedback/<timestamp>/<notebook>.html; when
 * the command runs with such a path, this opens the page too (JupyterLab's HTML viewer). */
(function () {
  var FEEDBACK_PAGE = /(^|\/)feedback\/[^\/]+\/[^\/]+\.html$/;
  var plugin = {
    id: "dlcourse-feedback:open-feedback",
    description: "Open the feedback page that the Assignments tab's (view feedback) link points at.",
    autoStart: true,
    activate: function (app) {
      app.commands.commandExecuted.connect(function (_, executed) {
        var path = executed.args && executed.args.path;
        if (executed.id === "filebrowser:go-to-path" && typeof path === "string" && FEEDBACK_PAGE.test(path)) {
          app.commands.execute("docmanager:open", { path: path });
        }
      });
    }
  };
  var container = {
    init: function () { return Promise.resolve(); },
    get: function (module) {
      if (module !== "./extension") {
        return Promise.reject(new Error("dlcourse-feedback has no module " + module));
      }
      return Promise.resolve(function () { return { __esModule: true, default: [plugin] }; });
    }
  };
  var registry = (window._JUPYTERLAB = window._JUPYTERLAB || {});
  registry["dlcourse-feedback"] = container;
})();
