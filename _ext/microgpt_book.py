"""Small fixes to the built pages, each found by the browser tests (tests/browser).

1. Jupyter Book 1.0.4 registers sphinx-thebe's and sphinx-togglebutton's inline scripts twice,
   so every page declared ``const THEBE_JS_URL`` twice: an uncaught SyntaxError in the reader's
   console on every page. Each page now keeps the first of any identical script.
2. On pages with widgets, the ipywidgets HTML manager (an AMD bundle loaded by require.js)
   computes where its fonts live from its module's address, which require.js takes relative to
   the page: the fonts were asked of the book's own server, and 404'd. A require.js config,
   set before require.js loads, puts the manager's modules at the CDN they come from.
3. The same manager typesets widget text with MathJax 2's ``MathJax.Hub.Queue``; the book loads
   MathJax 3, which has no Hub, so each widget threw a TypeError. A two-line Hub that calls
   MathJax 3's ``typesetPromise`` stands in.
"""

from __future__ import annotations

from typing import Any

MANAGER = "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/"
WIDGET_PAGE_SCRIPT = f"""
var require = {{paths: {{
  "@jupyter-widgets/html-manager/dist": "{MANAGER[:-1]}",
  "@jupyter-widgets/html-manager": "{MANAGER}index",
  "@jupyter-widgets/base": "{MANAGER}base",
  "@jupyter-widgets/controls": "{MANAGER}controls"
}}}};
(function () {{
  function hub() {{
    var m = window.MathJax;
    if (m && !m.Hub) m.Hub = {{Queue: function (job) {{
      if (m.typesetPromise && job && job[2]) m.typesetPromise([job[2]]).catch(function () {{}});
    }}}};
  }}
  hub();
  document.addEventListener("DOMContentLoaded", hub);
}})();
"""


def fix_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any):
    scripts = context.get("script_files", [])
    seen, kept = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        # the two copies differ only in an empty file name: None in one, "" in the other
        name = getattr(script, "filename", script) or ""
        key = (str(name), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    names = [str(getattr(s, "filename", s) or "") for s in kept]
    if any(n.startswith(MANAGER) for n in names) and kept:
        first = next(
            i for i, n in enumerate(names) if "require" in n or n.startswith(MANAGER)
        )
        kept.insert(first, type(kept[0])(None, body=WIDGET_PAGE_SCRIPT))
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", fix_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
