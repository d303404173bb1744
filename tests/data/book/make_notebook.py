"""Writes the one-notebook manifest the runner test executes (kept as code, not as JSON)."""

from pathlib import Path

import nbformat as nbf


def write(folder: Path, stored: list[int] | None = None) -> Path:
    """Create ``square.ipynb`` and ``runs.yml`` in ``folder``; return the manifest path.

    ``stored``: values of x whose pages are stored (executed by ``store``, not by the build).
    """
    nb = nbf.v4.new_notebook()
    params = nbf.v4.new_code_cell('x: int = 3  # number to square\nscale: str = "smoke"  # scale preset')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbf.v4.new_markdown_cell("# Square"), params,
                nbf.v4.new_code_cell('print(f"square of {x} is {x * x}")')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, folder / "square.ipynb")
    (folder / "runs.yml").write_text(
        "experiments:\n"
        "  - key: square\n    notebook: square.ipynb\n    title: 'Square of {x}'\n    part: Tests\n"
        "    params:\n      - x: [7, 12]\n"
        + (f"    stored:\n      - x: {list(stored)}\n" if stored else ""))
    return folder / "runs.yml"
