"""The browser check of the built book (issue 19): a page with NaN, an external request, a blank figure
or an absolute path fails; a smoke-scale book of a few real pages reads clean in headless Chromium."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import need_browser
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "data" / "book"))
import make_notebook  # noqa: E402


def test_the_check_sees_nan_external_requests_blank_figures_and_paths(tmp_path):
    need_browser()
    from urbanlib.book.browser import OfflineBrowser
    from urbanlib.book.check import check_page

    Image.fromarray(np.full((40, 60, 3), 255, np.uint8)).save(tmp_path / "blank.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "fig.png")
    (tmp_path / "bad.html").write_text(
        "<html><body><main><p>population: nan</p><p>cache at /secret/place/x</p>"
        "<div class='cell_output'><img src='blank.png'></div>"
        "<script src='https://cdn.example.org/x.js'></script></main></body></html>")
    (tmp_path / "good.html").write_text(
        "<html><body><main><div class='cell_input'><pre>y = np.nan</pre></div><p>R² 0.512 ± 0.013, nanometre</p>"
        "<div class='cell_output'><img src='fig.png'></div></main></body></html>")
    with OfflineBrowser() as b:
        bad = check_page(b, tmp_path / "bad.html", tmp_path, tmp_path / "shots", forbidden=["/secret/place"])
        good = check_page(b, tmp_path / "good.html", tmp_path, tmp_path / "shots", forbidden=["/secret/place"])
    kinds = " | ".join(bad.problems)
    assert "external requests" in kinds and "NaN" in kinds and "blank" in kinds and "/secret/place" in kinds
    assert good.ok, good.problems  # code inputs may say np.nan; words containing 'nan' are fine
    assert good.figures == 1 and Path(good.screenshot).is_file()


@pytest.mark.notebooks
def test_a_smoke_book_of_real_pages_reads_clean_in_the_browser(tmp_path):
    """data.ipynb and the square pages at smoke scale, built strictly, then every page in Chromium."""
    need_browser()
    root = tmp_path / "site"
    (root / "book").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Test book\n\nMath: $L = (1-\\mu) L_C + \\mu L_D$.\n")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book" / "_static", root / "book" / "_static")
    (root / "nbs").mkdir()
    manifest = make_notebook.write(root / "nbs")
    manifest.write_text(manifest.read_text() + (
        f"  - key: data\n    notebook: {REPO / 'notebooks' / 'data.ipynb'}\n    title: 'Data: {{city}}'\n"
        "    part: Data\n    params:\n      - city: [synth-ring]\n"))
    env = {**os.environ, "URBANLIB_CACHE": str(tmp_path / "cache"), "URBANLIB_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "urbanlib.book", "build", "--scale", "smoke", "--manifest", str(manifest),
           "--root", str(root), "--strict-log", "--jobs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "without encryption" not in proc.stdout + proc.stderr  # the kernels' TCP warning is silenced
    from urbanlib.book.check import check_book

    results = check_book(root / "_build" / "html", tmp_path / "shots", log=lambda *_: None)
    names = {r.page: r for r in results}
    assert len(results) >= 4, sorted(names)
    assert not [r for r in results if not r.ok], [(r.page, r.problems) for r in results if not r.ok]
    data = next(r for p, r in names.items() if "data__synth-ring" in p)
    assert data.figures >= 4 and Path(data.screenshot).is_file()
    html = (root / "_build" / "html" / data.page).read_text()
    assert "<title>Data: synth-ring" in html  # the page's title is its manifest title
