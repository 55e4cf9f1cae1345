from ntps.bookcheck import check_book, check_notebooks, main, prose_numbers, unsupported_numbers

HEAD = '<html><head>{}</head><body>{}</body></html>'


def _site(tmp_path, pages, mathjax=True):
    if mathjax:
        (tmp_path / "_static" / "mathjax").mkdir(parents=True)
        (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    for name, html in {"index.html": HEAD.format("", ""), **pages}.items():
        (tmp_path / name).write_text(html)
    return tmp_path


def test_a_clean_site_passes(tmp_path):
    page = HEAD.format('<script src="_static/mathjax/tex-chtml.js"></script>',
                       '<span class="math">x</span><a href="https://arxiv.org/abs/2505.17169">paper</a>')
    assert check_book(_site(tmp_path, {"a.html": page})) == []


def test_cdn_scripts_styles_and_inline_urls_are_flagged(tmp_path):
    page = HEAD.format('<script src="https://cdn.example/x.js"></script>'
                       '<link rel="stylesheet" href="//fonts.example/f.css">'
                       '<script>const URL = "https://unpkg.com/thebe/index.js"</script>', "")
    problems = check_book(_site(tmp_path, {"a.html": page}))
    assert len(problems) == 3 and all("from the network" in p for p in problems)


def test_math_without_local_mathjax_and_error_outputs(tmp_path):
    page = HEAD.format("", '<span class="math">x</span><div class="output traceback">boom</div>')
    problems = check_book(_site(tmp_path, {"a.html": page}, mathjax=False))
    assert any("MathJax is not served locally" in p for p in problems)
    assert any("does not load the local MathJax" in p for p in problems)
    assert any("error output" in p for p in problems)


def test_an_unbuilt_book(tmp_path):
    assert "was not built" in check_book(tmp_path)[0]


def _notebook(tmp_path, prose, code, outputs=(), tags=()):
    """A minimal executed notebook: one markdown cell of prose, one code cell with outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    markdown = nbformat.v4.new_markdown_cell(prose)
    markdown.metadata["tags"] = list(tags)
    cell = nbformat.v4.new_code_cell(code)
    cell.outputs = list(outputs)
    nb.cells = [markdown, cell]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    return path


def test_prose_numbers_finds_quoted_figures_only():
    found = dict(prose_numbers("Spearman 0.52 at 95% [+0.10, +1.00], 0.15x faster, 5,000 updates, 1e-9; k = 1, "
                               "section 2, Qwen2-1.5B, `pkg==0.2.2`, {cite:p}`cheng2025ntps` [doc](a0.3)"))
    assert found == {"0.52": "0.52", "95%": "95%", "0.10": "0.1", "1.00": "1", "0.15x": "0.15", "5,000": "5000",
                     "1e-9": "0.000000001"}


def test_a_figure_the_page_computes_passes_and_one_it_does_not_is_flagged(tmp_path):
    import nbformat

    printed = nbformat.v4.new_output("stream", text="Spearman +0.520 over 12 tasks; interval width 1.3\n")
    table = nbformat.v4.new_output("display_data", data={"text/html": "<td>0.813</td>", "text/plain": "x"})
    path = _notebook(tmp_path, "The correlation is 0.52 (width 1.3x), 0.813 at best, at 95% confidence, "
                     "against 0.41 in the paper and 0.5 by definition.", "confidence = 0.95\nprint(...)",
                     [printed, table])
    problems = unsupported_numbers(path)
    assert len(problems) == 1 and problems[0].startswith("0.41:"), problems


def test_glued_findings_count_as_computed_and_quoted_facts_are_skipped(tmp_path):
    import nbformat

    glued = nbformat.v4.new_output("display_data", data={"application/papermill.record/text/markdown": "- 0.73"},
                                   metadata={"scrapbook": {"name": "findings"}})
    assert unsupported_numbers(_notebook(tmp_path, "It reached 0.73.", "glue(...)", [glued])) == []
    assert unsupported_numbers(_notebook(tmp_path, "6,046 messages", "pass")) != []
    assert unsupported_numbers(_notebook(tmp_path, "6,046 messages", "pass", tags=["quoted-facts"])) == []


def test_check_notebooks_and_the_command_line(tmp_path, capsys):
    _notebook(tmp_path, "It reached 0.73.", "pass")
    (tmp_path / "page.failed.ipynb").write_text("not read")
    problems = check_notebooks(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("page.ipynb: quotes 0.73")
    site = _site(tmp_path / "site", {})
    assert main([str(site), str(tmp_path)]) == 1
    assert "0.73" in capsys.readouterr().err
