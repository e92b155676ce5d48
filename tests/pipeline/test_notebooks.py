"""The notebooks in notebooks/ run top to bottom (nbclient, kernel python3 = this interpreter) on data
every machine has; they are committed without outputs; a missing kernel is a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["data_analysis.ipynb", "model_comparison.ipynb", "error_analysis.ipynb"]


class KernelMissingError(RuntimeError):
    """The Jupyter kernel a notebook needs is not installed."""


def run_notebook(path: Path, *, kernel_name: str = "python3", timeout: int = 600) -> nbformat.NotebookNode:
    """Execute ``path`` in its folder and return the executed notebook; CellExecutionError names the
    failing cell. The kernel inherits this process's environment: ``PYTHONPATH`` is set to this
    checkout so ``import instaseg`` in the kernel is the code under test."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        return client.execute()
    except NoSuchKernel as exc:
        raise KernelMissingError(
            f"{path.name}: Jupyter kernel {kernel_name!r} is not installed "
            f"(install the dev extra, or: python -m ipykernel install --user --name {kernel_name})"
        ) from exc


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), path) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, kernel_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTASEG_NB_ITERS", "20")  # error_analysis: the story needs a model, not a good one
    nb = run_notebook(NOTEBOOKS / name)  # CellExecutionError if any cell fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{name}: a story with plots, got {len(images)} figures"


def test_notebooks_use_this_checkout(kernel_env: None, tmp_path: Path) -> None:
    cell = nbformat.v4.new_code_cell("import instaseg; print(instaseg.__file__)")
    nb = nbformat.v4.new_notebook(cells=[cell])
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    out = run_notebook(path).cells[0].outputs[0].text.strip()
    assert Path(out).resolve() == ROOT / "instaseg" / "__init__.py"


def test_committed_without_outputs() -> None:
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"


def test_missing_kernel_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), path)
    with pytest.raises(KernelMissingError, match="kernel 'no-such-kernel' is not installed"):
        run_notebook(path, kernel_name="no-such-kernel")


def test_a_failing_cell_fails(tmp_path: Path, kernel_env: None) -> None:
    path = tmp_path / "bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")]), path)
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        run_notebook(path)
