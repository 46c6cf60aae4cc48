"""Bring a GPU lease's results home (the `$OUT/<budget>.tar.gz` of `tools/gpu_lease.sh`): each
record of the tarball, with the checkpoint the lease wrote for it, is installed where it goes
further than the one here, and nothing else is touched.

    python tools/gpu_unpack.py /work/.device/1/paper.tar.gz /work/.device/2/paper.tar.gz ...

Give the tarballs in the order of the calls. The tarball holds every record of the budget as the
lease found it, so most are older than this checkout's where pieces trained here meanwhile:
- no record here: installed;
- the tarball's curve keeps every point of the one here and reaches further: installed;
- the one here keeps every point of the tarball's: kept (it is as far or further);
- neither: refused in one line, both kept (two different runs under one name);
- a run a process here is training (its lock held): left alone.
A checkpoint is installed only with its record. The lease's logs go to logs/<tarball's folder>/.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_utils.records import REPO_ROOT, atomic_write_bytes, keeps_points, read_json  # noqa: E402
from vae_utils.train import RunLock, RunLockedError  # noqa: E402


def unpack(tarball: Path, root: Path = REPO_ROOT, log=print) -> int:
    """Install what ``tarball`` brings (see the module docstring); the number of runs refused."""
    refused = 0
    with tarfile.open(tarball) as tar:
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
            elif p.parts[0] == "logs" and len(p.parts) == 2:
                atomic_write_bytes(root / "logs" / tarball.parent.name / p.name, tar.extractfile(m).read())
    return refused


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tarballs", nargs="+", type=Path)
    a = ap.parse_args(argv)
    missing = [str(t) for t in a.tarballs if not t.is_file()]
    if missing:
        print(f"gpu_unpack: no such tarball: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 1 if sum(unpack(t) for t in a.tarballs) else 0


if __name__ == "__main__":
    sys.exit(main())
