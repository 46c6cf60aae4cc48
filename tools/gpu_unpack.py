"""Bring a GPU lease's results home (the tarball of `tools/gpu_lease.sh`, in parts
`$OUT/<budget>.tar.gz.0`, `.1`, ... since a call returns at most 8 files of 16 MiB): each record
of the tarball, with the checkpoint the lease wrote for it, is installed where it goes further
than the one here, and nothing else is touched.

    python tools/gpu_unpack.py /work/.device/1 /work/.device/2 ...

Give the calls' folders (or a tarball, whole or its first part) in the order of the calls. The
tarball holds every record of the budget as the lease found it, so most are older than this
checkout's where pieces trained here meanwhile:
- no record here: installed;
- the tarball's curve keeps every point of the one here and reaches further: installed;
- the one here keeps every point of the tarball's: kept (it is as far or further);
- neither: refused in one line, both kept (two different runs under one name);
- a run a process here is training (its lock held): left alone.
A checkpoint is installed only with its record. The lease's logs and the call's own files
(gpu_tests.log, benchmarks_cuda.json, pace.json, env.log, ...) go to logs/<the call's folder>/.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_utils.records import REPO_ROOT, atomic_write_bytes, keeps_points, read_json  # noqa: E402
from vae_utils.train import RunLock, RunLockedError  # noqa: E402


def parts(where: Path) -> list[Path]:
    """The files of one call's tarball, in order: ``where`` is the call's folder, the tarball whole
    (``paper.tar.gz``) or its first part (``paper.tar.gz.0``). Raises FileNotFoundError in one line."""
    if where.is_dir():
        first = sorted(where.glob("*.tar.gz.0")) or sorted(where.glob("*.tar.gz"))
        if len(first) != 1:
            raise FileNotFoundError(f"{where} holds {len(first)} tarballs of a lease, not one: name the tarball")
        where = first[0]
    if not where.is_file():
        raise FileNotFoundError(f"no such tarball: {where}")
    if not where.name.endswith(".tar.gz.0"):
        return [where]
    stem, found, i = where.name[:-1], [], 0
    while (where.parent / f"{stem}{i}").is_file():
        found.append(where.parent / f"{stem}{i}")
        i += 1
    return found


def unpack(tarball: Path, root: Path = REPO_ROOT, log=print) -> int:
    """Install what ``tarball`` brings (a call's folder, or its tarball whole or in parts: ``parts``;
    see the module docstring); the number of runs refused."""
    refused = 0
    files = parts(Path(tarball))
    folder = files[0].parent.name
    with tarfile.open(fileobj=io.BytesIO(b"".join(f.read_bytes() for f in files)), mode="r:gz") as tar:
        members = {}
        for m in tar.getmembers():
            p = PurePosixPath(m.name)
            if m.isfile() and not p.is_absolute() and ".." not in p.parts:
                members[p] = m
        for p, m in sorted(members.items()):
            if len(p.parts) == 3 and p.parts[0] == "results" and p.suffix == ".json":
                budget, name = p.parts[1], p.stem
                payload = tar.extractfile(m).read()
                new = json.loads(payload)
                here_path = root / "results" / budget / p.name
                ckpt_member = members.get(PurePosixPath("checkpoints", budget, name + ".pt"))
                ckpt_path = root / "checkpoints" / budget / (name + ".pt")
                if not isinstance(new, dict) or "curve" not in new:
                    continue  # not a training record (a table's file, say): not this tool's
                here = read_json(here_path) if here_path.exists() else None
                if here is not None and keeps_points(new["curve"], here["curve"]):
                    continue  # here already, as far or further
                if here is not None and not keeps_points(here["curve"], new["curve"]):
                    log(f"gpu_unpack: {budget}/{name}: the tarball's record and the one here are different runs "
                        f"(neither holds the other's curve); both kept, nothing installed")
                    refused += 1
                    continue
                try:
                    with RunLock(ckpt_path):
                        atomic_write_bytes(here_path, payload)
                        if ckpt_member is not None:
                            atomic_write_bytes(ckpt_path, tar.extractfile(ckpt_member).read())
                except RunLockedError as e:
                    log(f"gpu_unpack: {budget}/{name}: {e}; nothing installed")
                    refused += 1
                    continue
                log(f"gpu_unpack: {budget}/{name}: {here['samples_seen'] if here else 0:,} -> "
                    f"{new['samples_seen']:,} samples" + (" (with its checkpoint)" if ckpt_member else ""))
            elif (p.parts[0] == "logs" and len(p.parts) == 2) or len(p.parts) == 1:  # logs; the call's own files
                atomic_write_bytes(root / "logs" / folder / p.name, tar.extractfile(m).read())
    return refused


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tarballs", nargs="+", type=Path, help="each call's folder, or its tarball (whole or its first part)")
    a = ap.parse_args(argv)
    for t in a.tarballs:
        try:
            parts(t)
        except FileNotFoundError as e:
            print(f"gpu_unpack: {e}", file=sys.stderr)
            return 2
    return 1 if sum(unpack(t) for t in a.tarballs) else 0


if __name__ == "__main__":
    sys.exit(main())
