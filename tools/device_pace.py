"""Does a run learn at the same pace on the GPU as on the CPU, and if not, is it the arithmetic or
the random numbers? (The first GPU runs of MNIST AEVB Nz = 20 were about 2 nats ahead of the CPU's
seeds at 3e6 samples and level by 1e8; README, "On a GPU".)

Trains the same short runs (MNIST 784-500-20, Adagrad step 0.01, no step-size trials) three ways:
    own   the run as `train` trains it on --device (its minibatches and noise from that device's
          generator; on a GPU the captured step);
    cpu   on --device, but every minibatch and its noise drawn from a CPU generator seeded as the
          CPU run's, in the same order, then moved over: on the CPU this is the CPU run bit for bit,
          on a GPU it is the CPU run's draws with the GPU's arithmetic.
If `cpu` on the GPU tracks the CPU runs and `own` does not, the GPU's random numbers are the cause;
if both are ahead, its arithmetic. Writes one JSON (curves per way and seed) and prints a table.

    python tools/device_pace.py --device cuda --seeds 0,1,2,3 --samples 1e6 --out pace.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_utils.algorithms import Minibatches  # noqa: E402
from vae_utils.config import TrainConfig  # noqa: E402
from vae_utils.records import provenance  # noqa: E402
from vae_utils.train import Run, eval_sets, load_data  # noqa: E402

TICKS = (10 ** 5, 10 ** 5.5, 10 ** 6, 10 ** 6.5, 10 ** 7)


def cpu_draws(run: Run, seed: int):
    """``run``'s draw replaced by the CPU run's draws (the same generator seed and order), moved to its device."""
    g, alg, device = torch.Generator().manual_seed(seed), run.algorithm, run.device
    batches = Minibatches(alg.batches.X.cpu(), alg.cfg, g)  # the CPU run's minibatches, from its generator

    def draw():  # AEVB.draw's order: the minibatch, then its noise
        x = next(batches)
        eps = torch.randn((alg.cfg.n_samples, len(x), alg.model.z_dim), generator=g, dtype=x.dtype)
        return x.to(device), eps.to(device)
    alg.draw, alg.captured = draw, None  # drawn on the CPU each step: not a captured graph


def pace(device: str, way: str, seed: int, samples: float, data_dir=None, ticks=TICKS) -> list[dict]:
    cfg = TrainConfig(dataset="mnist", n_z=20, n_hidden=500, lr=0.01, samples=int(samples), seed=seed,
                      compile=False, device=device, threads=1, data_dir=data_dir)
    X_train, X_test = load_data(cfg)
    sets = {k: v.to(device) for k, v in eval_sets(cfg, X_train, X_test).items()}
    run = Run(cfg, cfg.lr, X_train)
    if way == "cpu":
        cpu_draws(run, seed)
    ticks, curve, t0 = [round(t) for t in ticks if t <= samples], [], time.perf_counter()
    while ticks:
        run.step()
        if run.samples_seen >= ticks[0]:
            ticks.pop(0)
            curve.append({"samples": run.samples_seen, "train": run.algorithm.evaluate(sets["train"], "train"),
                          "seconds": round(time.perf_counter() - t0, 1)})
    return curve


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--samples", type=float, default=1e6)
    ap.add_argument("--ways", default="own,cpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args(argv)
    if a.out.exists():
        print(f"device_pace: {a.out} exists; it is not overwritten (pass another --out)", file=sys.stderr)
        return 2
    seeds, ways = [int(s) for s in a.seeds.split(",")], a.ways.split(",")
    out = {"settings": vars(a) | {"out": str(a.out)}, "provenance": provenance(), "curves": {}}
    for way in ways:
        for seed in seeds:
            out["curves"][f"{a.device}/{way}/{seed}"] = pace(a.device, way, seed, a.samples, a.data_dir)
            print(f"{a.device} {way} seed {seed}: " + ", ".join(f"{p['samples']:.2e} {p['train']:.2f}"
                                                              for p in out["curves"][f"{a.device}/{way}/{seed}"]),
                  flush=True)
            a.out.write_text(json.dumps(out, indent=1))  # after each run: a study cut short keeps what finished
    print(f"| way | {' | '.join(f'{t:.3g}' for t in TICKS if t <= a.samples)} |")
    for way in ways:
        cols = zip(*[[p["train"] for p in out["curves"][f"{a.device}/{way}/{s}"]] for s in seeds])
        print(f"| {a.device} {way} | " + " | ".join(
            f"{statistics.fmean(c):.2f}" + (f" ± {statistics.stdev(c):.2f}" if len(c) > 1 else "") for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
