"""Book runner faults (issue 18): a dead kernel and a hung cell are page failures; the manifest is checked."""

import sys
from pathlib import Path

import pytest

from urbanlib.book import ManifestError, NotebookFailed, load_manifest
from urbanlib.book.stored import store_entries

sys.path.insert(0, str(Path(__file__).parent / "data" / "book"))
import make_notebook  # noqa: E402


def _manifest(tmp_path, body: str) -> Path:
    make_notebook.write(tmp_path)
    (tmp_path / "runs.yml").write_text(body)
    return tmp_path / "runs.yml"


EXP = "experiments:\n  - key: square\n    notebook: square.ipynb\n    title: 'Square of {x}'\n"


@pytest.mark.parametrize(("body", "message"), [
    (EXP + "    parmas:\n      - x: [7]\n", r"unknown key 'parmas'; did you mean 'params'\?"),
    ("experimnts: []\n" + EXP, r"unknown key 'experimnts'; did you mean 'experiments'\?"),
    (EXP + "    params:\n      - y: [7]\n", r"square.ipynb has no parameter 'y' \(its parameters cell assigns scale, x\)"),
    (EXP + "    params:\n      - xx: [7]\n", r"no parameter 'xx'.*did you mean 'x'\?"),
    (EXP + "    scales: smokey\n", r"'scales' must be a list"),
    (EXP + "    scales: [smokey]\n", r"unknown scale 'smokey'.*did you mean 'smoke'\?"),
    (EXP + "    stored_scales: [defualt]\n", r"unknown scale 'defualt'.*did you mean 'default'\?"),
    (EXP + "    timeout_s: -1\n", r"'timeout_s' must be a positive number"),
    ("defaults: {y: 1}\n" + EXP + "    params:\n      - x: [7]\n", r"no parameter 'y'"),
])
def test_manifest_refuses_with_a_hint(tmp_path, body, message):
    with pytest.raises(ManifestError, match=message):
        load_manifest(_manifest(tmp_path, body), "smoke")


def test_scales_match_exactly_and_timeouts_are_read(tmp_path):
    body = "timeout_s: 30\n" + EXP + "    params:\n      - x: [7]\n    scales: [smoke]\n"
    assert [e.timeout_s for e in load_manifest(_manifest(tmp_path, body), "smoke")] == [30.0]
    body = EXP + "    params:\n      - x: [7]\n    scales: [default]\n    timeout_s: 5\n"
    assert load_manifest(_manifest(tmp_path, body), "smoke") == []
    assert load_manifest(_manifest(tmp_path, body), "default")[0].timeout_s == 5.0
    with pytest.raises(ManifestError, match="unknown scale 'smokey'"):
        load_manifest(_manifest(tmp_path, body), "smokey")


def test_the_real_manifest_validates():
    repo = Path(__file__).resolve().parents[1]
    assert load_manifest(repo / "notebooks" / "runs.yml", "default")


@pytest.mark.notebooks
def test_a_dead_kernel_and_a_hung_cell_are_page_failures_and_store_goes_on(tmp_path):
    manifest = make_notebook.write(tmp_path, stored=[5, 6, 8])
    nb = (tmp_path / "square.ipynb").read_text().replace(
        "x * x", "x * x if x == 8 else (__import__('os')._exit(1) if x == 5 else __import__('time').sleep(600))")
    (tmp_path / "square.ipynb").write_text(nb)
    # 20 s per page: room for a kernel to start on a loaded machine; the hung cell sleeps 600 s
    text = manifest.read_text().replace("experiments:", "timeout_s: 20\nexperiments:")
    manifest.write_text(text)
    stored = [e for e in load_manifest(manifest, scale="default") if e.stored]
    assert [e.params["x"] for e in stored] == [5, 6, 8]
    with pytest.raises(NotebookFailed) as err:
        store_entries(stored, tmp_path / "site", "default", log=lambda *_: None)
    msg = str(err.value)
    assert "2 of 3 stored page(s) failed" in msg
    assert "'x': 5" in msg and "kernel died" in msg
    assert "'x': 6" in msg and "timed out" in msg and "20 s" in msg
    pages = sorted(p.name for p in (tmp_path / "site" / "results" / "pages" / "default").glob("[!.]*.ipynb"))
    assert pages == ["square__8.ipynb"]  # the page after the two failures is stored


@pytest.mark.notebooks
def test_the_timeout_bounds_the_whole_page_not_each_cell(tmp_path):
    import nbformat

    from urbanlib.book.manifest import Entry
    from urbanlib.book.runner import execute_entry

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time")] + [nbformat.v4.new_code_cell("time.sleep(2)")
                                                             for _ in range(4)]
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookFailed, match="page ran longer than 5 s"):  # each cell alone is well under 5 s
        execute_entry(Entry("slow", path, "Slow", {}, timeout_s=5), tmp_path / "out.ipynb", kernel_name="python3")
    execute_entry(Entry("slow", path, "Slow", {}, timeout_s=30), tmp_path / "ok.ipynb", kernel_name="python3")
