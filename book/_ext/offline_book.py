"""Sphinx extension: keep the built book free of resources fetched from the network.

Jupyter Book 1 always loads sphinx-thebe, which writes the URL of its JavaScript bundle on a CDN
into every page (it would fetch it only when a reader starts live code, which this book does not
offer: its notebooks run on Colab instead). This drops that script and its loader from each page,
so the HTML names no CDN at all.
"""


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    kept = []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body", "") or ""
        name = str(getattr(script, "filename", script) or "")
        if "THEBE_JS_URL" in body or name.endswith("sphinx-thebe.js"):
            continue
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
