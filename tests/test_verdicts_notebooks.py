"""The findings and verdict pages execute on the committed results and say what they should."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_findings_page_is_in_the_manifest_first():
    from urbanlib.book.manifest import load_manifest

    entries = load_manifest(REPO / "notebooks" / "runs.yml", "default")
    assert entries[0].experiment == "findings" and entries[0].notebook.name == "findings.ipynb"
    assert "{doc}`findings <generated/findings>`" in (REPO / "book" / "intro.md").read_text().split("\n\n")[1]


@pytest.mark.notebooks
@pytest.mark.parametrize("name", ["findings", "verdicts"])
def test_page_runs_on_the_committed_tier(name, tmp_path, monkeypatch, committed_results):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out), parameters={"scale": "smoke"},
                        kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    text = "".join(o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/html", "")
                   for o in outputs)
    assert "NaN" not in text and "nan" not in text.replace("nanmean", "")
    if name == "findings":
        assert "Of the 60 claims" in text and "What cannot be tested here, and why" in text
        assert "Does text help UrbanCLIP?" in text
    assert "not testable here" in text
    from urbanlib.results.store import read_results

    if not read_results("benchmark").empty:  # the new tier is being recomputed; with rows some claim is testable
        assert "underpowered" in text or "supported" in text
        if name == "findings":  # the gains over the random-init twins, with the median beside the mean
            assert "median gain" in text
