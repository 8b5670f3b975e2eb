"""Open every page of the built book in headless Chromium and list what a reader would see wrong.

    python tools/browser.py [--screenshots DIR]    check _build/html; exit 1 on any problem
    python tools/browser.py --install-assets       fetch the pages' CDN scripts (npm) once

The book's pages load three scripts from public CDNs (MathJax, require.js and the ipywidgets
HTML manager). A test must not depend on the network, so the browser's requests to those hosts
are answered from the same npm packages installed into ``.browser-assets/``; every other request
leaving localhost counts as a failed request.

Checks (``page_problems`` for one page, ``link_problems`` for the whole site):
console errors and uncaught exceptions; failed requests and HTTP errors; images that did not
load or have neither alt text nor a caption; math left unrendered; widgets that did not render
from their saved state; code cells that scroll sideways at a 1280-pixel window; internal links
and anchors that lead nowhere.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urljoin, urlparse

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
ASSETS = ROOT / ".browser-assets"
SCREENSHOTS = ROOT / "_build" / "screenshots"
WIDTH, HEIGHT = 1280, 900
# what the pages ask the CDNs for, as npm packages (the versions the built pages name)
PACKAGES = {
    "mathjax": "3.2.2",
    "requirejs": "2.3.4",
    "@jupyter-widgets/html-manager": "1.0.6",
}
# Chromium as the course's tests run it: no sandbox (CI runs as root), and none of the
# background connections a closed network refuses
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --------------------------------------------------------------------------------------------
# what the checks need


def chromium_path() -> str | None:
    """The Chromium to drive: $MICROGPT_CHROMIUM, else the first one on the PATH."""
    named = os.environ.get("MICROGPT_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing() -> list[str]:
    """What this machine lacks for the browser checks, each with what to install."""
    reasons = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reasons.append("the Python package playwright (pip install -r requirements.txt)")
    if chromium_path() is None:
        reasons.append(
            "Chromium (Debian/Ubuntu: apt install chromium; macOS: brew install chromium; "
            "or set MICROGPT_CHROMIUM to a Chrome or Chromium executable)"
        )
    if not all(asset_root(name).is_dir() for name in PACKAGES):
        reasons.append(
            f"the CDN scripts in {ASSETS.name}/ (make browser-assets: needs npm)"
        )
    return reasons


def asset_root(package: str) -> Path:
    return ASSETS / "node_modules" / package


def install_assets() -> None:
    """Fetch each CDN package's own files (``npm pack``: no dependencies, nothing installed
    globally) and unpack them into .browser-assets/node_modules/<name>/."""
    import tarfile
    import tempfile

    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("fetching the book's CDN scripts needs npm (Node.js)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in PACKAGES.items():
            done = subprocess.run(
                [npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--silent"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
            target = asset_root(name)
            shutil.rmtree(target, ignore_errors=True)
            with tarfile.open(tarball) as archive:
                for member in archive.getmembers():
                    if member.isfile() and member.name.startswith("package/"):
                        member.name = member.name[len("package/") :]
                        archive.extract(member, target, filter="data")
            print(f"{name}@{version} -> {target.relative_to(ROOT)}")


def local_asset(url: str) -> Path | None:
    """The local file for a CDN URL the pages use, or None for any other URL."""
    parts = urlparse(url)
    if parts.netloc == "cdn.jsdelivr.net" and parts.path.startswith("/npm/"):
        spec, _, rest = parts.path[len("/npm/") :].partition("/")
        if spec.startswith("@"):  # @scope/name@version/path
            name_rest, _, rest2 = rest.partition("/")
            spec, rest = f"{spec}/{name_rest}", rest2
        name = spec.rsplit("@", 1)[0] if spec.count("@") > spec.startswith("@") else spec
        path = asset_root(name) / unquote(rest)
        return path if name in PACKAGES and path.is_file() else None
    return None


# --------------------------------------------------------------------------------------------
# serving the book on localhost


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """Serve a directory on 127.0.0.1 (a free port) for the block; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright) for the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def pages(directory: Path = HTML) -> list[str]:
    """Every HTML page of a built book, relative to its root, sorted."""
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*.html")
        if not skip & set(p.relative_to(directory).parts)
    )


# --------------------------------------------------------------------------------------------
# one page


_PAGE_CHECKS = """
() => {
  const out = {images: [], unlabeled: [], math: 0, rawMath: [], widgets: 0, rendered: 0,
               widgetErrors: 0, overflow: []};
  for (const img of document.querySelectorAll("img")) {
    if (!img.complete || img.naturalWidth === 0) out.images.push(img.getAttribute("src"));
    const figure = img.closest("figure");
    const caption = figure && figure.querySelector("figcaption");
    if (!img.getAttribute("alt") && !(caption && caption.textContent.trim()))
      out.unlabeled.push(img.getAttribute("src"));
  }
  for (const m of document.querySelectorAll(".math"))
    if (!m.querySelector("mjx-container")) out.math += 1;
  for (const p of document.querySelectorAll("article p, article li")) {
    if (p.closest("pre, code, .cell_output, mjx-container")) continue;
    const text = p.textContent;
    if (/\\$\\$|\\\\\\(|\\\\\\[|(^|[^\\w\\\\])\\$[^$\\s][^$]*\\$/.test(text))
      out.rawMath.push(text.slice(0, 80));
  }
  out.widgets = document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]').length;
  out.rendered = document.querySelectorAll(".jupyter-widgets.widget-container, " +
    ".jupyter-widgets.widget-inline-hbox, .jupyter-widgets.widget-hbox, " +
    ".jupyter-widgets.widget-vbox, .widget-html, .widget-progress").length;
  out.widgetErrors = document.querySelectorAll(".jupyter-widgets-error-widget").length;
  for (const pre of document.querySelectorAll(".cell_input pre, div.highlight pre")) {
    if (pre.closest(".cell_output")) continue;
    if (pre.scrollWidth > pre.clientWidth + 1) {
      const line = pre.textContent.split("\\n").reduce((a, b) => b.length > a.length ? b : a);
      out.overflow.push(line.trim().slice(0, 100));
    }
  }
  return out;
}
"""


def page_problems(
    browser: Any, url: str, base: str, screenshot: Path | None = None
) -> list[str]:
    """Everything wrong with one page as a reader's browser shows it (empty: nothing)."""
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    found: list[str] = []

    def route(request_route: Any) -> None:
        request = request_route.request
        if request.url.startswith(base) or request.url.startswith("data:"):
            request_route.continue_()
            return
        local = local_asset(request.url)
        if local is None:
            found.append(f"request to an outside host: {request.url}")
            request_route.abort()
        else:
            request_route.fulfill(path=str(local))

    page.route("**/*", route)
    page.on(
        "console",
        lambda m: found.append(f"console error: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: found.append(f"uncaught exception: {e}"))
    page.on(
        "requestfailed",
        lambda r: (
            None
            if not r.url.startswith(base)
            else found.append(f"failed request: {r.url} ({r.failure})")
        ),
    )
    page.on(
        "response",
        lambda r: found.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    page.goto(url, wait_until="networkidle")
    page.evaluate(
        "() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null"
    )
    page.wait_for_timeout(200)  # widgets render from their saved state after load
    checks = page.evaluate(_PAGE_CHECKS)
    found += [f"image did not load: {src}" for src in checks["images"]]
    found += [
        f"image with neither alt text nor a caption: {s}" for s in checks["unlabeled"]
    ]
    if checks["math"]:
        found.append(f"{checks['math']} math element(s) not rendered by MathJax")
    found += [f"raw TeX left in the text: {t!r}" for t in checks["rawMath"]]
    if checks["widgets"] and not checks["rendered"]:
        found.append(f"{checks['widgets']} widget(s) saved, none rendered")
    if checks["widgetErrors"]:
        found.append(f"{checks['widgetErrors']} widget(s) rendered as an error")
    found += [f"code scrolls sideways: {line!r}" for line in checks["overflow"]]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    context.close()
    return found


def search_results(browser: Any, base: str, term: str) -> list[str]:
    """The pages the book's own search lists for a term (as the reader's search box does)."""
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.goto(urljoin(base, f"search.html?q={term}"), wait_until="networkidle")
    page.wait_for_selector("#search-results ul li a", timeout=15_000)
    hrefs = page.eval_on_selector_all(
        "#search-results ul li a", "links => links.map(a => a.getAttribute('href'))"
    )
    context.close()
    return hrefs


# --------------------------------------------------------------------------------------------
# the whole site's links


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, target)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])  # type: ignore[arg-type]
        target = a.get("href") if tag in ("a", "link") else a.get("src")
        if target and tag in ("a", "link", "img", "script"):
            self.links.append((tag, target))


def link_problems(directory: Path = HTML) -> list[str]:
    """Internal links, images and scripts that point at a missing file or anchor."""
    parsed: dict[Path, _Links] = {}

    def parse(path: Path) -> _Links:
        if path not in parsed:
            parser = _Links()
            parser.feed(path.read_text(encoding="utf-8", errors="replace"))
            parsed[path] = parser
        return parsed[path]

    found = []
    for page in pages(directory):
        path = directory / page
        for tag, target in parse(path).links:
            parts = urlparse(target)
            if parts.scheme or target.startswith(("//", "mailto:", "javascript:")):
                continue
            file = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if file.is_dir():
                file = file / "index.html"
            if not file.exists():
                found.append(f"{page}: <{tag}> {target}: no such file")
            elif parts.fragment and file.suffix == ".html":
                if unquote(parts.fragment) not in parse(file).ids:
                    found.append(f"{page}: <{tag}> {target}: no such anchor")
    return found


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, default=SCREENSHOTS)
    parser.add_argument("--install-assets", action="store_true")
    options = parser.parse_args(argv)
    if options.install_assets:
        install_assets()
        return 0
    lacking = missing()
    if lacking:
        print("the browser checks need: " + "; ".join(lacking))
        return 2
    problems = [f"links: {p}" for p in link_problems()]
    with served(HTML) as base, browser() as chromium:
        for page in pages():
            shot = options.screenshots / (re.sub(r"[/\\]", "--", page) + ".png")
            problems += [
                f"{page}: {p}" for p in page_problems(chromium, base + page, base, shot)
            ]
    print("\n".join(problems) or f"no problems; screenshots in {options.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
