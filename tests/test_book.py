import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from urbanlib.book import ManifestError, NotebookFailed, load_manifest, run_entries
from urbanlib.book.runner import cache_key, source_tree_hash

sys.path.insert(0, str(Path(__file__).parent / "data" / "book"))
import make_notebook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_manifest_expands_grid_and_scale(tmp_path):
    entries = load_manifest(make_notebook.write(tmp_path), scale="smoke")
    assert [e.params for e in entries] == [{"x": 7, "scale": "smoke"}, {"x": 12, "scale": "smoke"}]
    assert [e.title for e in entries] == ["Square of 7", "Square of 12"]
    assert len({e.slug for e in entries}) == 2


def test_manifest_errors_name_the_entry(tmp_path):
    (tmp_path / "runs.yml").write_text("experiments:\n  - notebook: missing.ipynb\n")
    with pytest.raises(ManifestError, match=r"experiments\[0\].*missing.ipynb"):
        load_manifest(tmp_path / "runs.yml", "smoke")


def test_cache_key_changes_with_params_and_source(tmp_path):
    e1, e2 = load_manifest(make_notebook.write(tmp_path), scale="smoke")
    tree = source_tree_hash()
    assert cache_key(e1, tree) != cache_key(e2, tree)
    assert cache_key(e1, tree) != cache_key(e1, "edited-tree")
    assert cache_key(e1, tree) == cache_key(e1, tree)


def test_failing_cell_names_notebook_params_cell(tmp_path):
    manifest = make_notebook.write(tmp_path)
    nb = (tmp_path / "square.ipynb").read_text().replace("x * x", "x * undefined_name")
    (tmp_path / "square.ipynb").write_text(nb)
    entries = load_manifest(manifest, "smoke")[:1]
    with pytest.raises(NotebookFailed) as err:
        run_entries(entries, tmp_path / "out", tmp_path / "cache", log=lambda *_: None)
    msg = str(err.value)
    assert "square.ipynb" in msg and "'x': 7" in msg and "NameError" in msg and "cell" in msg


@pytest.mark.notebooks
def test_build_renders_computed_output(tmp_path):
    """The whole pipeline on a one-notebook manifest: papermill -> _toc.yml -> strict jupyter-book."""
    root = tmp_path / "site"
    (root / "book").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Test book\n\nIntro.\n")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    (root / "nbs").mkdir()
    manifest = make_notebook.write(root / "nbs")
    proc = subprocess.run([sys.executable, "-m", "urbanlib.book", "build", "--scale", "smoke",
                           "--manifest", str(manifest), "--root", str(root)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = list((root / "_build" / "html" / "book" / "generated").glob("*.html"))
    html = "\n".join(p.read_text() for p in pages)
    assert "square of 7 is 49" in html and "square of 12 is 144" in html
    timings = json.loads((root / ".cache" / "book_timings.json").read_text())
    assert set(v["status"] for v in timings.values()) == {"ran"}
    # a second run with nothing changed is served from the cache
    proc = subprocess.run([sys.executable, "-m", "urbanlib.book", "run", "--scale", "smoke",
                           "--manifest", str(manifest), "--root", str(root)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "2 cached" in proc.stdout
