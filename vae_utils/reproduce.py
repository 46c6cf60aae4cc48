"""Re-execute the notebooks in order with papermill, at one budget: the project's main job.

    python -m vae_utils reproduce [--budget quick] [--only 03,05] [--output-dir DIR] [--no-train] [--rewrite]

Each notebook in ``notebooks/`` (``NN_name.ipynb``, in order) runs through papermill's Python
API with the ``python3`` kernel and the parameters it declares (budget, output_dir,
allow_training, workers); the executed copy goes to the budget's ``notebooks`` place and its
figures to the budget's ``figures`` place (``budgets.Places``). Paths come from the package,
so any working directory works. The first failing notebook stops the run, named with its
failing cell; its executed copy holds the traceback.

An executed copy carries no clock (no timestamps, durations or random cell ids) and no machine
paths, so rerunning a notebook on the same records gives the same bytes, and a rerun in a fresh
clone leaves the committed record as it is. Where a new copy differs from the one already there
(a changed notebook or seed, another machine's numbers), the one there is kept and the new one
written beside it as ``NN_name.new.ipynb``, unless ``rewrite`` (``--rewrite``) asks to replace it.
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


# what papermill and Jupyter stamp on a notebook as it runs: a clock, not a result
_CLOCK_KEYS = ("start_time", "end_time", "duration")


def tidy_executed(path, root=REPO_ROOT, name: str | None = None) -> None:
    """An executed notebook as it is read, not as a machine ran it: progress bars (stderr streams,
    shown live on the terminal during the run) dropped, every absolute path written relative
    to the project (papermill's input and output paths, printed folders), and the clock removed
    (start and end times, durations, Jupyter's execution timestamps, the injected cell's random
    id), so the same records give the same bytes. Numbers are untouched. ``name``: the file name
    the copy is recorded under (default: its own)."""
    import nbformat

    path = Path(path)
    name = name or path.name
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)
        for key in _CLOCK_KEYS:
            cell.metadata.get("papermill", {}).pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"
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
    for key in _CLOCK_KEYS:
        pm.pop(key, None)
    pm["input_path"] = f"notebooks/{name}"
    try:
        pm["output_path"] = str(path.with_name(name).resolve().relative_to(Path(root).resolve()))
    except ValueError:  # written outside the project (--output-dir): its own name only
        pm["output_path"] = name
    atomic_write_bytes(path, nbformat.writes(nb).encode())


def keep_or_replace(new: Path, dst: Path, rewrite: bool) -> Path:
    """Put the executed copy ``new`` at ``dst``; where another copy is there with other bytes, keep
    it and leave the new one beside it (``NN_name.new.ipynb``) unless ``rewrite``. Returns where
    the new copy is."""
    if not dst.is_file() or rewrite or dst.read_bytes() == new.read_bytes():
        new.replace(dst)
        return dst
    beside = dst.with_name(f"{dst.stem}.new.ipynb")
    new.replace(beside)
    return beside


def run_notebooks(budget: str = "quick", only: list[str] | None = None, output_dir: str | None = None,
                  allow_training: bool = True, workers: int = 0, device: str = "auto", rewrite: bool = False,
                  log=print) -> list[dict]:
    """Execute the chosen notebooks in order; returns, per notebook, its executed copy, figures
    and wall time. Raises ``NotebookFailed`` naming the first notebook and cell that failed.
    An executed copy already there with other bytes is kept unless ``rewrite`` (module docstring)."""
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
        running = dst.with_name(f".{src.stem}.running.ipynb")  # executed here first: the copy at dst stays whole
        log(f"[{src.stem}] budget {budget}, parameters {params}")
        t0 = time.time()
        try:
            # the notebooks' own progress bars (their stderr) go to this terminal, with rate and ETA
            pm.execute_notebook(str(src), str(running), parameters=params, kernel_name="python3",
                                cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False, stderr_file=sys.stderr)
        except pm.PapermillExecutionError as e:
            failed = running.replace(dst.with_name(f"{src.stem}.failed.ipynb"))
            raise NotebookFailed(f"notebook {src.stem} failed in cell {e.exec_count} (cell index {e.cell_index}): "
                                 f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {failed}") from None
        tidy_executed(running, name=src.name)
        where = keep_or_replace(running, dst, rewrite)
        figures = sorted(str(p) for p in places.figures.glob("*") if p.stat().st_mtime >= t0 - 1)
        entry = {"notebook": src.stem, "executed": str(where), "figures": figures, "seconds": round(time.time() - t0, 1)}
        report.append(entry)
        if where != dst:
            log(f"[{src.stem}] done in {entry['seconds']:.0f} s; its executed copy differs from the one at {dst}, "
                f"which is kept: the new one is {where} (--rewrite replaces it)")
            continue
        log(f"[{src.stem}] done in {entry['seconds']:.0f} s -> {dst}")
        for f in figures:
            log(f"    figure {f}")
    return report
