"""`make site` builds the lectures into a static web site (Sphinx + MyST-NB, stored outputs, offline):
every lecture has a page, every page shows its notebook's figures, and no internal link is broken."""
import base64
import hashlib
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest

from nbgrader_harness import REPO

LECTURES = sorted((REPO / "lectures").glob("*.ipynb"))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built with the command `make site` runs (read from `make -n`), into a temp folder."""
    out = tmp_path_factory.mktemp("site")
    dry = subprocess.run(["make", "-s", "-n", "site", f"SITE={out}"], cwd=REPO, capture_output=True, text=True, check=True)
    lines = [line for line in dry.stdout.splitlines() if "sphinx" in line]
    assert len(lines) == 1, dry.stdout
    cmd = shlex.split(lines[0])
    cmd[0] = sys.executable if cmd[0].endswith("python") else cmd[0]
    build = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "WARNING" not in build.stderr, build.stderr[-3000:]
    return out


def test_every_lecture_has_a_page(site):
    assert LECTURES
    for nb in LECTURES:
        page = site / "lectures" / f"{nb.stem}.html"
        assert page.exists(), f"no page for {nb.name}"
        title = nbformat.read(nb, as_version=4).cells[0].source.splitlines()[0].lstrip("# ").strip()
        assert title.split(" ", 2)[-1][:20] in page.read_text(encoding="utf-8")
    index = (site / "website" / "index.html").read_text(encoding="utf-8")
    assert all(f"lectures/{nb.stem}.html" in index for nb in LECTURES)
    assert "website/index.html" in (site / "index.html").read_text()


def test_every_figure_of_a_lecture_is_on_its_page(site):
    for nb_path in LECTURES:
        nb = nbformat.read(nb_path, as_version=4)
        pngs = [o["data"]["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "image/png" in o.get("data", {})]
        page = site / "lectures" / f"{nb_path.stem}.html"
        images = [(page.parent / unquote(src)).resolve() for src in parse(page).images if not src.startswith("data:")]
        assert len(images) >= len(pngs), f"{nb_path.name}: {len(pngs)} figures, {len(images)} <img> on its page"
        shown = {hashlib.sha256(p.read_bytes()).hexdigest() for p in images if p.exists()}
        for i, png in enumerate(pngs):
            digest = hashlib.sha256(base64.b64decode(png)).hexdigest()
            assert digest in shown, f"{nb_path.name}: figure {i + 1} is not on its page"


def test_no_internal_link_is_broken(site):
    broken = []
    for page in site.rglob("*.html"):
        for link in parse(page).links:
            url = urlparse(link)
            if url.scheme or url.netloc or link.startswith(("#", "mailto:", "data:")):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {link}")
    assert not broken, "\n".join(broken[:20])
