"""The built book, as a reader's browser shows it: every page opened in headless Chromium.

Runs after the book is built (``make test`` builds it strictly first; ``make browser`` runs only
these). Without Chromium, Playwright or the CDN scripts the tests skip and say what to install;
in CI (``CI`` set) they fail instead, so that a missing browser cannot pass for a clean book.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tools import browser as book

PAGES = book.pages() if (book.HTML / "index.html").is_file() else []
# a word that only a chapter's own text is likely to use, and the page it must lead to
SEARCHES = {
    "provenance": "00_measuring",
    "micrograd": "01_value_autograd",
    "tokenizer": "02_scalar_gpt",
    "strides": "03_memory_layout",
    "ikj": "04_loop_order",
    "micro-kernel": "05_tiling_simd_threads",
    "OpenBLAS": "06_blas",
    "synchronisation": "07_gpu",
    "AdamW": "08_optimizers",
    "broadcasting": "09_matrix_gpt",
    "torchrun": "10_training",
}


def require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def chromium():
    lacking = book.missing()
    require(not lacking, "the browser tests need " + "; ".join(lacking))
    with book.browser() as running:
        yield running


@pytest.fixture(scope="session")
def site():
    require(bool(PAGES), f"no built book in {book.HTML}: run `make book` first")
    with book.served(book.HTML) as base:
        yield base


def shot_name(page: str) -> Path:
    return book.SCREENSHOTS / (re.sub(r"[/\\]", "--", page) + ".png")


def test_the_book_has_every_chapter():
    require(bool(PAGES), f"no built book in {book.HTML}: run `make book` first")
    chapters = {Path(p).stem for p in PAGES if p.startswith("notebooks/")}
    assert set(SEARCHES.values()) <= chapters


@pytest.mark.parametrize("page", PAGES or ["(no built book)"])
def test_a_page_shows_what_it_should(chromium, site, page):
    problems = book.page_problems(chromium, site + page, site, shot_name(page))
    assert not problems, "\n".join(problems)


def test_no_internal_link_or_anchor_is_broken():
    require(bool(PAGES), f"no built book in {book.HTML}: run `make book` first")
    problems = book.link_problems()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("term", sorted(SEARCHES))
def test_the_search_finds_each_chapter(chromium, site, term):
    hrefs = book.search_results(chromium, site, term)
    assert any(SEARCHES[term] in href for href in hrefs), (
        f"searching {term!r} lists {hrefs[:5]}, not {SEARCHES[term]}"
    )


@pytest.mark.parametrize("chapter", sorted(SEARCHES.values()))
def test_each_chapter_page_downloads_its_notebook(site, chapter):
    import json
    import urllib.request

    page = (book.HTML / "notebooks" / f"{chapter}.html").read_text()
    links = re.findall(r'href="([^"]+\.ipynb)"', page)
    assert links, f"{chapter}.html has no download link to its notebook"
    url = site + "notebooks/" + links[0]
    with urllib.request.urlopen(url) as response:
        notebook = json.loads(response.read())
    assert notebook["cells"] and any(c.get("outputs") for c in notebook["cells"]), url


def test_screenshots_of_every_page_are_written(chromium, site):
    # the page test wrote one per page; this names the folder for a person to look at
    missing = [p for p in PAGES if not shot_name(p).is_file()]
    assert not missing, f"no screenshot in {book.SCREENSHOTS} for {missing[:3]}"
    print(f"screenshots of {len(PAGES)} pages: {book.SCREENSHOTS}")


# --------------------------------------------------------------------------------------------
# the checks catch what they claim to: a page broken on purpose


BROKEN = """<!DOCTYPE html><html><head><title>broken</title></head><body><article>
<p>A paragraph with raw TeX $x^2$ that nothing rendered.</p>
<img src="missing.png" alt="a plot">
<img src="ok.png">
<a href="nowhere.html">a dead link</a> <a href="#no-such-anchor">a dead anchor</a>
<a href="index.html#here">a good one</a> <span id="here"></span>
<div class="cell_input"><div class="highlight"><pre style="width: 300px; overflow-x: auto">
x = "a line of code far too long to fit in three hundred pixels of a code cell, so it scrolls"
</pre></div></div>
<script>console.error("something broke")</script>
</article></body></html>
"""

# a 1x1 PNG
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def test_a_deliberately_broken_page_is_caught(chromium, tmp_path):
    (tmp_path / "index.html").write_text(BROKEN)
    (tmp_path / "ok.png").write_bytes(PIXEL)
    links = book.link_problems(tmp_path)
    assert "index.html: <a> nowhere.html: no such file" in links
    assert "index.html: <a> #no-such-anchor: no such anchor" in links
    assert "index.html: <img> missing.png: no such file" in links
    assert not any("#here" in p for p in links)
    with book.served(tmp_path) as base:
        problems = book.page_problems(chromium, base + "index.html", base)
    text = "\n".join(problems)
    assert "image did not load: missing.png" in text
    assert "image with neither alt text nor a caption: ok.png" in text
    assert "HTTP 404" in text
    assert "console error: something broke" in text
    assert "raw TeX left in the text" in text
    assert "code scrolls sideways" in text


def test_cdn_urls_map_to_the_local_packages():
    mathjax = book.local_asset(
        "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    )
    manager = book.local_asset(
        "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js"
    )
    require_js = book.local_asset(
        "https://cdn.jsdelivr.net/npm/requirejs@2.3.4/require.js"
    )
    require(
        all(p is not None for p in (mathjax, manager, require_js)),
        "the CDN scripts are not installed: make browser-assets",
    )
    assert mathjax.name == "tex-mml-chtml.js" and "mathjax" in mathjax.parts
    assert manager.name == "embed-amd.js" and "html-manager" in manager.parts
    assert book.local_asset("https://example.org/tracker.js") is None
