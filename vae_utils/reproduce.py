"""Re-execute the notebooks in order with papermill, at one budget: the project's main job.

    python -m vae_utils reproduce [--budget quick] [--only 03,05] [--output-dir DIR] [--no-train]

Each notebook in ``notebooks/`` (``NN_name.ipynb``, in order) runs through papermill's Python
API with the ``python3`` kernel and the parameters it declares (budget, output_dir,
allow_training, workers); the executed copy goes to the budget's ``notebooks`` place and its
figures to the budget's ``figures`` place (``budgets.Places``). Paths come from the package,
so any working directory works. The first failing notebook stops the run, named with its
failing cell; its executed copy holds the traceback.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from .budgets import BUDGETS, NOTEBOOKS_DIR, Places
from .device import check_device
from .records import REPO_ROOT, atomic_write_bytes

# an absolute path up to one of the project's folders: the machine's part of it is dropped
_MACHINE_PATH = re.compile(r"(?:/[^\s'\"/:]+)+?/(?=(?:results|figures|checkpoints|notebooks|data)(?:/|\b))")


class NotebookFailed(RuntimeError):
    pass


def notebook_paths() -> list[Path]:
    return sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(only: list[str] | None) -> list[Path]:
    """The notebooks named by ``only`` (full names, with or without .ipynb, or their NN prefix)."""
    paths = notebook_paths()
    if only is None:
        return paths
    if isinstance(only, str) or not all(isinstance(n, str) for n in only) or not only:
        raise ValueError(f"only={only!r} selects no notebook: pass None for all, or a list of names or NN prefixes "
                         f"({', '.join(p.stem for p in paths)})")
    chosen = []
    for name in only:
        key = name.removesuffix(".ipynb")
        match = [p for p in paths if p.stem == key or p.stem.split("_")[0] == key]
        if not match:
            raise ValueError(f"--only {name!r} names no notebook; available: {', '.join(p.stem for p in paths)}")
        chosen += [p for p in match if p not in chosen]
    return sorted(chosen)


def tidy_executed(path, root=REPO_ROOT) -> None:
    """An executed notebook as it is read, not as a machine ran it: progress bars (stderr streams,
    shown live on the terminal during the run) dropped, and every absolute path written relative
    to the project (papermill's input and output paths, printed folders). Numbers are untouched."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        for o in cell.outputs:
            if o.output_type == "stream":
                o.text = _MACHINE_PATH.sub("", o.text)
            for kind, value in (o.get("data") or {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    o.data[kind] = _MACHINE_PATH.sub("", value)
    pm = nb.metadata.get("papermill", {})
    pm["input_path"] = f"notebooks/{path.name}"
    try:
        pm["output_path"] = str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:  # written outside the project (--output-dir): its own name only
        pm["output_path"] = path.name
    atomic_write_bytes(path, nbformat.writes(nb).encode())


def run_notebooks(budget: str = "quick", only: list[str] | None = None, output_dir: str | None = None,
                  allow_training: bool = True, workers: int = 0, device: str = "auto", log=print) -> list[dict]:
    """Execute the chosen notebooks in order; returns, per notebook, its executed copy, figures
    and wall time. Raises ``NotebookFailed`` naming the first notebook and cell that failed."""
    import papermill as pm

    if budget not in BUDGETS:
        raise ValueError(f"budget={budget!r} is not a budget; choose one of {', '.join(BUDGETS)}")
    check_device(device)
    chosen = select(only)
    places = Places.for_budget(budget, output_dir).make()
    values = {"budget": budget, "allow_training": allow_training, "workers": workers, "device": device}
    if output_dir:
        values["output_dir"] = str(places.results.parent)
    report = []
    for src in chosen:
        declared = pm.inspect_notebook(str(src))
        params = {k: v for k, v in values.items() if k in declared}
        dst = places.notebooks / src.name
        log(f"[{src.stem}] budget {budget}, parameters {params}")
        t0 = time.time()
        try:
            # the notebooks' own progress bars (their stderr) go to this terminal, with rate and ETA
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(NOTEBOOKS_DIR),
                                progress_bar=False, log_output=False, stderr_file=sys.stderr)
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(f"notebook {src.stem} failed in cell {e.exec_count} (cell index {e.cell_index}): "
                                 f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {dst}") from None
        tidy_executed(dst)
        figures = sorted(str(p) for p in places.figures.glob("*") if p.stat().st_mtime >= t0 - 1)
        entry = {"notebook": src.stem, "executed": str(dst), "figures": figures, "seconds": round(time.time() - t0, 1)}
        report.append(entry)
        log(f"[{src.stem}] done in {entry['seconds']:.0f} s -> {dst}")
        for f in figures:
            log(f"    figure {f}")
    return report
