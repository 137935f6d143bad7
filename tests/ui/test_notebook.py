"""The example notebook runs top to bottom in a Jupyter kernel (nbclient, ipykernel).

It is executed as a reader would run it, but over the demo's first minute instead of
all eight (its ``duration_s`` cell is the one thing changed), in a scratch directory:
every cell must finish without an error, the table of the two policies must have
their rows and the plot cell must leave a PNG.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the dev extra installs nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "compare-policies.ipynb"


def test_example_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(cell for cell in notebook.cells if "duration_s = 480" in cell.source)
    setup.source = setup.source.replace("duration_s = 480", "duration_s = 60")
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    table = next(out for out in outputs if "text/html" in out.get("data", {}))
    for policy in ("esx", "static"):
        assert policy in table["data"]["text/html"]
    assert any("image/png" in out.get("data", {}) for out in outputs)
    assert (tmp_path / "results" / "notebook-static" / "vms.parquet").is_file()
