"""The lectures as slides: slide metadata by a rule, an outline to review it, offline reveal.js decks.

    python -m dlcourse.slides tag lectures/*.ipynb          # fill in missing slide types by the rule
    python -m dlcourse.slides outline lectures/04_convolution.ipynb
    python -m dlcourse.slides export --assets .venv/slides/node_modules --out slides lectures/*.ipynb

Each cell's `metadata.slideshow.slide_type` is what RISE (live, in JupyterLab) and nbconvert's
slides exporter (`make slides`) read: "slide", "subslide", "fragment", "-" (continue the slide)
or "skip". The rule (`slide_types`), in order:

1. a markdown cell with a `#` or `##` heading starts a slide (the title, each section; also a
   cell that ends one section and opens the next with its heading);
2. a markdown cell with a `###` heading, or any other markdown cell, starts a
   sub-slide: one idea per slide, as in the decks (a new paragraph introduces the next computation);
   a short summary paragraph ("Summary: ...", bold or italic too) that still fits becomes a
   fragment of the slide before it;
3. a helper code cell is skipped: the setup cell before the first section (imports, seeds, the
   lecture's helpers), and any cell made only of imports, definitions, asserts and settings calls
   that shows nothing (skipped cells still run);
4. a code cell whose output is long (more than LONG_OUTPUT lines of text) is skipped;
5. any other code cell continues its slide ("-") while the slide still fits (SLIDE_LINES lines,
   counting source, text output and figures); a second code cell that fits becomes a fragment;
   a cell that does not fit starts a sub-slide of its own, unless all the slide has so far is a
   short introduction (a third of a slide), which stays with its code (the slide then scrolls).

The rule only fills in cells that have no slide type yet (unless `force=True`), so types set by
hand after reviewing the outline are kept when the rule runs again.
"""
from __future__ import annotations

import argparse
import ast
import base64
import copy
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

SLIDE_TYPES = ("slide", "subslide", "fragment", "-", "skip", "notes")
SLIDE_LINES = 26      # lines of text that fit on a 960 x 700 slide at the deck's font size
LONG_OUTPUT = 30      # text output lines above which a cell is skipped (it would need a slide of its own)
LINE_PX = 27          # height of one line, to turn a figure's pixels into lines
CHARS_PER_LINE = 95   # characters on one line of a slide
SUMMARY_LINES = 3     # a summary of at most this many lines may be a fragment
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
HELPER_CALLS = ("seed", "set_printoptions", "set_num_threads", "manual_seed", "filterwarnings")


# ------------------------------------------------------------------ the rule
def slide_type(cell) -> str | None:
    """The cell's stored slide type, or None."""
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type")


def _wrapped(text: str) -> int:
    return sum(max(1, -(-len(line) // CHARS_PER_LINE)) for line in text.splitlines())


def _png_lines(data: str) -> int:
    """Lines a PNG figure takes: its height in pixels (from the PNG header) over LINE_PX."""
    head = base64.b64decode(data[:44])
    height = struct.unpack(">I", head[20:24])[0] if head[12:16] == b"IHDR" else 300
    return -(-height // LINE_PX)


def output_lines(cell, figures: bool = True) -> int:
    """Lines of a code cell's outputs: printed text, and each figure or widget as its height in
    lines (with `figures=False`, printed text only)."""
    lines = 0
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            lines += _wrapped(out.get("text", ""))
        elif out.get("output_type") == "error":
            lines += len(out.get("traceback", []))
        data = out.get("data", {})
        if "image/png" in data:
            lines += _png_lines(data["image/png"]) if figures else 0
        elif WIDGET_MIME in data:
            lines += 8 if figures else 0
        elif "text/plain" in data:
            lines += _wrapped(data["text/plain"])
    return lines


def cell_lines(cell) -> int:
    """How tall a cell is on a slide, in lines."""
    if cell.cell_type == "markdown":
        return _wrapped(cell.source) + 1
    return _wrapped(cell.source) + output_lines(cell) + 1


def is_helper(cell) -> bool:
    """A code cell that shows nothing and is made only of imports, function or class definitions,
    asserts and settings calls (seeds, print options, thread counts)."""
    if cell.cell_type != "code" or output_lines(cell):
        return False
    code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False

    def helper(node) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assert, ast.FunctionDef, ast.ClassDef)):
            return True
        value = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
        if isinstance(value, ast.Call):
            name = ast.unparse(value.func)
            return any(name.endswith(c) for c in HELPER_CALLS)
        return False

    return bool(body) and all(helper(n) for n in body)


def _heading_level(cell) -> int:
    """The highest heading level in a markdown cell (1 for `#`), 0 when it has no heading."""
    levels = re.findall(r"^(#{1,6})\s", cell.source, flags=re.M) if cell.cell_type == "markdown" else []
    return min(map(len, levels), default=0)


def slide_types(nb) -> list[str]:
    """The slide type of every cell of `nb` by the module's rule (stored types are not read)."""
    types: list[str] = []
    height = 0                # lines on the current slide so far
    codes_on_slide = 0        # code cells shown on the current slide
    in_section = False        # past the first numbered section ("## ...")
    for cell in nb.cells:
        lines = cell_lines(cell)
        level = _heading_level(cell)
        if cell.cell_type == "markdown":
            if level in (1, 2) or not types:
                kind = "slide"
                in_section = in_section or level == 2
            elif (cell.source.lstrip("*_ \n").startswith("Summary") and lines <= SUMMARY_LINES + 1
                  and height + lines <= SLIDE_LINES):
                kind = "fragment"
            else:
                kind = "subslide"
        elif cell.cell_type != "code":
            kind = "skip"
        elif not in_section or is_helper(cell):
            kind = "skip"
        elif output_lines(cell, figures=False) > LONG_OUTPUT:
            kind = "skip"
        elif height + lines > SLIDE_LINES and height > SLIDE_LINES // 3:
            kind = "subslide"
        elif codes_on_slide:
            kind = "fragment"
        else:
            kind = "-"
        if kind in ("slide", "subslide"):
            height, codes_on_slide = 0, 0
        if kind != "skip":
            height += lines
            codes_on_slide += cell.cell_type == "code"
        types.append(kind)
    return types


RISE_SETTINGS = {"scroll": True}   # RISE (live slides): a slide taller than the screen scrolls


def tag(nb, force: bool = False) -> int:
    """Write the rule's slide type into every cell that has none (every cell with `force`), and
    RISE_SETTINGS into the notebook's `rise` metadata; return how many cells changed. Only
    metadata changes: sources and outputs are left alone."""
    for key, value in RISE_SETTINGS.items():
        nb.metadata.setdefault("rise", {}).setdefault(key, value)
    changed = 0
    for cell, kind in zip(nb.cells, slide_types(nb)):
        if slide_type(cell) is None or force:
            if slide_type(cell) != kind:
                cell.metadata.setdefault("slideshow", {})["slide_type"] = kind
                changed += 1
    return changed


@dataclass
class Slide:
    """One slide of the outline: its type, its first line and the cells (index, type) on it."""
    kind: str
    title: str
    cells: list[tuple[int, str]]
    lines: int


def slides(nb) -> list[Slide]:
    """The notebook's slides as its stored metadata makes them (skipped cells left out)."""
    result: list[Slide] = []
    for i, cell in enumerate(nb.cells):
        kind = slide_type(cell) or "-"
        if kind in ("skip", "notes"):
            continue
        if kind in ("slide", "subslide") or not result:
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            result.append(Slide(kind, first.strip()[:70], [], 0))
        result[-1].cells.append((i, kind))
        result[-1].lines += cell_lines(cell)
    return result


def outline(nb) -> str:
    """A slide per line: `slide`/`  sub`, its height in lines, its cells, its first line."""
    rows = []
    for s in slides(nb):
        cells = " ".join(f"{i}{'+' if k == 'fragment' else ''}" for i, k in s.cells)
        mark = "slide" if s.kind == "slide" else "  sub"
        rows.append(f"{mark} {s.lines:3}  [{cells}]  {s.title}")
    skipped = [i for i, c in enumerate(nb.cells) if slide_type(c) == "skip"]
    rows.append(f"skipped cells: {skipped}")
    return "\n".join(rows)


# ------------------------------------------------------------------ the offline decks
# What `export` copies from the npm packages (installed by `make slides`, pinned in the Makefile)
# into <out>/_static/, so that a deck opened from file:// loads nothing from the network.
ASSETS = {
    "reveal.js": ["reveal.js/dist", "reveal.js/plugin/notes", "reveal.js/LICENSE"],
    "mathjax": ["mathjax/MathJax.js", "mathjax/config", "mathjax/extensions", "mathjax/jax/input/TeX",
                "mathjax/jax/output/CommonHTML", "mathjax/jax/element", "mathjax/fonts/HTML-CSS/TeX/woff",
                "mathjax/localization/en", "mathjax/LICENSE"],
    "require.js": ["requirejs/require.js"],
    "jquery.min.js": ["jquery/dist/jquery.min.js"],
}
MATHJAX_CONFIG = "TeX-AMS_CHTML-full,Safe"
# nbconvert's reveal template, less its mermaid import (an ES module from a CDN that no lecture needs)
TEMPLATE = """{%- extends 'reveal/index.html.j2' -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
WIDGET_NOTE = "[interactive widget: run this lecture in JupyterLab (make lab) to use it]"


def copy_assets(node_modules: Path, out: Path) -> Path:
    """Copy reveal.js, MathJax, require.js and jQuery from `node_modules` into `out`/_static."""
    static = out / "_static"
    for target, sources in ASSETS.items():
        for source in sources:
            src = node_modules / source
            if not src.exists():
                raise FileNotFoundError(f"{src} is missing: run `make slides` (it installs the decks' npm packages)")
            if len(sources) == 1:
                dest = static / target
            else:
                dest = static / target / Path(source).relative_to(Path(source).parts[0])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dest)
    return static


def without_widgets(nb):
    """A copy of `nb` whose widget views are a line of text: a deck has no kernel to drive them
    (and rendering their stored state would load the widget manager from a CDN)."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                out["data"] = {"text/plain": WIDGET_NOTE}
    return nb


def exporter(static_url: str = "_static"):
    """nbconvert's SlidesExporter with every script and style sheet taken from `static_url`."""
    from jinja2 import DictLoader
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.SlidesExporter.reveal_url_prefix = f"{static_url}/reveal.js"
    config.SlidesExporter.reveal_theme = "white"
    config.SlidesExporter.reveal_scroll = True      # a slide taller than the screen scrolls
    config.SlidesExporter.mathjax_url = f"{static_url}/mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    config.SlidesExporter.require_js_url = f"{static_url}/require.js"
    config.SlidesExporter.jquery_url = f"{static_url}/jquery.min.js"
    config.SlidesExporter.exclude_input_prompt = True     # "In [3]:" takes a sixth of the width
    config.SlidesExporter.exclude_output_prompt = True
    config.SlidesExporter.template_file = "dlcourse_slides.html.j2"
    exp = SlidesExporter(config=config, extra_loaders=[DictLoader({"dlcourse_slides.html.j2": TEMPLATE})])
    return exp


def export(paths, out: Path, node_modules: Path) -> list[Path]:
    """Export each notebook to `out`/<name>.slides.html (with an index.html), assets copied beside."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(Path(node_modules), out)
    exp = exporter()
    written = []
    for path in map(Path, paths):
        nb = without_widgets(nbformat.read(path, as_version=4))
        html, _ = exp.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        target = out / f"{path.stem}.slides.html"
        target.write_text(html, encoding="utf-8")
        written.append(target)
    links = "\n".join(f'<li><a href="{p.name}">{p.name.removesuffix(".slides.html")}</a></li>' for p in written)
    (out / "index.html").write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Lecture slides"
                                    f"</title></head>\n<body><h1>Lecture slides</h1>\n<ul>\n{links}\n</ul>\n"
                                    "</body></html>\n", encoding="utf-8")
    return written


# ------------------------------------------------------------------ command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.slides", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tag_cmd = sub.add_parser("tag", help="write the rule's slide types into cells that have none")
    tag_cmd.add_argument("--force", action="store_true", help="recompute every cell's type (hand edits are lost)")
    tag_cmd.add_argument("paths", nargs="+")
    show = sub.add_parser("outline", help="print each notebook's slides as stored")
    show.add_argument("paths", nargs="+")
    exp = sub.add_parser("export", help="write offline reveal.js decks")
    exp.add_argument("--out", default="slides", help="output folder (default: slides)")
    exp.add_argument("--assets", required=True, help="node_modules with reveal.js, mathjax, requirejs, jquery")
    exp.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "tag":
        for p in args.paths:
            nb = nbformat.read(p, as_version=4)
            changed = tag(nb, force=args.force)
            if changed:
                nbformat.write(nb, p)
            print(f"{p}: {changed} cells tagged")
    elif args.command == "outline":
        for p in args.paths:
            print(f"== {p}\n{outline(nbformat.read(p, as_version=4))}")
    else:
        for target in export(args.paths, Path(args.out), Path(args.assets)):
            print(f"wrote {target}")
        print(f"open {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
