"""Does a run learn at the same pace on the GPU as on the CPU, and if not, is it the arithmetic or
the random numbers? (The first GPU runs of MNIST AEVB Nz = 20 were about 2 nats ahead of the CPU's
seeds at 3e6 samples and level by 1e8; README, "On a GPU".)

Trains the same short runs (MNIST 784-500-20, Adagrad step 0.01, no step-size trials) three ways:
    own   the step a long run takes on --device (compiled; on a GPU captured as one graph), its
          minibatches and noise from that device's generator;
    eager the same run with the step not compiled (on a GPU still captured as one graph, which
          replays the eager step bit for bit: tests/test_device.py);
    cpu   eager, with ``draws="cpu"``: every minibatch and its noise drawn from a CPU generator
          seeded as the CPU run's, in the same order, then copied into the buffers the captured
          step reads: on the CPU this is the CPU run bit for bit, on a GPU it is the CPU run's
          draws with the GPU's arithmetic.
Where only `own` runs ahead, the compiled step is the cause; where `eager` does too but `cpu` does
not, the device's random numbers; where all three do, its arithmetic. Writes one JSON (curves per
way and seed) and prints a table.

Before the runs, ``draw_statistics`` checks the draws themselves (seconds): the first 20,000 steps'
minibatch indices and noise as a run draws them on --device (on a GPU eagerly and from one captured
graph), beside the CPU generator's, for what would make a run learn at another pace: indices not
uniform or repeating from step to step, noise whose mean, variance or step-to-step correlation is
off, noise equal to an earlier step's, noise tied to the indices, and within a step: neighbours
correlated, a latent dimension's sum over the minibatch off (noise that cancels across datapoints
lowers the gradient's variance though every pooled moment is right), places of unequal variance,
tails off (kurtosis), and an image's noise alike each time it is drawn. Each is a z-score (or a count that should be 0: indices out of range); a |z|
over 5 marks the draws suspect.

``--record-draws`` writes (to --out, a .pt) the draws of --seeds' runs on --device to --samples:
every step's minibatch indices and the first 500 steps' noise, to bring back from a GPU. Back on
a CPU, ``--replay FILE --ways replay-indices,replay-noise,replay-both`` trains the CPU's run with
the recorded indices in place of its own (its noise its own), the recorded noise of the first
steps in place of its own (its indices its own), or both, and checks the recorded draws' statistics:
a lead with the GPU's indices alone names them.

``--judge PACE_JSON`` then compares each way's mean at its last point with the CPU records of
MNIST Nz = 20 at the same count (results/standard, seeds 0-2, all trained on a CPU; at 3.16e6 they
lie within 0.6 nats of each other, and the first GPU runs were 2.2 nats ahead of their mean). A
way keeps the pace when its mean is within max(0.5, 3 sd sqrt(1/n + 1/n_cpu)) of the CPU records'
mean, sd being theirs. Exit status: 0 when
`own` keeps it, 4 when `eager` does (train without the compiler: ``piece --compile no``), 6 when
only `cpu` does (the device's draws are the cause: ``piece --draws cpu``), 5 when none does.

``--rescore CKPT ...`` asks the other question, whether the devices *measure* alike: a
checkpoint's model at its last evaluation point scored again on --device by the same bound
(``lower_bound``, SGVB B, 1 noise draw per image), its noise drawn from that device's generator
with the record's seed (1000) and four more, beside the value its run recorded.

    python tools/device_pace.py --device cuda --seeds 1,2 --samples 3.2e6 --out pace.json
    python tools/device_pace.py --judge pace.json
    python tools/device_pace.py --device cpu --rescore checkpoints/paper/RUN.pt --out rescore.json
    python tools/device_pace.py --device cuda --seeds 1,2 --samples 3.2e6 --record-draws --out draws.pt
    python tools/device_pace.py --device cpu --seeds 1,2 --samples 3.2e6 --ways replay-indices --replay draws.pt --out r.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vae_utils.algorithms import AEVB, CapturedStep, Minibatches  # noqa: E402
from vae_utils.config import TrainConfig  # noqa: E402
from vae_utils.device import seeded_generator  # noqa: E402
from vae_utils.records import provenance  # noqa: E402
from vae_utils.train import Run, eval_schedule, eval_sets, flush_denormals, load_data  # noqa: E402

# the records' evaluation points from 1e5 to 1e7, two a decade (100,000, 316,200, 1,000,000, ...)
TICKS = tuple(p for p in eval_schedule(TrainConfig(samples=10 ** 7, eval_per_decade=2)) if p >= 10 ** 5)


WAYS = ("own", "eager", "cpu")

# --- the draws themselves -------------------------------------------------------------------------
DRAW_STEPS, SUSPECT_Z = 20_000, 5.0


def draws_of(device: str, seed: int, steps: int = DRAW_STEPS, captured: bool = False):
    """The first ``steps`` draws of the pace runs (MNIST, M = 100, L = 1, Nz = 20) on ``device``, made
    by ``AEVB.draw`` from the run's generator: the minibatch indices (steps, M) and the noise
    (steps, L M Z). ``captured`` (a GPU): replayed from one captured graph, as a long run's step draws
    them. The indices come from a dataset whose every image is its own index."""
    cfg = TrainConfig(dataset="mnist", n_z=20, seed=seed, device=device)
    g = seeded_generator(seed, device)
    index = torch.arange(cfg.n_train, dtype=torch.float32, device=device).unsqueeze(1)
    run = SimpleNamespace(batches=Minibatches(index, cfg, g), cfg=cfg, rng=g, model=SimpleNamespace(z_dim=cfg.n_z))
    run.noise = lambda: AEVB.noise(run)

    def body():
        x, eps = AEVB.draw(run)
        return torch.cat([x.reshape(-1), eps.reshape(-1)])
    step = CapturedStep(body, g) if captured else body
    out = torch.stack([step().clone() for _ in range(steps)]).cpu().double()
    M = cfg.batch_size
    return out[:, :M].long(), out[:, M:]


def draw_statistics(idx: torch.Tensor, eps: torch.Tensor, n: int) -> dict:
    """z-scores (and counts that should be 0) of a run's draws, ``idx`` (S, M) uniform on 0..n-1 with
    replacement, ``eps`` (S, K) standard normal, everything independent; ``suspect`` names those
    beyond SUSPECT_Z (or above 0)."""
    S, M = idx.shape
    # Pearson's chi^2 over the n datapoints, (chi^2 - (n - 1)) / sqrt(2 (n - 1)) ~ N(0, 1)
    E = S * M / n
    chi2 = ((torch.bincount(idx.reshape(-1).clamp(0, n - 1), minlength=n).double() - E) ** 2 / E).sum().item()
    # a step's indices that were in the step before: M (1 - (1 - 1/n)^M) expected, nearly Poisson
    lam = M * (1 - (1 - 1 / n) ** M)
    rows = idx.tolist()
    again = sum(sum(i in before for i in now) for now, before in zip(rows[1:], map(set, rows[:-1])))
    x = eps.reshape(-1)
    N = x.numel()
    counts = torch.unique(x, return_counts=True)[1].double()
    p_equal = ((counts * (counts - 1)).sum() / (N * (N - 1))).item()
    equal = sum(int((eps[k:] == eps[:-k]).sum()) for k in (1, 2, 3, 4))
    pairs = sum(eps[k:].numel() for k in (1, 2, 3, 4))
    u = (idx.double() + 0.5) / n - 0.5  # the index as a centred uniform, to find noise tied to it
    K = eps.shape[1]
    per_point = eps.reshape(S, M, K // M) if K % M == 0 else eps[:, :M].unsqueeze(2)  # (L = 1, M, Z) as drawn
    w = per_point[:, :, 0]  # each datapoint's first latent dimension
    var = x.var().item()
    # each place's variance over the steps against the pooled one: (v_k - var) / (var sqrt(2 / (S - 1))) ~ N(0, 1)
    het = (((eps.var(dim=0) - var) / (var * math.sqrt(2 / (S - 1)))) ** 2).sum().item()
    # a latent dimension's sum over the minibatch / sqrt(M var) ~ N(0, 1): noise that cancels (or piles
    # up) across a step's datapoints changes the gradient's variance, not the noise's own
    sums = (per_point.sum(dim=1) ** 2 / (per_point.shape[1] * var)).sum().item()
    m4 = (x ** 4).mean().item()
    # the same image's noise at its different draws: sum over pairs of draws of e.e', variance pairs Z var^2
    points = per_point.reshape(-1, per_point.shape[2])
    image = idx.reshape(-1).clamp(0, n - 1)
    by_image = torch.zeros(n, points.shape[1], dtype=points.dtype).index_add_(0, image, points)
    own = torch.zeros(n, dtype=points.dtype).index_add_(0, image, (points ** 2).sum(1))
    times = torch.bincount(image, minlength=n).double()
    image_pairs = (times * (times - 1) / 2).sum().item()
    same_image = (((by_image ** 2).sum(1) - own).sum().item() / 2) / (
        var * math.sqrt(max(image_pairs, 1.0) * points.shape[1]))
    stats = {
        "index_uniformity_z": (chi2 - (n - 1)) / math.sqrt(2 * (n - 1)),
        "index_out_of_range": int(((idx < 0) | (idx >= n)).sum()),
        "index_repeats_z": (again - (S - 1) * lam) / math.sqrt((S - 1) * lam),
        "noise_mean_z": x.mean().item() * math.sqrt(N),
        "noise_variance_z": (x.var().item() - 1.0) / math.sqrt(2.0 / N),
        "noise_lag1_z": (eps[1:] * eps[:-1]).mean().item() * math.sqrt(eps[1:].numel()),
        # a value equal to the same place's 1-4 steps before, against the chance of two draws being equal
        # (float32 draws repeat: sum_v (c_v / N)^2 over the values' counts, estimated from all of them)
        "noise_equal_to_earlier_z": (equal - pairs * p_equal) / math.sqrt(max(pairs * p_equal, 1.0)),
        # corr(u, w) sqrt(n) ~ N(0, 1) when they are independent (u has variance 1/12)
        "noise_index_z": (u * w).mean().item() / math.sqrt(1 / 12) * math.sqrt(u.numel()),
        "noise_next_index_z": (u[1:] * w[:-1]).mean().item() / math.sqrt(1 / 12) * math.sqrt(u[1:].numel()),
        # within a step: neighbouring values (a datapoint's latent dimensions, then the next datapoint's)
        "noise_within_lag1_z": (eps[:, 1:] * eps[:, :-1]).mean().item() / var * math.sqrt(eps[:, 1:].numel()),
        "noise_place_variance_z": (het - (K - 1)) / math.sqrt(2 * (K - 1)),  # chi^2(K - 1)
        "noise_minibatch_sum_z": (sums - per_point[:, 0].numel()) / math.sqrt(2 * per_point[:, 0].numel()),  # chi^2(S Z)
        # the tails: a normal's kurtosis is 3, its estimate's sd sqrt(24 / N)
        "noise_kurtosis_z": (m4 / var ** 2 - 3) / math.sqrt(24 / N),
        # across steps: an image's noise alike (or opposed) each time it is drawn
        "noise_same_image_z": same_image,
    }
    stats["suspect"] = [k for k, v in stats.items() if (abs(v) > SUSPECT_Z if k.endswith("_z") else v > 0)]
    return stats


def draws_study(device: str, seed: int, steps: int = DRAW_STEPS, log=print) -> dict:
    """``draw_statistics`` of the run's draws on ``device`` (on a GPU eagerly and captured) and on the CPU."""
    kinds = [("cpu", False)] + ([(device, False), (device, True)] if device != "cpu" else [])
    n = TrainConfig(dataset="mnist").n_train
    study = {}
    for dev, captured in kinds:
        key = f"{dev}/{'captured' if captured else 'eager'}"
        study[key] = draw_statistics(*draws_of(dev, seed, steps, captured), n)
        log(f"draws {key} seed {seed}, {steps} steps: " + ", ".join(
            f"{k} {v:+.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in study[key].items()))
    return study


RECORD_NOISE_STEPS = 500  # the noise kept of each recorded run: 1e6 values, 4 MB (the indices of 3.16e6 samples are 6.3 MB)


def record_draws(device: str, seeds, samples: float, noise_steps: int = RECORD_NOISE_STEPS) -> dict:
    """The draws of the pace runs on ``device``, kept to be studied and replayed on a CPU: per seed,
    the minibatch indices of every step to ``samples`` (uint16: MNIST's 50,000 fit) and the noise of
    the first ``noise_steps`` steps (float32), as the run draws them (on a GPU from one captured graph)."""
    M = TrainConfig(dataset="mnist").batch_size
    steps = math.ceil(samples / M)
    out = {"device": device, "samples": steps * M, "noise_steps": min(noise_steps, steps), "seeds": {}}
    for seed in seeds:
        idx, eps = draws_of(device, seed, steps, captured=device != "cpu")
        out["seeds"][int(seed)] = {"indices": idx.to(torch.uint16), "noise": eps[:noise_steps].float()}
    return out


# substituted in a CPU run by --replay: its minibatch indices, the noise of its first steps, or both
REPLAYS = ("indices", "noise", "both")


def _replaying(algorithm, drawn: dict, what: str) -> None:
    """Make a CPU run take the recorded ``drawn`` (``record_draws``' entry of one seed) in place of its
    own minibatch indices (``what`` = indices), the noise of its first steps (noise) or both. The run
    still makes each of its own draws first, so the rest of its stream is the CPU run's own."""
    if what not in REPLAYS:
        raise ValueError(f"replay={what!r} is not allowed: expected one of {', '.join(REPLAYS)}")
    own_indices, own_noise, made = algorithm.batches.indices, algorithm.noise, {"indices": 0, "noise": 0}

    def take(kind, mine):
        k, kept = made[kind], drawn[kind]
        made[kind] += 1
        return kept[k].reshape(mine.shape).to(mine.dtype) if what in (kind, "both") and k < len(kept) else mine
    algorithm.batches.indices = lambda: take("indices", own_indices())
    algorithm.noise = lambda: take("noise", own_noise())


def pace(device: str, way: str, seed: int, samples: float, data_dir=None, ticks=TICKS, drawn: dict | None = None,
         ) -> list[dict]:
    """A pace run of ``way`` on ``device``; ``way`` 'replay-indices', 'replay-noise' or 'replay-both' is
    the CPU's eager run with ``drawn`` (a seed's ``record_draws``) in place of its own draws."""
    replay = way.removeprefix("replay-") if way.startswith("replay-") else None
    if way not in WAYS and replay is None:
        raise ValueError(f"way={way!r} is not allowed: expected one of {', '.join(WAYS)} or replay-"
                         f"{{{','.join(REPLAYS)}}}")
    if replay is not None and (device != "cpu" or drawn is None):
        raise ValueError(f"way={way!r} replays recorded draws in a CPU run: device='cpu' and drawn= are needed")
    cfg = TrainConfig(dataset="mnist", n_z=20, n_hidden=500, lr=0.01, samples=int(samples), seed=seed,
                      compile=way == "own", device=device, draws="cpu" if way == "cpu" else "device", threads=1,
                      data_dir=data_dir)
    X_train, X_test = load_data(cfg)
    sets = {k: v.to(device) for k, v in eval_sets(cfg, X_train, X_test).items()}
    run = Run(cfg, cfg.lr, X_train)
    if replay is not None:
        _replaying(run.algorithm, drawn, replay)
    ticks, curve, t0 = [round(t) for t in ticks if t <= samples], [], time.perf_counter()
    torch.set_num_threads(cfg.threads)  # as train() runs on a CPU (no effect on a GPU)
    with flush_denormals():
        while ticks:
            run.step()
            if run.samples_seen >= ticks[0]:
                ticks.pop(0)
                curve.append({"samples": run.samples_seen, "train": run.algorithm.evaluate(sets["train"], "train"),
                              "seconds": round(time.perf_counter() - t0, 1)})
    return curve


def cpu_reference(samples: int, seeds=(0, 1, 2)) -> list[float]:
    """The CPU records' train bound at ``samples``: MNIST Nz = 20 of the standard budget (each a
    CPU run; its step size, 0.01, is the pace runs')."""
    from vae_utils.budgets import Places

    values = []
    for seed in seeds:
        record = json.loads((Places.for_budget("standard").results
                             / f"aevb_mnist_nz20_h500_grey_n50000_seed{seed}.json").read_text())
        if record["lr"] != 0.01 or any(d["device"] != "cpu" for d in record.get("devices", [])):
            raise ValueError(f"{record['name']} is not a CPU run with step 0.01: it cannot be the pace's reference")
        values += [p["train"] for p in record["curve"] if p["samples"] == samples]
    return values


def judge(study: dict, log=print) -> int:
    """0 when `own` keeps the CPU records' pace, 4 when `eager` does, 6 when only `cpu` does, 5 when none (see above)."""
    curves = study["curves"]
    samples = max(c[-1]["samples"] for c in curves.values())
    ref = cpu_reference(samples)
    if len(ref) < 2:
        raise ValueError(f"no CPU records at {samples:,} samples to judge the pace by")
    ref_mean, ref_sd = statistics.fmean(ref), statistics.stdev(ref)
    kept = {}
    for way in WAYS:
        ends = [c[-1]["train"] for k, c in curves.items() if k.split("/")[1] == way and c[-1]["samples"] == samples]
        if not ends:
            continue
        margin = max(0.5, 3 * ref_sd * math.sqrt(1 / len(ends) + 1 / len(ref)))
        gap = statistics.fmean(ends) - ref_mean
        kept[way] = abs(gap) <= margin
        log(f"pace at {samples:.3g}: {way} {statistics.fmean(ends):.2f} over {len(ends)} seeds, the CPU's "
            f"{ref_mean:.2f} over {len(ref)}: {gap:+.2f} ({'within' if kept[way] else 'outside'} {margin:.2f})")
    for kind, stats in study.get("draws", {}).items():
        log(f"draws {kind}: " + (f"suspect: {', '.join(stats['suspect'])}" if stats["suspect"] else "nothing suspect"))
    return 0 if kept.get("own") else 4 if kept.get("eager") else 6 if kept.get("cpu") else 5


RESCORE_SEEDS = (1000, 1001, 1002, 1003, 1004)  # 1000: the seed every curve's evaluation draws its noise with


def rescore(path: Path, device: str, data_dir=None, seeds=RESCORE_SEEDS) -> dict:
    """A checkpoint's model, at its last evaluation point, scored on ``device`` by the bound its
    curve records (``AEVB.evaluate``: ``lower_bound``, estimator B) with each of ``seeds``."""
    from vae_utils.estimators import lower_bound
    from vae_utils.train import evaluation_images, load_checkpoint, load_trained

    ckpt = load_checkpoint(path)
    point, at = ckpt["curve"][-1], ckpt["run"]["samples_seen"]
    if point["samples"] != at:
        raise ValueError(f"checkpoint {path} is at {at:,} samples, past its last evaluation point "
                         f"({point['samples']:,}): its model there was not scored")
    model, _ = load_trained(path)
    model = model.to(device)
    devices = sorted({s["provenance"].get("device", "cpu") for s in ckpt["sessions"] if "provenance" in s})
    out = {"checkpoint": path.name, "samples": at, "trained_on": devices, "scored_on": device, "seeds": list(seeds)}
    for split in ("train", "test"):
        X = evaluation_images(ckpt["config"], split, ckpt["config"]["eval_n"], data_dir=data_dir).to(device)
        here = [lower_bound(model, X, "B", seed=s) for s in seeds]
        out[split] = {"recorded": point[split], "here": here, "here_mean": statistics.fmean(here),
                      "here_sd": statistics.stdev(here)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--samples", type=float, default=3.2e6)
    ap.add_argument("--ways", default=",".join(WAYS))
    ap.add_argument("--draw-steps", type=int, default=DRAW_STEPS, help="steps of draws checked first (0: none)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--judge", type=Path, help="a study's JSON: compare it with the CPU records, exit 0, 4, 6 or 5")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rescore", type=Path, nargs="+", help="checkpoints whose last evaluation is scored again here")
    ap.add_argument("--record-draws", action="store_true",
                    help="write to --out (a .pt) the draws of --seeds' runs on --device to --samples, to replay on a CPU")
    ap.add_argument("--replay", type=Path, help="a --record-draws file: the ways replay-indices, replay-noise, "
                                                "replay-both train CPU runs on its draws")
    a = ap.parse_args(argv)
    if a.judge:
        if not a.judge.is_file():
            print(f"device_pace: {a.judge} is not a file (a study's --out JSON)", file=sys.stderr)
            return 2
        return judge(json.loads(a.judge.read_text()))
    if a.out is None:
        ap.error("--out is required (or --judge)")
    if a.out.exists():
        print(f"device_pace: {a.out} exists; it is not overwritten (pass another --out)", file=sys.stderr)
        return 2
    if a.rescore:
        out = {"settings": {"device": a.device, "rescore": [str(p) for p in a.rescore]}, "provenance": provenance(),
               "rescored": []}
        print("| checkpoint | samples | trained on | split | recorded | here, seed 1000 | here, 5 seeds |")
        print("|---|---|---|---|---|---|---|")
        for path in a.rescore:
            try:
                r = rescore(path, a.device, a.data_dir)
            except (OSError, ValueError) as e:
                print(f"device_pace: {e}", file=sys.stderr)
                return 2
            out["rescored"].append(r)
            for split in ("train", "test"):
                v = r[split]
                print(f"| {r['checkpoint']} | {r['samples']:.3g} | {', '.join(r['trained_on'])} | {split} | "
                      f"{v['recorded']:.3f} | {v['here'][0]:.3f} | {v['here_mean']:.3f} ± {v['here_sd']:.3f} |")
        a.out.write_text(json.dumps(out, indent=1))
        return 0
    seeds, ways = [int(s) for s in a.seeds.split(",")], a.ways.split(",")
    if a.record_draws:
        recorded = record_draws(a.device, seeds, a.samples) | {"provenance": json.loads(json.dumps(provenance()))}
        torch.save(recorded, a.out)
        print(f"device_pace: the draws of seeds {a.seeds} on {a.device}, {recorded['samples']:,} samples "
              f"(noise: the first {recorded['noise_steps']} steps), in {a.out}")
        return 0
    drawn = None
    if any(w.startswith("replay-") for w in ways):
        if a.replay is None or not a.replay.is_file():
            print(f"device_pace: the replay ways need --replay, a --record-draws file ({a.replay} is not one)",
                  file=sys.stderr)
            return 2
        drawn = torch.load(a.replay)
        missing = [s for s in seeds if s not in drawn["seeds"]]
        problem = ("replays run on --device cpu" if a.device != "cpu" else
                   f"{a.replay} holds the draws of seeds {sorted(drawn['seeds'])}, not of {missing}" if missing else
                   f"{a.replay} holds {drawn['samples']:,} samples' draws, fewer than --samples {a.samples:,.0f}"
                   if drawn["samples"] < a.samples else None)
        if problem:
            print(f"device_pace: {problem}", file=sys.stderr)
            return 2
    out = {"settings": vars(a) | {"out": str(a.out), "replay": str(a.replay) if a.replay else None},
           "provenance": provenance(), "draws": {}, "curves": {}}
    if drawn is not None:  # the recorded draws themselves: their first steps, where both indices and noise were kept
        out["replayed"] = {"device": drawn["device"], "provenance": drawn["provenance"], "noise_steps": drawn["noise_steps"]}
        n = TrainConfig(dataset="mnist").n_train
        for seed in seeds:
            d, k = drawn["seeds"][seed], drawn["noise_steps"]
            out["draws"][f"{drawn['device']}/recorded/{seed}"] = draw_statistics(d["indices"][:k].long(),
                                                                                d["noise"].double(), n)
    elif a.draw_steps:
        out["draws"] = draws_study(a.device, seeds[0], a.draw_steps, log=lambda line: print(line, flush=True))
        a.out.write_text(json.dumps(out, indent=1))
    for way in ways:
        for seed in seeds:
            out["curves"][f"{a.device}/{way}/{seed}"] = pace(a.device, way, seed, a.samples, a.data_dir,
                                                             drawn=drawn["seeds"][seed] if drawn else None)
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
