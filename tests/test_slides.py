"""The lectures as slides: the slide-type rule (`dlcourse.slides`), every lecture's stored slide
structure, the offline decks `make slides` writes (opened in Debian's Chromium from file:// with
the network blocked: more than one slide, the keyboard advances, figures load, MathJax typesets,
nothing requested outside the folder), and RISE in `make lab` (the toolbar button, a lecture in
slideshow mode).

Screenshots go to DLCOURSE_SCREENSHOTS (default .jupyter-state/screenshots/), as in
test_browser.py: `slides-<lecture>.png` shows each deck on its first slide with a figure.
"""
from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dlcourse.notebooks import code, markdown, new_notebook
from dlcourse.slides import (SLIDE_LINES, SLIDE_TYPES, WIDGET_NOTE, outline, slide_type, slide_types, slides, tag,
                             without_widgets)
from nbgrader_harness import REPO
from system_packages import ensure_debian_packages
from test_browser import CHROMIUM_ARGS, chromium, screenshots  # noqa: F401 -- the browser test's fixtures

LECTURES = sorted((REPO / "lectures").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
REVEAL = "_static/reveal.js/dist/reveal.js"   # the module id the deck's require() loads reveal.js under


# ------------------------------------------------------------------ the rule
def _output(cell, text: str):
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    cell.execution_count = 1
    return cell


def test_the_rule_gives_each_kind_of_cell_its_slide_type():
    nb = new_notebook([
        markdown("# Lecture 99 · A title\n\nWhat this lecture does."),
        _output(code("import torch\ntorch.manual_seed(0)"), "<torch._C.Generator at 0x7f>\n"),   # setup
        markdown("## 1. The first idea"),
        _output(code("print(1 + 1)"), "2\n"),
        _output(code("print(2 + 2)"), "4\n"),                      # a second short cell: a fragment
        markdown("**Summary:** one line."),                         # fits: a fragment
        markdown("A paragraph that introduces the next computation."),
        code("def helper(x):\n    return x + 1\n\nassert helper(1) == 2"),   # shows nothing: a helper
        _output(code("for i in range(60):\n    print(i)"), "".join(f"{i}\n" for i in range(60))),   # too long
        _output(code("print('a')"), "a\n" * 8),                    # the paragraph's code
        _output(code("x = 1\n" * 10 + "print(x)"), "1\n" * (SLIDE_LINES - 5)),   # does not fit: its own
        markdown("### A sub-heading"),
        markdown("Closing words.\n\n## 2. The next section"),      # a heading inside a cell
    ])
    assert slide_types(nb) == ["slide", "skip", "slide", "-", "fragment", "fragment", "subslide", "skip", "skip", "-",
                               "subslide", "subslide", "slide"]


def test_tag_fills_in_missing_types_keeps_hand_set_ones_and_changes_only_metadata():
    nb = new_notebook([markdown("# Lecture 99"), markdown("## 1. One"), _output(code("print(3)"), "3\n")])
    nb.cells[2].metadata["slideshow"] = {"slide_type": "subslide"}   # set by hand
    before = [(c.source, c.get("outputs")) for c in nb.cells]
    assert tag(nb) == 2
    assert [slide_type(c) for c in nb.cells] == ["slide", "slide", "subslide"]
    assert [(c.source, c.get("outputs")) for c in nb.cells] == before
    assert nb.metadata["rise"]["scroll"] is True
    assert tag(nb) == 0
    assert tag(nb, force=True) == 1 and slide_type(nb.cells[2]) == "-"
    assert [s.kind for s in slides(nb)] == ["slide", "slide"]
    assert "## 1. One" in outline(nb) and "skipped cells: []" in outline(nb)


def test_a_deck_shows_a_note_where_a_widget_was_and_keeps_the_lecture_as_it_is():
    nb = nbformat.read(LECTURES[0], as_version=4)
    views = [o for c in nb.cells for o in c.get("outputs", []) if WIDGET in o.get("data", {})]
    deck_nb = without_widgets(nb)
    assert views and "widgets" in nb.metadata and "widgets" not in deck_nb.metadata
    notes = [o for c in deck_nb.cells for o in c.get("outputs", []) if o.get("data", {}).get("text/plain") == WIDGET_NOTE]
    assert len(notes) == len(views)
    assert [o for c in nb.cells for o in c.get("outputs", []) if WIDGET in o.get("data", {})] == views


# ------------------------------------------------------------------ the lectures' metadata
@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_every_lecture_has_slide_structure(path):
    nb = nbformat.read(path, as_version=4)
    types = [slide_type(c) for c in nb.cells]
    assert all(t in SLIDE_TYPES for t in types), f"{path.name}: cells without a slide type: run " \
        f"`python -m dlcourse.slides tag {path.relative_to(REPO)}` and review its outline"
    assert types[0] == "slide"
    for cell, kind in zip(nb.cells, types):
        if cell.cell_type == "markdown" and re.search(r"^##?\s", cell.source, flags=re.M):
            assert kind == "slide", f"{path.name}: a section heading that is not a slide: {cell.source[:60]!r}"
        if cell.cell_type == "code" and any(WIDGET in o.get("data", {}) for o in cell.outputs):
            assert kind != "skip", f"{path.name}: a widget a lecturer shows live is skipped: {cell.source[:60]!r}"
    assert len(slides(nb)) > len([t for t in types if t == "slide"]) > 2
    assert nb.metadata.get("rise", {}).get("scroll") is True


# ------------------------------------------------------------------ the offline decks
@pytest.fixture(scope="module")
def decks(tmp_path_factory) -> Path:
    """The decks written by the command `make slides` runs (read from `make -n`) into a temp
    folder, after `make slides-assets` has installed the pinned npm packages (npm is installed
    from Debian's packages when missing)."""
    ensure_debian_packages(["nodejs", "npm"], binaries=["npm"])
    assets = subprocess.run(["make", "-s", "slides-assets"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert assets.returncode == 0, assets.stdout[-3000:] + assets.stderr[-3000:]
    out = tmp_path_factory.mktemp("slides")
    dry = subprocess.run(["make", "-s", "-n", "slides", f"SLIDES={out}"], cwd=REPO, capture_output=True, text=True,
                         check=True)
    lines = [line for line in dry.stdout.splitlines() if "dlcourse.slides export" in line]
    assert len(lines) == 1, dry.stdout
    cmd = shlex.split(lines[0])
    cmd[0] = sys.executable if cmd[0].endswith("python") else cmd[0]
    cmd = [c for arg in cmd for c in (sorted(map(str, REPO.glob(arg))) if "*" in arg else [arg])]
    build = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


TYPESET = """() => window.MathJax && MathJax.Hub && MathJax.Hub.queue && MathJax.Hub.queue.pending === 0
  && MathJax.Hub.queue.running === 0"""
FACTS = """() => {
  const reveal = document.querySelector('.reveal');
  return {
    sections: document.querySelectorAll('.reveal .slides section').length,
    images: [...document.images].map(i => i.naturalWidth),
    math: document.querySelectorAll('.reveal .mjx-chtml').length,
    mathErrors: document.querySelectorAll('.reveal .mjx-merror, .reveal .MathJax_Error').length,
    text: reveal.innerText,
  };
}"""


async def look_at_deck(browser, deck: Path, shot: Path) -> dict:
    """Open one deck from file:// in a fresh context whose every non-file request is aborted and
    recorded; read its slides, press ArrowRight and Space, and take a screenshot."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    outside, errors = [], []

    async def only_files(route):
        if route.request.url.startswith("file:"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_files)
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    try:
        await page.goto(deck.as_uri())
        await page.wait_for_function(f"() => window.require && require.defined('{REVEAL}') "
                                     f"&& require('{REVEAL}').isReady()", timeout=60_000, polling=200)
        await page.wait_for_function(TYPESET, timeout=60_000, polling=200)
        facts = await page.evaluate(FACTS)
        indices = "() => JSON.stringify(require('" + REVEAL + "').getIndices())"
        facts["start"] = await page.evaluate(indices)
        await page.keyboard.press("ArrowRight")
        await page.wait_for_timeout(300)
        facts["after_right"] = await page.evaluate(indices)
        await page.keyboard.press("Space")
        await page.wait_for_timeout(300)
        facts["after_space"] = await page.evaluate(indices)
        # the screenshot: the first slide that shows a figure (else the second slide)
        await page.evaluate("""(id) => { const R = require(id); const img = document.querySelector('.reveal img');
          let s = img && img.closest('section'); const i = s ? R.getIndices(s) : {h: 1, v: 0};
          R.slide(i.h, i.v, 99); }""", REVEAL)
        await page.wait_for_timeout(800)
        await page.screenshot(path=str(shot))
    finally:
        await context.close()
    facts.update(outside=outside, errors=errors)
    return facts


@pytest.fixture(scope="module")
def deck_facts(decks, chromium, screenshots) -> dict[str, dict]:
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e '.[dev]')")
    from playwright.async_api import async_playwright

    async def run() -> dict[str, dict]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                results = {}
                for nb in LECTURES:   # one at a time: two cores, and each deck typesets its math on load
                    results[nb.stem] = await look_at_deck(browser, decks / f"{nb.stem}.slides.html",
                                                          screenshots / f"slides-{nb.stem}.png")
                return results
            finally:
                await browser.close()

    began = time.monotonic()
    results = asyncio.run(run())
    print(f"slides: {len(results)} decks opened in {time.monotonic() - began:.0f} s")
    return results


def test_the_decks_folder_is_self_contained(decks):
    assert (decks / "index.html").exists()
    index = (decks / "index.html").read_text()
    for nb in LECTURES:
        assert f"{nb.stem}.slides.html" in index
    for page in decks.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        for url in re.findall(r"""(?:src|href)=["']([^"'#][^"']*)["']""", html):
            if url.startswith("data:"):
                continue
            assert "://" not in url and not url.startswith("//"), f"{page.name} links outside the folder: {url}"
            assert (decks / url.split("?")[0]).exists(), f"{page.name}: {url} is missing"


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_each_deck_opens_offline_advances_and_shows_figures_and_math(deck_facts, path):
    facts = deck_facts[path.stem]
    assert facts["outside"] == [], f"the deck asked the network for {facts['outside']}"
    assert facts["errors"] == [], facts["errors"]
    assert facts["sections"] > 1
    assert facts["start"] != facts["after_right"] != facts["after_space"], facts
    nb = nbformat.read(path, as_version=4)
    shown = [c for c in nb.cells if slide_type(c) != "skip"]
    figures = sum("image/png" in o.get("data", {}) for c in shown if c.cell_type == "code" for o in c.outputs)
    assert len(facts["images"]) >= figures and all(w > 0 for w in facts["images"]), facts["images"]
    if any("$" in c.source for c in shown if c.cell_type == "markdown"):
        assert facts["math"] > 0, "no formula was typeset"
        assert facts["mathErrors"] == 0
        assert "$$" not in facts["text"] and not re.search(r"\\(frac|sum|mathbb|sigma)\b", facts["text"]), \
            "raw TeX is visible"


# ------------------------------------------------------------------ RISE in make lab
def test_rise_is_installed_as_a_lab_extension():
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "jupyter"), "labextension", "list"], capture_output=True,
                            text=True, timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"jupyterlab-rise v\S+ enabled\s+OK", text), text


def test_rise_button_turns_a_lecture_into_a_slideshow(tmp_path, chromium, screenshots):
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e '.[dev]')")
    from playwright.async_api import async_playwright
    from test_browser import APP_READY, OPEN, RESTORED, start_lab, stop_lab

    lecture = "lectures/02_backprop_on_graphs.ipynb"
    root, home = tmp_path / "root", tmp_path / "home"
    (root / "lectures").mkdir(parents=True)
    home.mkdir()
    shutil.copy(REPO / lecture, root / lecture)   # a copy: the course's notebook is never rewritten
    proc, log, base, token = start_lab(home, root, tmp_path / "lab.log")

    async def run() -> dict:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                deadline = time.monotonic() + 120
                while True:   # the server takes a few seconds to listen
                    try:
                        await page.goto(f"{base}/lab?token={token}")
                        break
                    except Exception as error:  # playwright's Error: connection refused
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise AssertionError(f"JupyterLab did not start: {Path(log.name).read_text()[-3000:]}") \
                                from error
                        await asyncio.sleep(0.5)
                await page.wait_for_function(APP_READY, timeout=120_000, polling=250)
                await page.evaluate(RESTORED)
                commands = await page.evaluate(
                    "() => ['RISE:preview', 'RISE:slideshow'].filter(c => window.jupyterapp.commands.hasCommand(c))")
                await page.evaluate(OPEN, lecture)
                button = page.locator('[data-jp-item-name="RISE-button"] jp-button, '
                                      '[data-jp-item-name="RISE-button"] button').first
                await button.wait_for(timeout=60_000)
                await button.click()
                frame = None
                for _ in range(240):
                    frame = next((f for f in page.frames if "/rise/" in f.url), None)
                    if frame:
                        break
                    await page.wait_for_timeout(250)
                assert frame, "no RISE slideshow opened"
                await frame.wait_for_function("() => document.querySelectorAll('.reveal .slides section').length > 1"
                                              " && document.querySelector('.reveal .slides section.present')",
                                              timeout=120_000, polling=250)
                present = "() => document.querySelector('.reveal .slides section.present').innerText"
                first = await frame.evaluate(present)
                await frame.locator(".reveal").click()
                await page.keyboard.press("ArrowRight")
                await frame.wait_for_function(f"(first) => ({present})() !== first", arg=first, timeout=30_000)
                result = {"commands": commands, "first": first, "next": await frame.evaluate(present),
                          "sections": await frame.evaluate("document.querySelectorAll('.reveal .slides section').length")}
                await page.screenshot(path=str(screenshots / "slides-rise-02_backprop_on_graphs.png"))
                return result
            finally:
                await browser.close()

    try:
        result = asyncio.run(run())
    finally:
        stop_lab(proc)
        log.close()
    assert result["commands"] == ["RISE:preview", "RISE:slideshow"]
    assert result["sections"] > 1
    assert result["first"].startswith("Lecture 02"), result["first"][:200]
    assert result["next"] != result["first"]
