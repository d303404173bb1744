"""The book as readers see it: page titles, folded parameter cells, figure cells, the build-log allowlist."""

import nbformat

from urbanlib.book.reading import figures_without_image, prepare_page, unexpected_log_lines


def _page():
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("city = 'synth-ring'")
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("city = 'synth-delta'")
    injected.metadata["tags"] = ["injected-parameters"]
    draw = nbformat.v4.new_code_cell("fig = plot()")
    draw.metadata["tags"] = ["figure"]
    nb.cells = [nbformat.v4.new_markdown_cell("# The data: one city\n\nIntro."), params, injected, draw]
    return nb


def test_prepare_page_titles_the_page_and_folds_its_parameters():
    nb = prepare_page(_page(), "Data: synth-delta (stored)")
    assert nb.cells[0].source == "# Data: synth-delta (stored)\n\n*The data: one city*\n\nIntro."
    assert "hide-cell" in nb.cells[1].metadata["tags"] and "remove-cell" in nb.cells[2].metadata["tags"]
    assert "remove-cell" not in nb.cells[1].metadata["tags"]


def test_a_figure_cell_without_an_image_is_reported():
    nb = _page()
    assert figures_without_image(nb) == ["cell 3: fig = plot()"]
    nb.cells[3].outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})]
    assert figures_without_image(nb) == []
    nb.cells[3].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "<Figure size 720x360>"})]
    assert figures_without_image(nb) == ["cell 3: fig = plot()"]  # a repr is not a picture


def test_the_build_log_allowlist_lets_new_warnings_through():
    log = ["ran data__synth-ring in 12.3 s", "executed 3 notebook(s), 0 cached, 1 stored, in 40 s",
           "Running Sphinx v7.4.7", "build succeeded.", "",
           "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.",
           "book/generated/x.ipynb:3: WARNING: undefined label"]
    assert unexpected_log_lines(log) == log[-2:]
