"""The draws a run makes on a CUDA GPU, computed on a CPU: PyTorch's CUDA generator is Philox4x32-10
(Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"), counter-based, so its output is
a function of (seed, offset, thread) that numpy can evaluate anywhere.

As PyTorch 2.x launches ``torch.randint`` and ``torch.randn`` on CUDA for the small tensors of a
step (``distribution_elementwise_grid_stride_kernel``): every call advances the generator's offset
by 4 (one Philox block per thread, ``calc_execution_policy``), and thread ``i``, which writes
element ``i`` of a tensor smaller than its grid, starts its own subsequence:

    Philox(key = seed, counter = (offset / 4, 0, i, 0)) = (x0, x1, x2, x3)    (curand_init, curand4)
    randint(n):  x0 mod n
    randn:       sqrt(-2 log u) sin(2 pi v),  u = (x0 + 1/2) 2^-32,  v = (x1 + 1/2) 2^-32  (curand_normal4)

A run's step draws its M indices, then its L M Z noise values: step t is calls 2t and 2t + 1.
``run_draws`` gives what ``device_pace.draws_of`` gives on a GPU, without one; whether it is the
GPU's stream is checked against a GPU run trained on it (``device_pace.py --replay``).

    python tools/cuda_philox.py --seeds 1,2 --samples 1e6 --out emulated.pt
    python tools/cuda_philox.py --seeds 1,2 --noise-seeds 2,1 --samples 1e6 --out crossed.pt
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

# Philox4x32-10's multipliers and Weyl key increments (Random123; curand's PHILOX_M4x32_*, PHILOX_W32_*)
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
LOW = np.uint64(0xFFFFFFFF)


def philox4x32_10(c0, c1, c2, c3, seed: int) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of the counters (arrays of uint32, broadcast) under the 64-bit key ``seed``."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in (c0, c1, c2, c3))
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for _ in range(10):
        # one round: (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)); then the key's Weyl step
        p0, p1 = M0 * c0.astype(np.uint64), M1 * c2.astype(np.uint64)
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)).astype(np.uint32) ^ c1 ^ np.uint32(k0), (p1 & LOW).astype(np.uint32),
                          (p0 >> np.uint64(32)).astype(np.uint32) ^ c3 ^ np.uint32(k1), (p0 & LOW).astype(np.uint32))
        k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def call_block(seed: int, calls: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(x0, x1) of the first Philox output of threads 0..n-1 for each generator call in ``calls``
    (the call's offset / 4), shape (len(calls), n)."""
    k = np.asarray(calls, dtype=np.uint64)[:, None]
    i = np.arange(n, dtype=np.uint32)[None, :]
    x0, x1, _, _ = philox4x32_10((k & LOW).astype(np.uint32), (k >> np.uint64(32)).astype(np.uint32), i,
                                 np.zeros_like(i), seed)
    return x0, x1


def randint_calls(seed: int, calls, high: int, size: int) -> np.ndarray:
    """torch.randint(high, (size,)) on a CUDA generator at each of ``calls``: x0 mod high."""
    x0, _ = call_block(seed, calls, size)
    return (x0 % np.uint32(high)).astype(np.int64)


def randn_calls(seed: int, calls, size: int) -> np.ndarray:
    """torch.randn(size) (float32) on a CUDA generator at each of ``calls``: Box-Muller's sine of (x0, x1)."""
    x0, x1 = call_block(seed, calls, size)
    u = (x0.astype(np.float64) + 0.5) * 2.0 ** -32
    v = (x1.astype(np.float64) + 0.5) * 2.0 ** -32
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(2.0 * math.pi * v)).astype(np.float32)


def run_draws(seed: int, steps: int, n: int = 50_000, M: int = 100, noise_size: int = 2000, chunk: int = 500):
    """A run's first ``steps`` draws on a CUDA generator seeded ``seed``: indices (steps, M) and noise
    (steps, noise_size), as ``AEVB.draw`` makes them there (step t: calls 2t and 2t + 1)."""
    idx, eps = [], []
    for a in range(0, steps, chunk):
        t = np.arange(a, min(a + chunk, steps))
        idx.append(randint_calls(seed, 2 * t, n, M))
        eps.append(randn_calls(seed, 2 * t + 1, noise_size))
    return torch.from_numpy(np.concatenate(idx)), torch.from_numpy(np.concatenate(eps))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--samples", type=float, default=1e6)
    ap.add_argument("--noise-seeds", default=None,
                    help="the seed whose stream gives each of --seeds its noise (default: its own): --seeds 1,2 "
                         "--noise-seeds 2,1 pairs each run's indices with the other's noise")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    noise_seeds = seeds if a.noise_seeds is None else [int(s) for s in a.noise_seeds.split(",")]
    if len(noise_seeds) != len(seeds):
        print(f"cuda_philox: --noise-seeds {a.noise_seeds} names {len(noise_seeds)} seeds for the {len(seeds)} of "
              f"--seeds {a.seeds}", file=sys.stderr)
        return 2
    if a.out.exists():
        print(f"cuda_philox: {a.out} exists; it is not overwritten (pass another --out)", file=sys.stderr)
        return 2
    M = 100
    steps = math.ceil(a.samples / M)
    out = {"device": "cuda-emulated", "samples": steps * M, "noise_steps": steps, "seeds": {},
           "noise_seeds": dict(zip(seeds, noise_seeds)), "provenance": {"tool": "tools/cuda_philox.py"}}
    for seed, noise_seed in zip(seeds, noise_seeds):
        idx, eps = run_draws(seed, steps)
        if noise_seed != seed:
            eps = run_draws(noise_seed, steps)[1]
        out["seeds"][seed] = {"indices": idx.to(torch.uint16), "noise": eps}
    torch.save(out, a.out)
    print(f"cuda_philox: seeds {a.seeds}, {steps * M:,} samples' draws (every step's noise"
          f"{'' if a.noise_seeds is None else ', from seeds ' + a.noise_seeds}) in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
