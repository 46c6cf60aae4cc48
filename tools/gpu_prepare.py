"""Prepare this checkout for a GPU lease (docs/performance.md, "On a GPU"), here, before any device
time is spent: what a device call carries besides the working tree, and whether it fits.

    python tools/gpu_prepare.py checkpoints/paper/aevb_mnist_nz3_h500_grey_n50000_seed0.pt ...

- ``data/``: a fresh copy of the data folder (``--data-dir``, else ``AEVB_DATA_DIR``);
- ``.gitcopy``: a fresh shallow clone's ``.git`` of HEAD (the records' commit; excluded from git
  by ``.git/info/exclude``), which the lease uses as ``GIT_DIR``;
- the checkpoints named, which pieces on the GPU go on from.

Prints the ``carry`` list for the device call and the bytes that travel: the working tree (tracked
files and untracked ones git does not ignore) plus the carried paths, against the 64 MiB a call
carries. Refused in one line (exit 2): a missing data folder or checkpoint, a checkpoint outside
the checkout, or more than the limit (name fewer checkpoints).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_utils.records import REPO_ROOT  # noqa: E402

LIMIT = 64 * 2**20  # what one device call carries: the working tree and the carried paths together
EXCLUDE = "/.gitcopy/"


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def tree_bytes(root: Path) -> int:
    """The bytes of the working tree that travels: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum(_bytes(root / os.fsdecode(name)) for name in listed if name and (root / os.fsdecode(name)).is_file())


def prepare(root: Path, data_dir: Path | None, checkpoints: list[Path], limit: int = LIMIT) -> tuple[list[str], int]:
    """Make ``data/`` and ``.gitcopy`` in ``root`` and check ``checkpoints``; returns (the carry list,
    the bytes that travel). ValueError or FileNotFoundError in one line; nothing is made then."""
    if data_dir is None or not Path(data_dir).is_dir():
        raise FileNotFoundError(f"the data folder {data_dir} is not there: pass --data-dir or set AEVB_DATA_DIR")
    ckpts = []
    for c in checkpoints:
        path = (root / c).resolve()  # an absolute c stays itself
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint {c}: name the checkpoints of the runs the pieces go on from")
        if not path.is_relative_to(root.resolve()):
            raise ValueError(f"checkpoint {c} is outside the checkout {root}: a call carries paths inside it only")
        ckpts.append(path.relative_to(root.resolve()).as_posix())
    # the data and the shallow clone are as large as the sources: checked before anything is made
    sizes = {"data": _bytes(Path(data_dir)), ".gitcopy": None, **{c: _bytes(root / c) for c in ckpts}}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{root.resolve()}", f"{tmp}/c"], check=True)
        sizes[".gitcopy"] = _bytes(Path(tmp) / "c" / ".git")
        tree = tree_bytes(root)
        total = tree + sum(sizes.values())
        if total > limit:
            raise ValueError(f"a call would carry {total / 2**20:.1f} MiB (the tree {tree / 2**20:.1f}, "
                             + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes.items())
                             + f"), more than the {limit / 2**20:.0f} MiB it may: name fewer checkpoints")
        shutil.rmtree(root / ".gitcopy", ignore_errors=True)
        shutil.move(f"{tmp}/c/.git", root / ".gitcopy")
    shutil.rmtree(root / "data", ignore_errors=True)
    shutil.copytree(data_dir, root / "data")
    exclude = root / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if EXCLUDE not in lines:
        exclude.write_text("\n".join(lines + [EXCLUDE]) + "\n")
    return ["data", ".gitcopy", *ckpts], total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", type=Path, help="checkpoints the lease's pieces go on from")
    ap.add_argument("--data-dir", type=Path, default=os.environ.get("AEVB_DATA_DIR"))
    a = ap.parse_args(argv)
    try:
        carry, total = prepare(REPO_ROOT, a.data_dir, a.checkpoints)
    except (ValueError, FileNotFoundError) as e:
        print(f"gpu_prepare: {e}", file=sys.stderr)
        return 2
    print(f"gpu_prepare: {total / 2**20:.1f} MiB travel (of {LIMIT / 2**20:.0f}); carry: {json.dumps(carry)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
