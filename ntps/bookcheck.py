"""Check a built book: nothing loaded from the network, math served locally, no error output.

``python -m ntps.bookcheck _build/html`` exits non-zero and lists every problem it finds:

* a ``<script src>`` or stylesheet ``<link href>`` that points off the site (a CDN), since the
  book must render with no network;
* pages with math whose MathJax is not the local copy in ``_static/mathjax``;
* executed notebook pages that show an error or a traceback.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["check_book", "main"]

_EXTERNAL = re.compile(r"^(https?:)?//", re.IGNORECASE)
_URL_IN_SCRIPT = re.compile(r"https?://[^\s\"'`]+", re.IGNORECASE)


class _PageScanner(HTMLParser):
    def __init__(self):
        super().__init__()
        self.external: list[str] = []
        self.scripts: list[str] = []
        self.error_outputs = 0
        self.has_math = False
        self._in_inline_script = False

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data):
        # A URL written into an inline script is fetched by that script: count it too.
        if self._in_inline_script:
            self.external += _URL_IN_SCRIPT.findall(data)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "script" and not attributes.get("src"):
            self._in_inline_script = True
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"])
            if _EXTERNAL.match(attributes["src"]):
                self.external.append(attributes["src"])
        if tag == "link" and "stylesheet" in (attributes.get("rel") or "") and _EXTERNAL.match(attributes.get("href") or ""):
            self.external.append(attributes["href"])
        if "traceback" in classes or "output_error" in classes or ("output" in classes and "error" in classes):
            self.error_outputs += 1
        if "math" in classes:
            self.has_math = True


def check_book(html_dir: str | Path) -> list[str]:
    """Return a list of problems found in the built HTML under ``html_dir`` (empty when fine)."""
    html_dir = Path(html_dir)
    problems: list[str] = []
    if not (html_dir / "index.html").is_file():
        return [f"{html_dir}/index.html is missing: the book was not built"]
    if not (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file():
        problems.append("_static/mathjax/tex-chtml.js is missing: MathJax is not served locally")
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        scanner = _PageScanner()
        scanner.feed(page.read_text(encoding="utf-8", errors="replace"))
        name = page.relative_to(html_dir)
        problems += [f"{name}: loads {url} from the network" for url in scanner.external]
        if scanner.error_outputs:
            problems.append(f"{name}: {scanner.error_outputs} error output(s) in the page")
        if scanner.has_math and not any("mathjax/tex-chtml.js" in src for src in scanner.scripts):
            problems.append(f"{name}: has math but does not load the local MathJax")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    html_dir = Path(argv[0] if argv else "_build/html")
    problems = check_book(html_dir)
    pages = sum(1 for p in html_dir.rglob("*.html") if "_static" not in p.parts)
    if problems:
        print(f"[bookcheck] {len(problems)} problem(s) in {html_dir}:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"[bookcheck] {pages} pages in {html_dir}: no network resources, local MathJax, no error output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
