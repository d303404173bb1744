import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from urbanlib.book import ManifestError, NotebookFailed, load_manifest, run_entries
from urbanlib.book.runner import cache_key
from urbanlib.provenance import source_tree_hash

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
    (root / "book" / "intro.md").write_text("# Test book\n\nIntro with math: $L = (1-\\mu) L_C + \\mu L_D$.\n")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "book" / "_static", root / "book" / "_static")
    (root / "nbs").mkdir()
    manifest = make_notebook.write(root / "nbs", stored=[5])
    (root / "nbs" / "runs.yml").write_text(manifest.read_text() + "    stored_scales: [smoke]\n")
    cli = [sys.executable, "-m", "urbanlib.book"]
    where = ["--scale", "smoke", "--manifest", str(manifest), "--root", str(root)]
    proc = subprocess.run([*cli, "store", *where], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / "results" / "pages" / "smoke" / "square__5.ipynb").is_file()
    proc = subprocess.run([*cli, "build", *where], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = list((root / "_build" / "html" / "book" / "generated").glob("*.html"))
    html = "\n".join(p.read_text() for p in pages)
    assert "square of 7 is 49" in html and "square of 12 is 144" in html
    assert "square of 5 is 25" in html and "Stored page, not executed by this build" in html
    assert "Square of 5 (stored)" in (root / "_toc.yml").read_text()
    # offline: MathJax comes from the book's own files, and no page loads a script, style or font from elsewhere
    import re

    every = {p: p.read_text() for p in (root / "_build" / "html").rglob("*.html")}
    intro = next(t for p, t in every.items() if p.name == "intro.html")
    assert "_static/mathjax/tex-mml-chtml.js" in intro
    external = re.compile(r"<(?:script|link|img)[^>]+(?:src|href)=[\"'](?:https?:)?//", re.I)
    assert not {p.name for p, t in every.items() if external.search(t)}
    assert (root / "_build" / "html" / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    from urbanlib.cache import cache_root

    timings = json.loads((cache_root() / "book_timings.json").read_text())  # the one cache ($URBANLIB_CACHE)
    assert sorted(v["status"] for v in timings.values()) == ["ran", "ran", "stored"]
    # a second run with nothing changed is served from the cache
    proc = subprocess.run([*cli, "run", *where], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "2 cached" in proc.stdout


def test_manifest_stored_sets_are_flagged_and_limited_to_their_scales(tmp_path):
    manifest = make_notebook.write(tmp_path, stored=[5])
    entries = load_manifest(manifest, scale="default")
    assert [(e.params["x"], e.stored) for e in entries] == [(7, False), (12, False), (5, True)]
    # stored pages belong to the default scale unless `stored_scales` says otherwise
    assert [e.params["x"] for e in load_manifest(manifest, scale="smoke")] == [7, 12]
    text = manifest.read_text()
    manifest.write_text(text + "    stored_scales: default\n")  # a string, not a list
    with pytest.raises(ManifestError, match=r"square.*'stored_scales' must be a list"):
        load_manifest(manifest, scale="default")
    manifest.write_text(text)
    bad = manifest.read_text().replace("title: 'Square of {x}'", "title: 'Square of {y}'")
    manifest.write_text(bad)
    with pytest.raises(ManifestError, match=r"square.*title names parameter 'y'"):
        load_manifest(manifest, scale="default")


def test_store_then_place_labels_provenance_and_staleness(tmp_path, monkeypatch):
    import nbformat

    from urbanlib.book.stored import META_KEY, place_stored, store_entries

    manifest = make_notebook.write(tmp_path, stored=[5, 6])
    stored = [e for e in load_manifest(manifest, scale="default") if e.stored]
    root = tmp_path / "site"
    store_entries(stored[:1], root, "default", log=lambda *_: None)  # x=6 is never stored
    path = root / "results" / "pages" / "default" / f"{stored[0].slug}.ipynb"
    meta = nbformat.read(path, as_version=4).metadata[META_KEY]
    assert meta["params"] == {"x": 5, "scale": "default"} and meta["seconds"] > 0
    # resumable: a second store keeps the page (same notebook and parameters)
    log = []
    store_entries(stored[:1], root, "default", log=log.append)
    assert log and log[0].startswith("kept")

    placed = place_stored(stored, root, "default", tmp_path / "out")
    assert [r.status for r in placed] == ["stored", "missing"]
    page = nbformat.read(placed[0].output, as_version=4)
    text = "\n".join(c.source for c in page.cells)
    assert "square of 5 is 25" in "".join(str(o) for c in page.cells for o in c.get("outputs", []))
    assert "Stored page, not executed by this build" in text and meta["commit"] in text
    # the page's heading is its title, "(stored)" included; the banner is an admonition under it
    assert page.cells[0].source.startswith("# Square of 5 (stored)\n") and "*Square*" in page.cells[0].source
    assert page.cells[1].source.startswith("```{admonition} Stored page") and ":class: note" in page.cells[1].source
    assert "changed since" not in page.cells[1].source  # neither the notebook nor its code changed
    assert "Not stored yet" in nbformat.read(placed[1].output, as_version=4).cells[0].source
    from urbanlib.book.stored import stored_index

    index = stored_index(manifest, root, "default")
    assert index["stored"].tolist() == [True, False] and index["commit"].iloc[0] == meta["commit"]
    assert not index["notebook changed since"].iloc[0] and index["seconds"].iloc[0] == meta["seconds"]
    # editing the notebook marks the stored page as coming from an earlier version
    nb = (tmp_path / "square.ipynb").read_text().replace("square of", "the square of")
    (tmp_path / "square.ipynb").write_text(nb)
    again = place_stored(stored[:1], root, "default", tmp_path / "out")
    assert again[0].status == "stale"
    stale = nbformat.read(again[0].output, as_version=4).cells[1].source
    assert "`square.ipynb` has changed since" in stale and ":class: warning" in stale
    assert stored_index(manifest, root, "default")["notebook changed since"].iloc[0]
    # a change in the code the page imports is flagged too
    import urbanlib.book.stored as stored_mod

    monkeypatch.setattr(stored_mod, "library_hash", lambda notebook, root=None: "edited-code")
    again = place_stored(stored[:1], root, "default", tmp_path / "out")
    banner = nbformat.read(again[0].output, as_version=4).cells[1].source
    assert "urbanlib code this notebook imports has changed" in banner
    assert stored_index(manifest, root, "default")["library changed since"].iloc[0]


def test_damaged_stored_page_names_the_file(tmp_path):
    from urbanlib.book.stored import read_provenance

    bad = tmp_path / "page.ipynb"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="page.ipynb"):
        read_provenance(bad)


def test_import_closure_follows_imports_relative_lazy_and_parents(tmp_path):
    import nbformat

    from urbanlib.book.stored import import_closure, library_hash

    pkg = tmp_path / "urbanlib"
    files = {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/one.py": "from .two import f\nfrom . import sub\n",
        "a/two.py": "def f():\n    import urbanlib.b.three\n",  # an import inside a function counts
        "b/__init__.py": "",
        "b/three.py": "x = 1\n",
        "b/rules.json": "{}",  # data beside a module in the closure
        "a/sub/__init__.py": "from ...c import four\n",  # three levels up: urbanlib.c
        "c/__init__.py": "",
        "c/four.py": "",
        "d/__init__.py": "",
        "d/table.csv": "a\n1\n",  # data of a package the page never imports
        "lazy/__init__.py": "from importlib import import_module\ndef get(n):\n    return import_module(n)\n",
        "lazy/plug.py": "y = 1\n",
        "unused.py": "z = 1\n",
        "data.json": "{}",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%matplotlib inline\nfrom urbanlib.a.one import f\nimport urbanlib.lazy")]
    nbformat.write(nb, tmp_path / "page.ipynb")
    got = {p.relative_to(pkg).as_posix() for p in import_closure(tmp_path / "page.ipynb", pkg)}
    assert got == {"__init__.py", "a/__init__.py", "a/one.py", "a/two.py", "a/sub/__init__.py", "b/__init__.py",
                   "b/three.py", "c/__init__.py", "c/four.py", "lazy/__init__.py", "lazy/plug.py"}
    h = library_hash(tmp_path / "page.ipynb", pkg)
    for rel in ("unused.py", "d/table.csv"):  # outside the closure: the page is not stale
        (pkg / rel).write_text((pkg / rel).read_text() + " ")
        assert library_hash(tmp_path / "page.ipynb", pkg) == h
    for rel in ("b/three.py", "b/rules.json", "data.json"):  # in the closure, data beside it, top-level data
        (pkg / rel).write_text((pkg / rel).read_text() + " ")
        assert library_hash(tmp_path / "page.ipynb", pkg) != h
        h = library_hash(tmp_path / "page.ipynb", pkg)


def test_a_cell_that_is_not_python_names_the_notebook_and_cell(tmp_path):
    import nbformat

    from urbanlib.book.stored import import_closure

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%%bash\necho skipped"), nbformat.v4.new_code_cell("x = (")]
    nbformat.write(nb, tmp_path / "odd.ipynb")
    with pytest.raises(ValueError, match=r"odd.ipynb: code cell 1 is not plain Python"):
        import_closure(tmp_path / "odd.ipynb")


def test_real_stored_pages_do_not_depend_on_the_verdict_code(tmp_path):
    """Editing the verdict code or the results tooling keeps the stored pages fresh."""
    import shutil

    from urbanlib.book.stored import import_closure, library_hash

    pkg = shutil.copytree(REPO / "urbanlib", tmp_path / "urbanlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("benchmark", "pretrain_urbanln", "similarity", "clusters", "captions"):
        nb = REPO / "notebooks" / f"{name}.ipynb"
        rel = {p.relative_to(pkg).as_posix() for p in import_closure(nb, pkg)}
        assert "models/__init__.py" in rel or name == "captions"
        assert not {r for r in rel if "verdicts" in r or r.startswith(("book/", "results/"))}, name
    nb = REPO / "notebooks" / "benchmark.ipynb"
    before = library_hash(nb, pkg)
    for rel in ("results/verdicts.py", "analysis/verdicts.py", "results/views.py"):
        (pkg / rel).write_text((pkg / rel).read_text() + "\n# edited\n")
    assert library_hash(nb, pkg) == before
    (pkg / "models" / "msd.py").write_text((pkg / "models" / "msd.py").read_text() + "\n# edited\n")
    assert library_hash(nb, pkg) != before



def test_default_book_has_every_profile_live_or_stored():
    """Issues 5, 6 and 8: every SynthCity profile gets these pages at the default scale."""
    from urbanlib.data.synthcity import PROFILES

    entries = load_manifest(REPO / "notebooks" / "runs.yml", "default")
    pages = {(e.experiment, e.params.get("city"), e.params.get("imagery")) for e in entries}
    for city in PROFILES:
        assert ("benchmark", city, None) in pages
        assert ("clusters", city, None) in pages and ("similarity", city, None) in pages
        for imagery in ("satellite", "street"):
            assert ("pretrain_urbanln", city, imagery) in pages
    live = [e for e in entries if not e.stored]
    assert all(e.params.get("city") in (None, "synth-ring") for e in live if e.experiment == "benchmark")


def test_store_goes_on_after_a_failing_page_and_reports_it(tmp_path):
    from urbanlib.book.stored import store_entries

    manifest = make_notebook.write(tmp_path, stored=[5, 6])
    nb = (tmp_path / "square.ipynb").read_text().replace("x * x", "x * x if x != 5 else undefined_name")
    (tmp_path / "square.ipynb").write_text(nb)
    stored = [e for e in load_manifest(manifest, scale="default") if e.stored]
    with pytest.raises(NotebookFailed, match=r"(?s)1 of 2 stored page.*square.ipynb.*'x': 5.*NameError"):
        store_entries(stored, tmp_path / "site", "default", log=lambda *_: None)
    pages = sorted(p.name for p in (tmp_path / "site" / "results" / "pages" / "default").glob("*.ipynb"))
    assert pages == [".square__5.running.ipynb", "square__6.ipynb"]  # the failed run kept for its traceback


def test_committed_stored_pages_match_the_manifest_and_ran_cleanly():
    """Every committed stored page belongs to a stored entry, carries its parameters, and has no error output."""
    import nbformat

    from urbanlib.book.stored import META_KEY, stored_dir

    entries = {e.slug: e for e in load_manifest(REPO / "notebooks" / "runs.yml", "default") if e.stored}
    pages = sorted(stored_dir(REPO, "default").glob("[!.]*.ipynb"))
    if not pages:
        pytest.skip("no stored page committed in this checkout")
    for page in pages:
        assert page.stem in entries, f"{page.name} is not a stored entry of notebooks/runs.yml"
        nb = nbformat.read(page, as_version=4)
        assert nb.metadata[META_KEY]["params"] == entries[page.stem].params, page.name
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"{page.name}: {errors[0].get('ename')}"


def test_params_empty_list_means_stored_pages_only(tmp_path):
    manifest = make_notebook.write(tmp_path, stored=[5])
    text = manifest.read_text().replace("    params:\n      - x: [7, 12]\n", "    params: []\n")
    manifest.write_text(text)
    entries = load_manifest(manifest, scale="default")
    assert [(e.params["x"], e.stored) for e in entries] == [(5, True)]


def test_the_urbanln_ablation_and_msd_sweep_pages_are_stored_at_the_default_scale():
    entries = load_manifest(REPO / "notebooks" / "runs.yml", "default")
    heavy = [e for e in entries if e.experiment == "msd_sweeps"
             or (e.experiment == "ablations" and e.params.get("family") in ("UrbanLN", "mu"))]
    assert len(heavy) == 4 and all(e.stored for e in heavy)  # `make book` stays within its budget


def _dataset_manifest(folder: Path) -> Path:
    """A one-page manifest whose page reads ``hello.txt`` from the dataset named ``toy-release``."""
    import nbformat as nbf

    nb = nbf.v4.new_notebook()
    params = nbf.v4.new_code_cell('data_dir: str = ""  # dataset folder\nscale: str = "smoke"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbf.v4.new_code_cell(
        'from pathlib import Path\nprint("read:", (Path(data_dir) / "hello.txt").read_text())')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, folder / "reads.ipynb")
    (folder / "runs.yml").write_text(
        "experiments:\n  - key: reads\n    notebook: reads.ipynb\n    title: 'Reads {data_dir}'\n"
        "    params:\n      - data_dir: toy-release\n")
    return folder / "runs.yml"


def test_a_live_page_on_an_absent_dataset_is_skipped_and_a_present_one_gets_its_folder(tmp_path, monkeypatch):
    """Issue 20: the Beijing map page is built only where the release is; elsewhere the log says why."""
    from urbanlib.book.runner import data_absent, with_data_path

    root = tmp_path / "site"
    (root / "nbs").mkdir(parents=True)
    manifest = _dataset_manifest(root / "nbs")
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    monkeypatch.setenv("URBANLIB_DATASETS", str(datasets))
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    (entry,) = load_manifest(manifest, "smoke")
    assert "toy-release" in data_absent(entry) and "URBANLIB_DATASETS" in data_absent(entry)
    cli = [sys.executable, "-m", "urbanlib.book", "run", "--scale", "smoke", "--manifest", str(manifest),
           "--root", str(root)]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipped reads__toy-release" in proc.stdout and "executed 0 notebook(s)" in proc.stdout
    assert not (root / "book" / "generated" / "reads__toy-release.ipynb").exists()

    (datasets / "toy-release").mkdir()
    (datasets / "toy-release" / "hello.txt").write_text("tile 42")
    assert data_absent(entry) is None
    assert with_data_path(entry).params["data_dir"] == str(datasets / "toy-release")
    assert with_data_path(entry).params["scale"] == "smoke" and entry.params["data_dir"] == "toy-release"
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "executed 1 notebook(s)" in proc.stdout
    assert "read: tile 42" in (root / "book" / "generated" / "reads__toy-release.ipynb").read_text()


def test_the_beijing_map_is_a_live_page_that_names_the_release_and_is_never_stored():
    entries = [e for e in load_manifest(REPO / "notebooks" / "runs.yml", "default") if e.params.get("data_dir")]
    maps = [e for e in entries if e.experiment == "urban_insights"]
    assert [(e.params["city"], e.params["layout"], e.stored) for e in maps] == [("Beijing", "urbanclip", False)]
    assert maps[0].params["data_dir"] == "urbanclip-release"  # a name under the datasets root, not a path
