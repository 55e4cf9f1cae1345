from ntps.bookcheck import check_book

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
