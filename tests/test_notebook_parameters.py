"""Every notebook's parameters are documented for ``papermill --help-notebook``: listed, typed, commented."""

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _declared(path: Path) -> list[str]:
    cells = [c for c in json.loads(path.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: one cell tagged 'parameters', found {len(cells)}"
    tree = ast.parse("".join(cells[0]["source"]))
    return [node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id
            for node in tree.body if isinstance(node, ast.AnnAssign | ast.Assign)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_papermill_lists_every_parameter_with_a_type_and_a_comment(path):
    import papermill as pm

    declared = _declared(path)
    listed = pm.inspect_notebook(str(path))
    assert declared and list(listed) == declared, f"{path.name}: papermill lists {list(listed)}, the cell {declared}"
    for name, p in listed.items():
        assert p["inferred_type_name"] not in (None, "None"), f"{path.name}: {name} has no type annotation"
        assert p["help"], f"{path.name}: {name} has no comment"
