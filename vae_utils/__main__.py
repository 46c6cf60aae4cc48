"""Command line: ``python -m vae_utils {reproduce, train, fetch-data, likelihood, ais-calibration, verify, report,
tables, benchmark, fidelity} ...``.

    python -m vae_utils reproduce --budget quick           # every notebook, through papermill
    python -m vae_utils train --dataset mnist --nz 20 --samples 1e6
    python -m vae_utils train --dataset frey_face --nz 20 --hidden 200 --samples 1e6
    python -m vae_utils likelihood --checkpoint <name> --n 1000
    python -m vae_utils fetch-data --data-dir data/
    python -m vae_utils benchmark                           # samples/s vs the usual loop and the matmul limit
    python -m vae_utils tables                              # the README's and docs' tables, from results/

The data directory is --data-dir, else $AEVB_DATA_DIR, else data/ in the repository.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


class OneLineParser(argparse.ArgumentParser):
    """argparse, with every usage error in one line (the usage itself is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _finite(value: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(value)
    return v


def _parse_count(value: str) -> int:
    """A count such as 1e6: finite, whole and positive."""
    v = _finite(value)
    if not v.is_integer() or v < 1:
        raise ValueError(value)
    return int(v)


def _parse_seed(value: str) -> int:
    v = int(value)
    if not 0 <= v < 2**63:
        raise ValueError(value)
    return v


def _parse_lr(value: str):
    if value == "auto":
        return value
    v = _finite(value)
    if v <= 0:
        raise ValueError(value)
    return v


def _parse_seeds(value: str) -> list[int]:
    seeds = [_parse_seed(s.strip()) for s in value.split(",") if s.strip()]
    if not seeds:
        raise ValueError(value)
    return seeds


def _parse_names(value: str) -> list[str]:
    """A comma-separated list that must name something: ',' or '' names nothing and is refused."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ValueError(value)
    return names


def _type(parse, name: str, allowed: str):
    """An argparse type from a parser: a bad value is reported in one line as 'expected <allowed>'."""
    def typed(value: str):
        try:
            return parse(value)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{value!r} is not allowed: expected {allowed}") from None
    typed.__name__ = name
    return typed


_count = _type(_parse_count, "count", "a whole positive count such as 1e6")
_optional_int = _type(lambda v: None if v.lower() in ("none", "all") else _parse_count(v), "n_train",
                      "'all' or a whole positive count such as 1000")
_seed = _type(_parse_seed, "seed", "an integer in 0..2^63-1")
_seeds = _type(_parse_seeds, "seeds", "comma-separated integers in 0..2^63-1, e.g. 0,1,2")
_lr = _type(_parse_lr, "step size", "'auto' or a positive number")
_names = _type(_parse_names, "names", "comma-separated names, e.g. 02,04 (',' or '' names nothing)")
_ints = _type(lambda v: [int(n) for n in _parse_names(v)], "integers", "comma-separated integers, e.g. 3,20")


def _parse_positive(value: str) -> float:
    v = _finite(value)
    if v <= 0:
        raise ValueError(value)
    return v


_positive = _type(_parse_positive, "number", "a positive number")


def _parse_path(value: str) -> str:
    if not value.strip() or any(c in value for c in "\0\n\r"):
        raise ValueError(value)
    return value


def _parse_workers(value: str) -> int:
    v = int(value)
    if v < 0:
        raise ValueError(value)
    return v


_path = _type(_parse_path, "path", "a path (not empty, no NUL or line break)")


def _parse_url(value: str) -> str:
    from urllib.parse import urlparse

    if urlparse(value).scheme not in ("http", "https", "ftp", "file"):
        raise ValueError(value)
    return value


_url = _type(_parse_url, "url", "a base URL (http://, https://, ftp:// or file://) holding the files")
_workers = _type(_parse_workers, "workers", "0 (one per core) or a positive number of processes")


def _binarize(value: str):
    return None if value.lower() in ("none", "grey") else value


def parser() -> argparse.ArgumentParser:
    from .data import DATASETS

    p = OneLineParser(prog="python -m vae_utils", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train AEVB, wake-sleep or MCEM (resumes an existing run of the same name)")
    t.add_argument("--dataset", choices=DATASETS, default="mnist")
    t.add_argument("--algorithm", choices=("aevb", "wake_sleep", "mcem"), default="aevb")
    t.add_argument("--nz", type=int, default=20, help="latent dimensions")
    t.add_argument("--hidden", type=int, default=None, help="hidden units (default 500 MNIST, 200 Frey Face)")
    t.add_argument("--n-train", type=_optional_int, default=None, help="first n training points (default: the paper's)")
    t.add_argument("--binarize", type=_binarize, choices=(None, "static", "dynamic"), default=None,
                   help="MNIST only: none (grey levels, default), static or dynamic")
    t.add_argument("--estimator", choices=("A", "B"), default="B")
    t.add_argument("--samples", type=_count, default=1_000_000, help="training samples evaluated (budget)")
    t.add_argument("--lr", type=_lr, default="auto", help="Adagrad global step, or 'auto' (the paper's grid search)")
    t.add_argument("--lr-trial-samples", type=_count, default=100_000)
    t.add_argument("--eval-n", type=int, default=10_000, help="points of each split used for the curve (at most: a smaller split is used whole)")
    t.add_argument("--ws-logvar-scale", type=_positive, default=1.0, help="wake-sleep encoder log-var factor (anglepy: 0.1)")
    t.add_argument("--weight-prior", choices=("on", "off"), default="on",
                   help="the N(0, I) prior on the weight matrices, as weight decay M/N (on: the paper's and anglepy's)")
    t.add_argument("--mcem-step-rule", choices=("capped", "uncapped2013"), default="capped",
                   help="MCEM's HMC step tuning: x or / 1.25 (anglepy 2014) or 1.02^N (anglepy 2013)")
    t.add_argument("--mcem-m-step", choices=("full_batch", "minibatch"), default="full_batch",
                   help="MCEM's M-step: 5 Adagrad steps on all N (anglepy's batch MCEM) or on minibatches of M")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds trained together in one batched "
                   "step (AEVB, estimator B); each run writes its own record (names end in _seed<S>)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                   help="torch.compile the optimiser update (auto: runs of 20,000 steps or more)")
    t.add_argument("--gradient", choices=("auto", "by_hand", "autograd"), default="auto",
                   help="the gradient, written out by hand or autograd (auto: by hand where written, AEVB with "
                   "estimator B and MNIST wake-sleep; a resumed run keeps its own); the same arithmetic up to rounding")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train: cpu, cuda, or auto (the GPU when torch finds one); not part of the run's identity")
    t.add_argument("--draws", choices=("device", "cpu"), default="device",
                   help="the minibatches and noise (wake-sleep: and dreams) from the device's generator or the CPU's "
                   "(on a GPU the CPU run's very draws; a CPU checkpoint goes on with its stream); AEVB and MNIST's "
                   "wake-sleep")
    t.add_argument("--name", default=None, help="run name (checkpoint and results file stem)")
    t.add_argument("--data-dir", type=_path, default=None)
    t.add_argument("--results-dir", type=_path, default=None)
    t.add_argument("--checkpoint-dir", type=_path, default=None)
    t.add_argument("--no-progress", action="store_true")

    f = sub.add_parser("fetch-data", help="download and verify the datasets")
    f.add_argument("--dataset", choices=DATASETS, action="append", help="default: all")
    f.add_argument("--data-dir", type=_path, default=None)
    f.add_argument("--mirror", type=_url, default=None, help="a base URL holding the files, tried instead of the public homes")

    m = sub.add_parser("likelihood", help="marginal log-likelihood of a trained model (Appendix D and importance sampling)")
    m.add_argument("--checkpoint", type=_path, required=True, help="run name or checkpoint path")
    m.add_argument("--n", type=int, default=1000, help="first n points of train and of test")
    m.add_argument("--is-samples", type=int, default=5000, help="importance samples (0: skip)")
    m.add_argument("--quadrature", type=int, default=0, help="also integrate the first N points of each split "
                   "by quadrature (z_dim <= 3) and report each estimator's error")
    m.add_argument("--seed", type=_seed, default=0)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--data-dir", type=_path, default=None)
    m.add_argument("--out", type=_path, default=None, help="results JSON (default results/<run>_likelihood.json)")
    a = sub.add_parser("ais-calibration", help="AIS, Appendix D and importance sampling against quadrature on "
                       "Figure 3's Nz = 3 models, with the BDMC gap (results/quick/ais_calibration.json)")
    a.add_argument("--checkpoints", type=_names, default=None, help="comma-separated run names or .pt paths "
                   "(default: the six Figure-3 runs in checkpoints/quick/ and the two on-line MCEM runs before them)")
    a.add_argument("--n", type=_count, default=100, help="first n points of train and of test")
    a.add_argument("--num-steps", type=_count, default=1000, help="AIS intermediate distributions")
    a.add_argument("--num-chains", type=_count, default=24, help="AIS chains per datapoint")
    a.add_argument("--n-leapfrog", type=_count, default=2, help="leapfrog steps per AIS transition")
    a.add_argument("--schedule", choices=("sigmoid", "linear"), default="sigmoid")
    a.add_argument("--tune-chains", type=_count, default=4, help="chains of the step-size tuning pass")
    a.add_argument("--bdmc-n", type=_count, default=50, help="simulated points for the BDMC gap")
    a.add_argument("--is-samples", type=_count, default=10_000, help="importance samples per point")
    a.add_argument("--seed", type=_seed, default=0)
    a.add_argument("--threads", type=_count, default=1)
    a.add_argument("--out", type=_path, default=None, help="record (default results/quick/ais_calibration.json; resumes it)")

    v = sub.add_parser("verify", help="re-run the start of recorded runs and check their curves bit for bit")
    v.add_argument("results", nargs="+", type=_path, help="results/<run>.json files")
    v.add_argument("--samples", type=_count, default=None, help="training samples re-run (the start of the curve; "
                   "default 200000)")
    v.add_argument("--trial", action="store_true", help="re-run each record's step-size trial instead, and compare "
                   "every step's training value and the step chosen (verdict <run>_trial_verify.json)")
    v.add_argument("--data-dir", type=_path, default=None)
    v.add_argument("--out-dir", type=_path, default=None, help="folder for the verdicts (default: beside each results file)")

    rp = sub.add_parser("reproduce", help="execute the notebooks in order with papermill (the figures of the paper)")
    rp.add_argument("--budget", choices=("smoke", "quick", "standard", "paper"), default="quick",
                    help="how much to compute (vae_utils/budgets.py); default quick, about 30 min on 2 cores")
    rp.add_argument("--only", type=_names, default=None, help="comma-separated notebooks (names or NN prefixes), e.g. 02,04")
    rp.add_argument("--output-dir", type=_path, default=None, help="write results, figures, checkpoints and executed notebooks "
                    "under this folder instead of the repository's <kind>/<budget>/ places")
    rp.add_argument("--no-train", action="store_true", help="forbid training: redraw from existing results only")
    rp.add_argument("--rewrite", action="store_true", help="replace an executed notebook already there that differs "
                    "(default: keep it and write the new copy beside it as NN_name.new.ipynb)")
    rp.add_argument("--workers", type=_workers, default=0, help="parallel single-thread processes (0: one per core)")
    rp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where the notebooks train and estimate: cpu, cuda, or auto (the GPU when torch finds one)")

    pc = sub.add_parser("piece", help="train a piece of a budget's Figure 2 and 3 runs (to --target samples), resumably, "
                        "where papermill is not installed (a GPU machine); the notebooks then draw with --no-train")
    pc.add_argument("--budget", choices=("smoke", "quick", "standard", "paper"), default="paper")
    pc.add_argument("--figures", type=_names, default=["2", "3"], help="comma-separated: 2, 3 (default both)")
    pc.add_argument("--datasets", type=_names, default=None, help="Figure 2's datasets: mnist, frey_face (default both)")
    pc.add_argument("--algorithms", type=_names, default=None, help="only these algorithms' runs: aevb, "
                    "wake_sleep, mcem (default all)")
    pc.add_argument("--latents", type=_ints, default=None, help="only runs with these latent dimensions, "
                    "comma-separated (default all)")
    pc.add_argument("--target", type=_count, default=None, help="training samples per run in this piece "
                    "(default: the budget's own)")
    pc.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pc.add_argument("--max-minutes", type=_positive, default=None, help="stop at this time with checkpoints; rerun "
                    "the same command to continue")
    pc.add_argument("--output-dir", type=_path, default=None, help="instead of the repository's results/<budget> etc.")
    pc.add_argument("--seed", type=_seed, default=0)
    pc.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                    help="torch.compile each run's step (auto: runs of 20,000 steps or more)")
    pc.add_argument("--draws", choices=("device", "cpu"), default="device",
                    help="where the runs draw their minibatches and noise (wake-sleep: and dreams): the device's "
                    "generator, or the CPU's (on a GPU the CPU run's very draws; a CPU checkpoint goes on with its "
                    "stream); AEVB and MNIST's wake-sleep")
    pc.add_argument("--threads", type=_count, default=1, help="threads of each run's step (1: one run per core "
                    "is faster; 2: one run left on 2 cores); a regain re-runs on the record's own")
    pc.add_argument("--together", action="store_true",
                    help="train the piece's Figure-2 runs side by side in one process (on a GPU each on its own CUDA "
                    "stream, so that their steps overlap; the same runs as one after another)")
    pc.add_argument("--start-from", default=None,
                    help="a smaller budget (or an output folder) whose finished Figure-2 runs this budget's same "
                         "runs continue from (their checkpoints copied; the sources are kept)")

    pg = sub.add_parser("progress", help="Figures 2 and 3 of a budget still trained in pieces, each run as far as it "
                        "has come (figures/<budget>/figure2_<dataset>_so_far and figure3_so_far, .png and .pdf), "
                        "and each regain of a lost checkpoint under way, with how it compares with its record so far")
    pg.add_argument("--budget", choices=("smoke", "quick", "standard", "paper"), default="paper")
    pg.add_argument("--start-from", default=None, help="where a run not yet begun in this budget is drawn from, as "
                    "piece --start-from (default: the next smaller budget where it has records, so standard for "
                    "paper; 'none': only this budget's records)")
    pg.add_argument("--output-dir", type=_path, default=None, help="instead of the repository's results/<budget> etc.")
    pg.add_argument("--reference-dir", type=_path, default=None, help="folder of aevb_paper_figures_digitized.csv "
                    "(default $AEVB_REFERENCE_DIR, else the copy in the package)")

    b = sub.add_parser("benchmark", help="samples/s of our code, the pytorch/examples-style loop and the matmul "
                       "limit, in one run (results/benchmarks.json)")
    b.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    b.add_argument("--min-time", type=_positive, default=2.0, help="seconds per measurement")
    b.add_argument("--only", type=_names, default=None, help="comma-separated workloads (default: all)")
    b.add_argument("--sweep-samples", type=_count, default=300_000, help="training samples per run of the sweep workload")
    b.add_argument("--data-dir", type=_path, default=None)
    b.add_argument("--out", type=_path, default=None, help="results JSON (default results/benchmarks.json)")
    b.add_argument("--resume", action="store_true", help="keep the workloads already measured in --out")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the CPU workloads (results/benchmarks.json) "
                   "or the GPU's (results/benchmarks_cuda.json)")

    fd = sub.add_parser("fidelity", help="the experiments on the gaps to the paper: run them, or tabulate")
    fd.add_argument("action", choices=("run", "table", "latent-kl", "train-blocks"),
                    help="latent-kl: where wake-sleep's bound goes with 200 latents (the KL on latents the decoder "
                         "reads and on the rest), on the finished Nz = 200 runs, written once; train-blocks: the "
                         "paper budget's finished MNIST runs scored on each block of 10,000 training images, the "
                         "whole training split and the test split, written once")
    fd.add_argument("--gap", default=None, help="frey_face | wake_sleep | wake_sleep_nz200 | mcem | figure3_aevb (default: every gap, table only)")
    fd.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds")
    fd.add_argument("--samples", type=_count, default=1_000_000)
    fd.add_argument("--only", type=_names, default=None, help="comma-separated experiment names")
    fd.add_argument("--workers", type=_workers, default=0)

    tb = sub.add_parser("tables", help="rewrite the tables of README.md and docs/ from the records in results/")
    tb.add_argument("--check", action="store_true", help="only list the tables whose text is not what the records "
                    "give (exit 1 if any)")

    r = sub.add_parser("report", help="tables and Figure-2 panels of the runs in results/, next to the paper")
    r.add_argument("--reference-dir", type=_path, default=None, help="folder of aevb_paper_figures_digitized.csv "
                   "(default $AEVB_REFERENCE_DIR)")
    r.add_argument("--pattern", default="*.json", help="results files to include (relative to --results-dir, or absolute)")
    r.add_argument("--results-dir", type=_path, default=None, help="folder of the results files (default results/)")
    r.add_argument("--figures-dir", type=_path, default=None, help="where the panels go (default figures/)")
    return p


def _one_line(e: BaseException) -> str:
    from .records import describe_os_error

    text = describe_os_error(e) if isinstance(e, OSError) and e.errno is not None else str(e) or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv=None) -> int:
    """Run a command. Every outcome other than success is one line on stderr: bad input and
    damaged or unusable files are refused before any work (exit 2), a run that failed after it
    started is reported with what it kept (exit 1), Ctrl-C stops at a checkpoint (exit 130), and
    so does SIGTERM (exit 143).
    An unexpected error is one line too (exit 1); AEVB_TRACEBACK=1 shows its traceback."""
    args = parser().parse_args(argv)
    from .records import Interrupted, RunFailed
    from .train import RunLockedError

    prog = f"python -m vae_utils {args.command}"
    try:
        return _run(args)
    except Interrupted as e:
        print(f"{prog}: {_one_line(e)}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C) at once; files are written whole or not at all, so rerun the same "
              f"command: a run goes on from its last checkpoint, if it had one", file=sys.stderr)
        return 130
    except RunFailed as e:
        print(f"{prog}: {_one_line(e)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, LookupError, OSError, RunLockedError) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if os.environ.get("AEVB_TRACEBACK"):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)} (a bug: please report it with the command; "
              f"AEVB_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.command == "fetch-data":
        from .data import DATASETS, fetch_data

        mirrors = None
        if args.mirror:
            mirrors = {name: [args.mirror] for name in DATASETS}
        fetch_data(args.dataset or DATASETS, data_dir=args.data_dir, mirrors=mirrors)
        return 0
    if args.command == "train":
        from .train import TrainConfig, train

        hidden = args.hidden if args.hidden is not None else (500 if args.dataset == "mnist" else 200)
        cfg = TrainConfig(dataset=args.dataset, algorithm=args.algorithm, n_z=args.nz, n_hidden=hidden,
                          n_train=args.n_train, binarize=args.binarize, estimator=args.estimator,
                          samples=args.samples, lr=args.lr, lr_trial_samples=args.lr_trial_samples,
                          eval_n=args.eval_n, ws_logvar_scale=args.ws_logvar_scale, weight_prior=args.weight_prior == "on",
                          mcem_step_rule=args.mcem_step_rule, mcem_m_step=args.mcem_m_step, seed=args.seed,
                          threads=args.threads, compile={"yes": True, "no": False}.get(args.compile, "auto"),
                          gradient=args.gradient, device=args.device, draws=args.draws,
                          name=args.name, data_dir=args.data_dir,
                          results_dir=args.results_dir, checkpoint_dir=args.checkpoint_dir)
        if args.seeds:
            import dataclasses

            from .batched import train_batched

            cfgs = [dataclasses.replace(cfg, seed=s, name=f"{args.name}_seed{s}" if args.name else None) for s in args.seeds]
            train_batched(cfgs, progress=not args.no_progress)
            return 0
        train(cfg, progress=not args.no_progress)
        return 0
    if args.command == "likelihood":
        from .likelihood_studies import evaluate_checkpoint

        evaluate_checkpoint(args.checkpoint, n=args.n, is_samples=args.is_samples, seed=args.seed,
                            threads=args.threads, quadrature_n=args.quadrature, data_dir=args.data_dir, out=args.out)
        return 0
    if args.command == "reproduce":
        from .reproduce import NotebookFailed, run_notebooks

        t0 = time.time()
        try:
            report = run_notebooks(args.budget, args.only, args.output_dir, allow_training=not args.no_train,
                                   workers=args.workers, device=args.device, rewrite=args.rewrite)
        except NotebookFailed as e:
            print(f"python -m vae_utils reproduce: {_one_line(e)}", file=sys.stderr)
            return 1
        print(f"reproduce: {len(report)} notebooks at budget {args.budget} in {time.time() - t0:.0f} s")
        return 0
    if args.command == "piece":
        from .experiments import train_piece

        done = train_piece(args.budget, args.figures, args.target, device=args.device, output_dir=args.output_dir,
                           seed=args.seed, datasets=args.datasets, max_minutes=args.max_minutes,
                           algorithms=args.algorithms, latents=args.latents, start_from=args.start_from,
                           compile={"yes": True, "no": False}.get(args.compile, "auto"), draws=args.draws,
                           together=args.together, threads=args.threads)
        state = (f"stopped at the time limit: {len(done['remaining'])} runs to go (rerun the same command to continue)"
                 if done["time_limit"] else "every run of this piece reached its target")
        print(f"piece: {len(done['finished'])} runs at their target; {state}")
        return 0
    if args.command == "progress":
        from . import plotting as P
        from .budgets import BUDGETS, Places
        from .experiments import FIGURE2_LATENTS, figure2_so_far, figure3_so_far
        from .verify import regain_line, regains_under_way

        paper, start = P.load_paper_curves(args.reference_dir), None if args.start_from == "none" else args.start_from
        names = list(BUDGETS)
        if args.start_from is None and names.index(args.budget) > 0:  # the budget below, which its pieces continue
            below = names[names.index(args.budget) - 1]
            start = below if Places.for_budget(below).results.is_dir() else None
        for dataset in FIGURE2_LATENTS:
            runs = figure2_so_far(args.budget, dataset, output_dir=args.output_dir, start_from=start)
            if not runs:
                print(f"progress: no {dataset} run of Figure 2 is recorded yet")
                continue
            fig = P.plot_figure2(runs, paper, dataset, so_far=True)
            saved = P.save_figure(fig, f"figure2_{dataset}_so_far", Places.for_budget(args.budget, args.output_dir).figures)
            print(f"progress: {dataset}, {len(runs)} runs, from {P.samples_label(min(r['samples_seen'] for r in runs))} "
                  f"to {P.samples_label(max(r['samples_seen'] for r in runs))} samples: {', '.join(map(str, saved))}")
        here = Places.for_budget(args.budget, args.output_dir)
        for regain in regains_under_way(here.checkpoints, here.results):  # hours of a core each: still agreeing?
            print(f"progress: {regain_line(regain)}")
        curves = figure3_so_far(args.budget, output_dir=args.output_dir)
        if not curves:
            print("progress: no run of Figure 3 has a log p(x) point yet")
            return 0
        reached = [r["points"][-1]["samples"] for r in curves]
        saved = P.save_figure(P.plot_figure3(curves, paper, so_far=True), "figure3_so_far",
                              Places.for_budget(args.budget, args.output_dir).figures)
        print(f"progress: Figure 3, {len(curves)} runs, from {P.samples_label(min(reached))} to "
              f"{P.samples_label(max(reached))} samples: {', '.join(map(str, saved))}")
        return 0
    if args.command == "ais-calibration":
        from .likelihood_studies import FIGURE3_NZ3_RUNS, ais_calibration, ais_calibration_claim
        from .records import CHECKPOINT_DIR

        runs = args.checkpoints or [str(CHECKPOINT_DIR / "quick" / f"{r}.pt") for r in FIGURE3_NZ3_RUNS]
        record = ais_calibration(runs, n=args.n, num_steps=args.num_steps, num_chains=args.num_chains,
                                 n_leapfrog=args.n_leapfrog, schedule=args.schedule, tune_chains=args.tune_chains,
                                 bdmc_n=args.bdmc_n, is_samples=args.is_samples, seed=args.seed, threads=args.threads,
                                 out=args.out)
        row = ais_calibration_claim(record)
        print(f"AIS worst mean |error| {record['summary']['ais_worst_mean_abs_error']:.3f} nat: {row['verdict']} "
              f"(margin {row['margin']} against {row['error']})")
        return 0
    if args.command == "verify":
        from .config import ALGORITHMS
        from .records import read_training_record
        from .verify import check_has_trial, rerun_config, verify_run, verify_trial

        files = list(dict.fromkeys(args.results))  # a file named twice is verified once
        if args.trial and args.samples is not None:
            raise ValueError("--samples does not apply to --trial: a trial's length is fixed by its run")
        samples = 200_000 if args.samples is None else args.samples
        for p in files:  # every file checked before any re-run
            record = read_training_record(p, ALGORITHMS)
            rerun_config(record, 1 if args.trial else samples, args.data_dir, ".", path=p)
            if args.trial:
                check_has_trial(record, p)
        if args.trial:
            verdicts = [verify_trial(p, data_dir=args.data_dir, out_dir=args.out_dir)["verdict"] for p in files]
        else:
            verdicts = [verify_run(p, samples, data_dir=args.data_dir, out_dir=args.out_dir)["verdict"] for p in files]
        return 0 if all(v != "differs" for v in verdicts) else 1
    if args.command == "benchmark":
        from pathlib import Path

        from .benchmark import run_benchmark, table

        record = run_benchmark(repeats=args.repeats, min_time=args.min_time, only=args.only, sweep_samples=args.sweep_samples,
                               data_dir=args.data_dir, out=Path(args.out) if args.out else None, resume=args.resume,
                               device=args.device)
        print(table(record))
        return 0
    if args.command == "fidelity":
        from . import fidelity as FD

        gaps = sorted({e.gap for e in FD.EXPERIMENTS}) + ["mcem", "figure3_aevb"]
        if args.gap is not None and args.gap not in gaps:
            raise ValueError(f"--gap {args.gap!r} is not allowed: expected one of {', '.join(gaps)}")
        if args.action == "latent-kl":
            print(FD.latent_kl_markdown(FD.latent_kl_study(args.seeds, args.samples)))
            return 0
        if args.action == "train-blocks":
            from .tables import mnist_train_blocks

            FD.train_blocks_study()
            print(mnist_train_blocks())
            return 0
        if args.action == "run":
            if args.gap is None:
                raise ValueError(f"fidelity run needs --gap ({', '.join(gaps)})")
            if args.gap == "mcem":  # Figure 3's MCEM curve with its log p(x) points, per variant and seed
                FD.run_mcem(args.only or [FD.MCEM_DEFAULT], args.seeds, workers=args.workers)
                return 0
            if args.gap == "figure3_aevb":  # Figure 3's AEVB on N = 50,000 with each step size of the grid
                FD.run_fig3_aevb(args.only or list(FD.FIG3_AEVB_VARIANTS), args.seeds, workers=args.workers)
                return 0
            FD.run(args.gap, args.seeds, args.samples, args.only, workers=args.workers)
            return 0
        for gap in ([args.gap] if args.gap and args.gap not in ("mcem", "figure3_aevb")
                    else sorted({e.gap for e in FD.EXPERIMENTS})):
            print(f"\n{gap}\n")
            print(FD.markdown(FD.table(gap)))
            print(f"\nRuns:\n{FD.commands(gap)}")
        if args.gap in (None, "mcem"):
            print("\nmcem (Figure 3, N = 1000; ours − paper, each run under the x-axis count it was recorded with)\n")
            print(FD.mcem_seed_markdown(FD.mcem_seed_table()))
            print("\nmcem (Figure 3, N = 50,000; batch MCEM)\n")
            print(FD.mcem_seed_markdown(FD.mcem_seed_table(n_train=50_000), 50_000))
        if args.gap in (None, "figure3_aevb"):
            print("\nfigure3_aevb (Figure 3, AEVB on N = 50,000, each step size of the grid)\n")
            print(FD.fig3_aevb_markdown(FD.fig3_aevb_table()))
        from . import tables as T

        if args.gap in (None, "frey_face"):
            print("\nfrey_face to the paper's end (Nz = 20, today's default, test from 1e6 on)\n")
            print(T.frey_long_run())
            print("\nfrey_face, every latent size to 1e7 (test from 1e6 on)\n")
            print(T.frey_latents())
        if args.gap in (None, "wake_sleep_nz200"):
            print("\nwake_sleep_nz200: the KL term on latents the decoder reads and on the rest\n")
            print(T.wake_sleep_nz200_kl())
        if args.gap is None:
            print("\nthe gap ledger: closed, narrowed or open, and the explanation that stands\n")
            print(T.gaps_remaining())
        return 0
    if args.command == "tables":
        from .tables import update

        stale = update(write=not args.check)
        if args.check and stale:
            print(f"tables: {len(stale)} stale (rerun without --check to rewrite them): {', '.join(stale)}", file=sys.stderr)
            return 1
        print(f"tables: {len(stale)} {'stale' if args.check else 'rewritten'}" + (f": {', '.join(stale)}" if stale else ""))
        return 0
    if args.command == "report":
        from . import plotting as P

        paper = P.load_paper_curves(args.reference_dir)
        # MCEM has no encoder and so no bound curve: it appears in the likelihood table only
        from .train import run_config_of

        results = [r for r in P.load_results(args.pattern, args.results_dir, validate=run_config_of)
                   if r["finished"] and r["algorithm"] != "mcem"]
        if not results:
            print(f"report: no finished AEVB or wake-sleep results match {args.pattern!r} in "
                  f"{args.results_dir or P.RESULTS_DIR}", file=sys.stderr)
        print(P.markdown_table(P.comparison_rows(results, paper)))
        print()
        print(P.likelihood_table(paper))
        groups = {}
        for r in results:
            c = r["config"]
            groups.setdefault((c["dataset"], c["n_z"], c["n_hidden"], c["n_train"], c["binarize"]), []).append(r)
        for (dataset, nz, h, n, binarize), rs in groups.items():
            ylim = {"mnist": (-150, -95) if n == 50_000 else (-200, -100), "frey_face": (0, 1600)}[dataset]
            fig, _ = P.plot_bound_curves(rs, paper, f"{dataset}, $N_z$={nz}, {h} hidden, N={n or 'all'}, "
                                         f"{binarize or 'grey levels'}", ylim)
            print(P.save_figure(fig, f"bound_{dataset}_nz{nz}_h{h}_n{n or 'all'}_{binarize or 'grey'}", args.figures_dir))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
