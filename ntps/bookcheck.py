"""Check a built book: nothing loaded from the network, math served locally, no error output, and
no figure in a chapter's prose that the chapter does not compute.

``python -m ntps.bookcheck _build/html [book/executed ...]`` exits non-zero and lists every problem
it finds:

* a ``<script src>`` or stylesheet ``<link href>`` that points off the site (a CDN), since the
  book must render with no network;
* pages with math whose MathJax is not the local copy in ``_static/mathjax``;
* executed notebook pages that show an error or a traceback;
* for each folder of executed notebooks given after the HTML folder: a figure quoted in the prose
  (markdown cells) of a notebook that none of its code cells contains or prints
  (``unsupported_numbers``).
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["check_book", "prose_numbers", "unsupported_numbers", "check_notebooks", "main"]

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


# --------------------------------------------------------------------------------------------
# Numbers in prose
# --------------------------------------------------------------------------------------------

# What counts as a quoted figure in prose: a decimal (0.52), a percentage (95%), a ratio (0.15x), a
# number with thousands separators (5,000) or in scientific notation (1e-9). Plain integers are not
# checked: in prose they are mostly counts and references (section 2, Figure 3, k = 1).
_FIGURE = re.compile(
    r"(?<![\w.])(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+)"
    r"(?P<unit>%|x(?![A-Za-z0-9])|×)?")
# Every numeric token of code and outputs, for the other side of the comparison.
_ANY_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
# Prose that is not a claim about the page's own numbers: code fences and inline code (names,
# versions), citations, link targets, URLs.
_NOT_PROSE = [re.compile(pattern, re.DOTALL) for pattern in (
    r"```.*?```", r"\{[a-z:]+\}`[^`]*`", r"`[^`]*`", r"\]\([^)]*\)", r"https?://\S+", r"arXiv[: ]\s*\d+\.\d+",
    r"<!--.*?-->")]
#: A markdown cell with this tag quotes facts of external sources (package versions, file counts of
#: a download) rather than results of the page; its figures are not checked.
QUOTED_FACTS_TAG = "quoted-facts"
_HTML_TAG = re.compile(r"<[^>]+>")
#: Values that prose may quote without computing them: definitions rather than results.
DEFINITIONS = frozenset({"0.5", "1.0", "0.0"})


def _canonical(token: str) -> str | None:
    """A number's value as a canonical string: ``0.520`` and ``0.52`` agree, ``5,000`` is ``5000``."""
    try:
        value = Decimal(token.replace(",", "")).normalize()
    except InvalidOperation:
        return None
    return format(value, "f")


def prose_numbers(markdown: str) -> list[tuple[str, str]]:
    """The figures quoted in a piece of prose, as ``(as written, canonical value)`` pairs.

    Decimals, percentages (value ``"95%"``), ratios (``0.15x`` has value ``0.15``), numbers with
    thousands separators and in scientific notation; not plain integers, parts of names (``1.1B``),
    and nothing inside code fences, inline code, roles such as citations, link targets or URLs.
    """
    for pattern in _NOT_PROSE:
        markdown = pattern.sub(" ", markdown)
    found = []
    for match in _FIGURE.finditer(markdown):
        number, unit = match.group("number"), match.group("unit") or ""
        if not unit and not any(mark in number.lower() for mark in ".,e"):
            continue  # a plain integer
        if not unit and re.match(r"[A-Za-z_]", markdown[match.end():match.end() + 1]):
            continue  # part of a name: a model size such as 1.1B, a version such as 4.46rc
        canonical = _canonical(number)
        if canonical is not None:
            found.append((number + unit, canonical + ("%" if unit == "%" else "")))
    return found


def _cell_texts(cell: dict) -> list[str]:
    """A code cell's source and the text of its outputs (HTML without its tags, glued values too)."""
    def text(value):
        return value if isinstance(value, str) else "".join(value)

    texts = [text(cell.get("source", ""))]
    for output in cell.get("outputs", []):
        if "text" in output:
            texts.append(text(output["text"]))
        for mime, value in output.get("data", {}).items():
            if "text" in mime or "json" in mime:
                value = text(value) if isinstance(value, (str, list)) else json.dumps(value)
                texts.append(_HTML_TAG.sub(" ", value) if "html" in mime else value)
    return texts


def _computed_values(texts: list[str]) -> set[str]:
    """Canonical values of every number in ``texts``; a percentage as written (84%), and a fraction
    in [0, 1] as its percentage too (0.95 supports 95%)."""
    values = set()
    for text in texts:
        for token in _ANY_NUMBER.findall(text):
            canonical = _canonical(token)
            if canonical is None:
                continue
            values.add(canonical)
            if Decimal(canonical) <= 1:
                values.add(_canonical(str(Decimal(canonical) * 100)) + "%")
        for token in re.findall(r"(\d+(?:\.\d+)?)\s*%", text):
            values.add(_canonical(token) + "%")
    return values


def unsupported_numbers(ipynb_path: str | Path, *, allowed=DEFINITIONS) -> list[str]:
    """The figures quoted in the prose (markdown cells) of an executed notebook that none of its code
    cells contains or prints.

    Every number a chapter's prose quotes should come from that chapter: a parameter or constant of
    its code, or one of its outputs. A figure is supported when its value (``0.52`` = ``0.520``,
    ``95%`` = ``0.95``, ``0.15x`` = ``0.15``, ``5,000`` = ``5000``) is among the numbers of some code
    cell's source or outputs (text, Markdown, HTML without its tags, glued values). ``allowed``
    holds values that need no support (definitions such as 0.5), and markdown cells tagged
    ``quoted-facts`` (facts of external sources, quoted rather than computed) are not checked.

    Returns one ``"<figure as written>: ...<context>..."`` string per unsupported figure; empty
    when every figure is supported.
    """
    notebook = json.loads(Path(ipynb_path).read_text(encoding="utf-8"))
    cells = notebook.get("cells", [])
    computed = _computed_values([t for cell in cells if cell.get("cell_type") == "code" for t in _cell_texts(cell)])
    free = {value for _, value in prose_numbers(" ".join(allowed))} | {_canonical(a) for a in allowed}
    problems = []
    for cell in cells:
        if cell.get("cell_type") != "markdown" or QUOTED_FACTS_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for written, value in prose_numbers(source):
            if value in computed or value in free:
                continue
            where = max(source.find(written), 0)
            context = " ".join(source[max(0, where - 50): where + len(written) + 30].split())
            problems.append(f"{written}: ...{context}...")
    return problems


def check_notebooks(folder: str | Path, *, allowed=DEFINITIONS) -> list[str]:
    """``unsupported_numbers`` for every executed notebook in ``folder`` (``*.failed.ipynb`` skipped),
    as ``"<notebook>: quotes <figure>: <context>"`` problems."""
    problems = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        if not path.name.endswith(".failed.ipynb"):
            problems += [f"{path.name}: quotes {problem}" for problem in unsupported_numbers(path, allowed=allowed)]
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    html_dir = Path(argv[0] if argv else "_build/html")
    problems = check_book(html_dir)
    for folder in argv[1:]:  # executed notebooks: every figure quoted in their prose is computed there
        problems += check_notebooks(folder)
    pages = sum(1 for p in html_dir.rglob("*.html") if "_static" not in p.parts)
    if problems:
        print(f"[bookcheck] {len(problems)} problem(s) in {html_dir}:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    checked = f"; every figure in the prose of {', '.join(argv[1:])} is computed there" if argv[1:] else ""
    print(f"[bookcheck] {pages} pages in {html_dir}: no network resources, local MathJax, no error output{checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
