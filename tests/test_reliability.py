"""Bad input and faults, table-driven by class (CLI, API, notebooks, files, faults).

Every case asserts its exit code (or exception type), that the message is one line naming
what is wrong, and that no file was lost or left half-written: a workspace holding
committed-style records (a finished run without its checkpoint, its checkpoint elsewhere, a
log p(x) record, a verify verdict) is fingerprinted before the case and checked after it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from vae_utils import budgets, records
from vae_utils import data as D
from vae_utils.__main__ import main

TINY = ["--nz", "2", "--hidden", "20", "--n-train", "500", "--lr", "0.02", "--eval-n", "100", "--no-progress"]
TEMP_NAMES = re.compile(r"(\.tmp$|^\.write-probe-)")


# --- the workspace: committed-style records, fingerprinted ----------------------------------

@pytest.fixture(scope="session")
def bank(tmp_path_factory, data_dir):
    """A finished tiny run (results and checkpoint), its log p(x) record and its verify verdict,
    made once through the CLI."""
    b = tmp_path_factory.mktemp("bank")
    r, c = b / "results", b / "ckpt"
    assert main(["train", *TINY, "--samples", "2e4", "--name", "tiny", "--results-dir", str(r),
                 "--checkpoint-dir", str(c)]) == 0
    assert main(["likelihood", "--checkpoint", str(c / "tiny.pt"), "--n", "4", "--is-samples", "10",
                 "--out", str(r / "tiny_likelihood.json")]) == 0
    assert main(["verify", str(r / "tiny.json"), "--samples", "1e4"]) == 0
    verdict = json.loads((r / "tiny_verify.json").read_text())
    verdict["provenance"]["git_commit"] = "0" * 40  # a verdict made by other code
    (r / "tiny_verify.json").write_text(json.dumps(verdict))
    return b


@pytest.fixture
def ws(tmp_path, bank):
    """A fresh copy of the bank: results/ (as committed: no checkpoints), ckpt/ kept apart."""
    shutil.copytree(bank / "results", tmp_path / "results")
    shutil.copytree(bank / "ckpt", tmp_path / "ckpt", ignore=shutil.ignore_patterns("*.lock"))
    return tmp_path


def _digest(p: pathlib.Path) -> str:
    try:
        with open(p, "rb") as f:  # not Path.read_bytes, which a fault case may replace
            return hashlib.sha256(f.read()).hexdigest()
    except PermissionError:
        return "unreadable"


def fingerprint(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_nothing_lost(root: pathlib.Path, before: dict, may_change=()) -> None:
    after = fingerprint(root)
    lost = [k for k in before if k not in after and k not in may_change]
    changed = [k for k in before if k in after and after[k] != before[k] and k not in may_change]
    half = [k for k in after if TEMP_NAMES.search(pathlib.Path(k).name)]
    assert not lost and not changed and not half, f"lost {lost}, changed {changed}, temporary files left {half}"


def run_cli(argv, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, [line for line in err.splitlines() if line.strip()], out


@dataclass
class Case:
    id: str
    argv: list
    code: int
    line: str                            # a regex the one line must match
    setup: Callable | None = None        # setup(ws, monkeypatch) before the fingerprint
    may_change: tuple = ()               # files the case is meant to replace
    check: Callable | None = None        # check(ws, stdout) after


def run_case(case: Case, ws, capsys, monkeypatch):
    if case.setup:
        case.setup(ws, monkeypatch)
    before = fingerprint(ws)
    argv = [a.format(ws=ws, r=ws / "results", c=ws / "ckpt") for a in case.argv]
    code, lines, out = run_cli(argv, capsys)
    assert code == case.code, (code, lines)
    if case.code != 0:
        assert len(lines) == 1, lines
        assert re.search(case.line, lines[0]), lines[0]
        assert "Traceback" not in lines[0]
    assert_nothing_lost(ws, before, case.may_change)
    if case.check:
        case.check(ws, out)


# --- class 1: the command line ----------------------------------------------------------------

def _write(rel, text):
    return lambda ws, mp: (ws / rel).write_text(text)


RESULTS = ["--results-dir", "{r}", "--checkpoint-dir", "{ws}/other_ckpt"]
CLI_CASES = [
    # the issue's
    Case("n-train-inf", ["train", "--n-train", "inf", *RESULTS], 2, r"--n-train: 'inf' is not allowed"),
    Case("n-train-fraction", ["train", "--n-train", "1000.7", *RESULTS], 2, r"--n-train: '1000.7' is not allowed"),
    Case("seed-20-digits", ["train", "--seed", "9" * 20, *RESULTS], 2, r"--seed: '9{20}' is not allowed: expected an integer in 0..2\^63-1"),
    Case("verify-samples-inf", ["verify", "{r}/tiny.json", "--samples", "inf"], 2, r"--samples: 'inf' is not allowed"),
    Case("verify-samples-nan", ["verify", "{r}/tiny.json", "--samples", "nan"], 2, r"--samples: 'nan' is not allowed: expected a whole positive count"),
    Case("fidelity-seeds-letter", ["fidelity", "run", "--gap", "frey_face", "--seeds", "a"], 2, r"--seeds: 'a' is not allowed: expected comma-separated integers"),
    Case("reproduce-only-comma", ["reproduce", "--only", ","], 2, r"--only: ',' is not allowed: .*names nothing"),
    Case("reproduce-only-empty", ["reproduce", "--only", ""], 2, r"--only: '' is not allowed"),
    Case("flag-of-another-algorithm", ["train", "--algorithm", "mcem", "--gradient", "by_hand", *RESULTS], 2,
         r"gradient='by_hand' does not apply to algorithm='mcem'"),
    Case("cpu-draws-mcem", ["train", "--algorithm", "mcem", "--draws", "cpu", *RESULTS], 2,
         r"draws='cpu' does not apply to algorithm='mcem'"),
    Case("wake-sleep-by-hand-gaussian", ["train", "--algorithm", "wake_sleep", "--dataset", "frey_face", "--gradient",
                                         "by_hand", *RESULTS], 2,
         r"gradient='by_hand' is written for wake-sleep with MNIST's Bernoulli decoder and ws_logvar_scale=1 only"),
    Case("verify-empty-object", ["verify", "{ws}/x.json"], 2, r"x.json is not a training results file .*lacks 'name'",
         setup=_write("x.json", "{}")),
    Case("verify-list", ["verify", "{ws}/x.json"], 2, r"x.json is not a training results file .*JSON list",
         setup=_write("x.json", "[]")),
    Case("verify-curve-less", ["verify", "{r}/tiny_likelihood.json"], 2, r"is not a training results file .*lacks 'name'"),
    Case("report-malformed-curve", ["report", "--results-dir", "{ws}/bad", "--figures-dir", "{ws}/fig"], 2,
         r"is not a training results file",
         setup=lambda ws, mp: (ws / "bad").mkdir() or (ws / "bad" / "r.json").write_text('{"curve": 5}')),
    Case("report-absolute-pattern", ["report", "--pattern", "{r}/tiny*.json", "--figures-dir", "{ws}/fig"], 0, "",
         check=lambda ws, out: "| mnist" in out or "mnist" in out),
    # ours
    Case("samples-zero", ["train", "--samples", "0", *RESULTS], 2, r"--samples: '0' is not allowed"),
    Case("samples-fraction", ["train", "--samples", "1.5e0", *RESULTS], 2, r"--samples: '1.5e0' is not allowed"),
    Case("lr-negative", ["train", "--lr", "-1", *RESULTS], 2, r"--lr: '-1' is not allowed: expected 'auto' or a positive"),
    Case("lr-nan", ["train", "--lr", "nan", *RESULTS], 2, r"--lr: 'nan' is not allowed"),
    Case("nz-fraction", ["train", "--nz", "1.5", *RESULTS], 2, r"--nz: invalid int value: '1.5'"),
    Case("seed-negative", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--seed", "-1"], 2, r"--seed: '-1' is not allowed"),
    Case("likelihood-n-zero", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--n", "0", "--out", "{ws}/l.json"], 2,
         r"n=0 is not allowed: expected an integer >= 1"),
    Case("benchmark-min-time-zero", ["benchmark", "--min-time", "0"], 2, r"--min-time: '0' is not allowed"),
    Case("benchmark-only-comma", ["benchmark", "--only", ","], 2, r"--only: ',' is not allowed"),
    Case("name-with-slash", ["train", "--name", "a/b", *RESULTS], 2, r"name='a/b' is not allowed"),
    Case("name-too-long", ["train", "--name", "n" * 250, *RESULTS], 2, r"name='n+' is not allowed: expected a file name of 1-200 bytes"),
    Case("binarize-frey", ["train", "--dataset", "frey_face", "--binarize", "static", *RESULTS], 2,
         r"binarize='static' is not allowed with dataset='frey_face'"),
    Case("estimator-for-mcem", ["train", "--algorithm", "mcem", "--estimator", "A", *RESULTS], 2,
         r"estimator='A' does not apply to algorithm='mcem'"),
    Case("weight-prior-unknown", ["train", "--weight-prior", "maybe", *RESULTS], 2,
         r"--weight-prior: invalid choice: 'maybe' \(choose from '?on'?, '?off'?\)"),
    Case("ws-scale-for-aevb", ["train", "--ws-logvar-scale", "0.1", *RESULTS], 2,
         r"ws_logvar_scale=0.1 does not apply to algorithm='aevb'"),
    Case("budget-unknown", ["reproduce", "--budget", "huge"], 2, r"--budget: invalid choice: 'huge'"),
    Case("only-unknown-notebook", ["reproduce", "--only", "99"], 2, r"--only '99' names no notebook"),
    Case("workers-negative", ["reproduce", "--workers", "-1"], 2, r"--workers: '-1' is not allowed: expected 0 \(one per core\)"),
    Case("verify-missing-file", ["verify", "{ws}/nope.json"], 2, r"nope.json: No such file or directory"),
    Case("fidelity-without-gap", ["fidelity", "run"], 2, r"fidelity run needs --gap"),
    Case("unknown-command", ["fly"], 2, r"invalid choice: 'fly'"),
    Case("threads-huge", ["train", "--threads", "1000000", *RESULTS], 2, r"threads=1000000 is not allowed: expected an integer in 1\.\.\d+"),
    Case("lr-huge", ["train", "--lr", "1e300", *RESULTS], 2, r"lr=1e\+300 is not allowed: expected 'auto' or a positive number up to 1e\+06"),
    Case("name-blank", ["train", "--name", " ", *RESULTS], 2, r"name=' ' is not allowed"),
    Case("name-line-break", ["train", "--name", "a\nb", *RESULTS], 2, r"name='a\\nb' is not allowed"),
    Case("out-empty", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", ""], 2, r"--out: '' is not allowed: expected a path"),
    Case("results-dir-blank", ["train", "--results-dir", "  "], 2, r"--results-dir: '  ' is not allowed"),
    Case("fidelity-workers-negative", ["fidelity", "run", "--gap", "frey_face", "--workers", "-1"], 2, r"--workers: '-1' is not allowed"),
    Case("fidelity-unknown-gap", ["fidelity", "table", "--gap", "bogus"], 2, r"--gap 'bogus' is not allowed: expected one of"),
    Case("data-dir-is-a-file", ["train", *TINY, "--samples", "1e4", "--name", "z", "--results-dir", "{ws}/r2",
                                "--checkpoint-dir", "{ws}/c2", "--data-dir", "{r}/tiny.json"], 2,
         r"data_dir='.*tiny.json' is a file, not a folder"),
    Case("report-missing-results-dir", ["report", "--results-dir", "{ws}/nope", "--figures-dir", "{ws}/fig"], 2,
         r"results folder .*nope does not exist"),
    Case("verify-the-same-file-twice", ["verify", "{r}/tiny.json", "{r}/tiny.json", "--samples", "1e4", "--out-dir", "{ws}/v"], 0, "",
         check=lambda ws, out: out.count("identical") == 1),
    Case("results-dir-is-a-file", ["train", *TINY, "--samples", "1e4", "--name", "z", "--results-dir", "{r}/tiny.json",
                                   "--checkpoint-dir", "{ws}/c2"], 2, r"results folder .*tiny.json is a file, not a folder"),
    Case("verify-trial-with-samples", ["verify", "{r}/tiny.json", "--trial", "--samples", "1e4"], 2,
         r"--samples does not apply to --trial: a trial's length is fixed by its run"),
    Case("verify-trial-of-a-run-at-a-given-step", ["verify", "{r}/tiny.json", "--trial", "--out-dir", "{ws}/v"], 2,
         r"tiny.json was trained at a given step size \(0.02\), without a step-size trial: there is no trial to verify"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_refuses_bad_input_in_one_line(case, ws, capsys, monkeypatch):
    run_case(case, ws, capsys, monkeypatch)


# --- class 2: the Python API --------------------------------------------------------------------

def _tiny_model():
    from vae_utils.models import VAE

    torch.manual_seed(0)
    return VAE(x_dim=6, h_dim=4, z_dim=2, likelihood="bernoulli")


def _nan_x():
    x = torch.rand(3, 6)
    x[1, 2] = float("nan")
    return x


def _cfg(**kw):
    from vae_utils.train import TrainConfig

    return lambda: TrainConfig(**kw)


def _ml(fn_name, args, **kw):
    def call():
        from vae_utils import marginal_likelihood as ML

        return getattr(ML, fn_name)(*args(), **kw)
    return call


def _est(fn_name, args):
    def call():
        from vae_utils import estimators as E

        return getattr(E, fn_name)(*args())
    return call


API_CASES = [
    # the issue's
    ("load_dataset-n_train-negative", lambda: D.load_dataset("mnist", "test", n_train=-5), ValueError, r"n_train=-5 is not allowed"),
    ("config-results_dir-int", _cfg(results_dir=5), TypeError, r"results_dir=5 is not allowed: expected a folder path"),
    ("config-name-nul", _cfg(name="a\0b"), ValueError, r"name='a\\x00b' is not allowed"),
    ("config-lr_grid-int", _cfg(lr_grid=5), TypeError, r"lr_grid=5 is not allowed: expected a non-empty tuple"),
    ("config-dataset-list", _cfg(dataset=["mnist"]), TypeError, r"dataset=\['mnist'\] is not allowed: expected one of 'mnist', 'frey_face'"),
    ("load_dataset-data_dir-int", lambda: D.load_dataset("mnist", data_dir=5), TypeError, r"data_dir=5 is not allowed"),
    ("sgvb_b-wrong-columns", _est("sgvb_b", lambda: (_tiny_model(), torch.rand(3, 7))), ValueError, r"x has 7 columns; the model expects 6"),
    ("gaussian_kl-shapes", _est("gaussian_kl", lambda: (torch.zeros(3, 2), torch.zeros(3, 4))), ValueError,
     r"shapes differ: mu \(3, 2\), logvar \(3, 4\)"),
    ("lower_bound-nan", _est("lower_bound", lambda: (_tiny_model(), _nan_x())), ValueError, r"X has 1 NaN or infinite values \(rows \[1\]\): expected finite pixels"),
    ("hmc_kde-nan", _ml("hmc_kde_log_likelihood", lambda: (_tiny_model(), _nan_x())), ValueError, r"x has 1 NaN or infinite values \(rows \[1\]\)"),
    ("importance-nan", _ml("importance_log_likelihood", lambda: (_tiny_model(), _nan_x())), ValueError, r"x has 1 NaN or infinite values \(rows \[1\]\)"),
    ("config-gradient-mcem", _cfg(algorithm="mcem", gradient="by_hand"), ValueError, r"does not apply to algorithm='mcem'"),
    ("config-gradient-wake-sleep-scale", _cfg(algorithm="wake_sleep", gradient="by_hand", ws_logvar_scale=0.5), ValueError,
     r"is written for wake-sleep with MNIST's Bernoulli decoder and ws_logvar_scale=1 only"),
    # ours
    ("config-seed-2^64", _cfg(seed=2**64), ValueError, r"seed=18446744073709551616 is not allowed: expected an integer in 0..2\^63-1"),
    ("config-n_z-bool", _cfg(n_z=True), TypeError, r"n_z=True is not allowed"),
    ("config-lr_grid-negative", _cfg(lr_grid=(0.1, -1)), ValueError, r"lr_grid=\(0.1, -1\) is not allowed"),
    ("config-algorithm-none", _cfg(algorithm=None), ValueError, r"unknown algorithm None"),
    ("config-checkpoint_dir-empty", _cfg(checkpoint_dir=""), TypeError, r"checkpoint_dir='' is not allowed"),
    ("config-name-dotdot", _cfg(name=".."), ValueError, r"name='..' is not allowed"),
    ("config-lr-word", _cfg(lr="fast"), ValueError, r"lr='fast' is not allowed: expected 'auto' or a positive number"),
    ("config-mcem-knob-for-aevb", _cfg(mcem_leapfrog=3), ValueError, r"mcem_leapfrog=3 does not apply to algorithm='aevb'"),
    ("load_dataset-split", lambda: D.load_dataset("mnist", "dev"), ValueError, r"unknown split 'dev'"),
    ("load_dataset-binarize-int", lambda: D.load_dataset("mnist", binarize=1), TypeError, r"binarize=1 is not allowed"),
    ("select-nothing", lambda: __import__("vae_utils.reproduce", fromlist=["select"]).select([]), ValueError, r"only=\[\] selects no notebook"),
    ("lower_bound-int-pixels", _est("lower_bound", lambda: (_tiny_model(), torch.ones(3, 6, dtype=torch.long))), TypeError,
     r"X has dtype torch.int64; expected a floating tensor"),
    ("sgvb_a-nan", _est("sgvb_a", lambda: (_tiny_model(), _nan_x())), ValueError, r"x has 1 NaN or infinite values \(rows \[1\]\)"),
    ("get_budget-unknown", lambda: budgets.get_budget("huge"), ValueError, r"budget='huge' is not a budget"),
    ("evaluate_checkpoint-seed", lambda: __import__("vae_utils.likelihood_studies", fromlist=["x"]).evaluate_checkpoint(
        "nope", seed=2**70), ValueError, r"seed=\d+ is not allowed"),
    ("estimator-list", _cfg(estimator=["B"]), ValueError, r"unknown estimator \['B'\]"),
    ("sgvb_b-float64-pixels", _est("sgvb_b", lambda: (_tiny_model(), torch.rand(3, 6, dtype=torch.float64))), TypeError,
     r"x has dtype torch.float64; the model's parameters are torch.float32"),
    ("sgvb_a-generator-text", lambda: __import__("vae_utils.estimators", fromlist=["x"]).sgvb_a(_tiny_model(), torch.rand(3, 6), 1, "abc"),
     TypeError, r"generator='abc' is not allowed: expected None or a torch.Generator"),
    ("sgvb_b-no-model", _est("sgvb_b", lambda: (None, torch.rand(3, 6))), TypeError, r"model=NoneType is not allowed: expected a model with encode\(\)"),
    ("importance-no-model", _ml("importance_log_likelihood", lambda: (None, torch.rand(3, 6))), TypeError, r"model=NoneType is not allowed"),
    ("reparameterize-negative-L", _est("reparameterize", lambda: (torch.zeros(3, 2), torch.zeros(3, 2), -1)), ValueError, r"n_samples=-1 is not allowed"),
    ("monte_carlo_kl-one-sample", _est("monte_carlo_kl", lambda: (torch.zeros(3, 2), torch.zeros(3, 2), 1)), ValueError,
     r"n_samples=1 is not allowed: expected an integer >= 2"),
    ("gaussian_kl-lists", _est("gaussian_kl", lambda: ([0.0], [0.0])), TypeError, r"expected tensors: mu is list"),
    ("sgvb_b-pixels-above-one", _est("sgvb_b", lambda: (_tiny_model(), torch.rand(3, 6) * 5)), ValueError, r"x holds values outside \[0, 1\]"),
    ("minibatch-size-zero", _est("minibatch_estimate", lambda: (_tiny_model(), torch.rand(3, 6), 0)), ValueError, r"batch_size=0 is not allowed"),
    ("fit_kde-one-row", lambda: __import__("vae_utils.marginal_likelihood", fromlist=["x"]).fit_kde(__import__("numpy").zeros((1, 2))),
     ValueError, r"samples of shape \(1, 2\) are not allowed"),
    ("error_stats-empty", lambda: __import__("vae_utils.likelihood_studies", fromlist=["x"]).error_stats(__import__("numpy").array([])),
     ValueError, r"errors of shape \(0,\) are not allowed"),
    ("accuracy_settings-text", lambda: __import__("vae_utils.likelihood_studies", fromlist=["x"]).accuracy_settings("smoke"),
     TypeError, r"budget='smoke' is not allowed: expected a budgets.Budget"),
    ("ais_calibration-one-string", lambda: __import__("vae_utils.likelihood_studies", fromlist=["x"]).ais_calibration("/x.pt"),
     TypeError, r"checkpoints='/x.pt' is not allowed: expected a non-empty list"),
    ("dimension_study-zero-latents", lambda: __import__("vae_utils.likelihood_studies", fromlist=["x"]).dimension_study(z_dims=(0,)),
     ValueError, r"z_dims=\(0,\) is not allowed"),
    ("lower_bound-seed-negative", lambda: __import__("vae_utils.estimators", fromlist=["x"]).lower_bound(_tiny_model(), torch.rand(3, 6), seed=-1),
     ValueError, r"seed=-1 is not allowed"),
    ("load_dataset-split-none", lambda: D.load_dataset("mnist", None), ValueError, r"split=None is not allowed"),
    ("fetch_data-one-string", lambda: D.fetch_data("mnist"), TypeError, r"names='mnist' is not allowed: expected a list"),
    ("binarize_batch-integers", lambda: D.binarize_batch(torch.ones(2, 3, dtype=torch.long)), ValueError, r"expected a floating tensor of grey levels"),
    ("sweep_runs-not-configs", lambda: __import__("vae_utils.sweep", fromlist=["x"]).sweep_runs([None]), TypeError,
     r"configs=\[None\] is not allowed: expected a list of TrainConfig"),
    ("sweep-workers-negative", lambda: __import__("vae_utils.sweep", fromlist=["x"]).sweep([], workers=-1), ValueError,
     r"workers=-1 is not allowed"),
    ("ensure_run-none", lambda: __import__("vae_utils.sweep", fromlist=["x"]).ensure_run(None), TypeError, r"cfg=None is not allowed"),
    ("checkpoint_path-text", lambda: records.checkpoint_path("abc"), TypeError, r"cfg='abc' is not allowed: expected a TrainConfig"),
    ("save_once-missing-key", lambda: records.save_once("/tmp/never.json", {"a": 1}, ("zz",), "x"), ValueError,
     r"identity_keys \['zz'\] are not in the record"),
    ("figure3_job-ll_n-negative", lambda: __import__("vae_utils.experiments", fromlist=["x"]).figure3_job(
        _cfg(name="f", results_dir="/tmp/never")(), [100], ll_n=-5, is_samples=1), ValueError, r"ll_n=-5 is not allowed"),
    ("decoder_images-n-zero", lambda: __import__("vae_utils.experiments", fromlist=["x"]).decoder_images_job(
        _cfg(name="f", results_dir="/tmp/never")(), "samples", 0), ValueError, r"n=0 is not allowed"),
    ("data_dir-nul", lambda: D.resolve_data_dir("/tmp/\0x"), TypeError, r"data_dir='/tmp/\\x00x' is not allowed"),
]


@pytest.mark.parametrize("name, call, kind, line", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_input_in_one_line(name, call, kind, line, data_dir):
    with pytest.raises(kind) as e:
        call()
    assert "\n" not in str(e.value) and re.search(line, str(e.value)), str(e.value)


# --- class 3: notebook parameters (what papermill's -p injects) --------------------------------

NOTEBOOK_CASES = [
    ("seed-20-digits", {"seed": 10**20}, ValueError, r"parameter seed=100000000000000000000 is not allowed; expected an integer in 0..2\^63-1"),
    ("seed-negative", {"seed": -1}, ValueError, r"parameter seed=-1 is not allowed"),
    ("seed-as-text", {"seed": "0"}, TypeError, r"parameter seed='0' has type str; expected int"),
    ("budget-unknown", {"budget": "huge"}, ValueError, r"parameter budget='huge' is not allowed; expected one of smoke"),
    ("workers-negative", {"workers": -1}, ValueError, r"parameter workers=-1 is not allowed"),
    ("allow_training-text", {"allow_training": "no"}, TypeError, r"parameter allow_training='no' has type str; expected bool"),
    ("ratio-infinite", {"ratio": float("inf")}, TypeError, r"parameter ratio=inf has type float \(not finite\); expected float"),
    ("declared-without-value", {"workers": None}, ValueError, r"parameter 'workers' is declared without a value"),
    ("output_dir-blank", {"output_dir": "  "}, ValueError, r"parameter output_dir='  ' is not allowed"),
    ("output_dir-a-file", {"output_dir": "FILE"}, ValueError, r"results folder .*file/results cannot be written: .*Not a directory"),
]


@pytest.mark.parametrize("name, values, kind, line", NOTEBOOK_CASES, ids=[c[0] for c in NOTEBOOK_CASES])
def test_notebook_parameters_refused_in_one_line(name, values, kind, line, tmp_path):
    ns = {"__annotations__": {"budget": str, "output_dir": str, "seed": int, "workers": int, "allow_training": bool,
                              "ratio": float},
          "budget": "smoke", "output_dir": str(tmp_path / "out"), "seed": 0, "workers": 0, "allow_training": True,
          "ratio": 0.5, **values}
    if ns["output_dir"] == "FILE":
        (tmp_path / "file").write_text("x")
        ns["output_dir"] = str(tmp_path / "file")
    if ns["workers"] is None:
        del ns["workers"]
    before = fingerprint(tmp_path)
    with pytest.raises(kind) as e:
        budgets.check_parameters(ns)
    assert "\n" not in str(e.value) and re.search(line, str(e.value)), str(e.value)
    assert not (tmp_path / "out").exists(), "nothing is made for refused parameters"
    assert_nothing_lost(tmp_path, before)


def test_papermill_seed_of_20_digits_is_refused_by_the_notebook(tmp_path):
    """papermill -p seed 99999999999999999999 injects an int that the parameter check refuses."""
    import papermill as pm

    from vae_utils.budgets import NOTEBOOKS_DIR

    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(NOTEBOOKS_DIR / "01_the_variational_bound.ipynb"), str(out),
                            parameters={"seed": 99999999999999999999, "budget": "smoke", "output_dir": str(tmp_path)},
                            kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS_DIR))
    assert e.value.ename == "ValueError" and "seed=99999999999999999999 is not allowed" in e.value.evalue
    assert not (tmp_path / "results" / "derivation_checks.json").exists()


# --- class 4: damaged, wrong and existing files ---------------------------------------------

def _copy_data(ws, damage=None):
    """A data folder for the case: MNIST copied, the test images damaged by ``damage(bytes)``."""
    src = D.resolve_data_dir()
    dst = ws / "data"
    shutil.copytree(src / "mnist", dst / "mnist")
    for p in (dst / "mnist").iterdir():
        p.chmod(0o644)
    if damage:
        f = dst / "mnist" / "t10k-images-idx3-ubyte.gz"
        f.write_bytes(damage(f.read_bytes()))
    return dst


def _truncate(raw):
    return raw[: len(raw) // 2]


def _flip(raw):
    b = bytearray(raw)
    for i in range(2000, 2100):
        b[i] ^= 0xFF
    return bytes(b)


def _ckpt(ws, obj):
    torch.save(obj, ws / "ckpt" / "tiny.pt")


def _edit_record(ws, **fields):
    rec = json.loads((ws / "results" / "tiny.json").read_text())
    rec.update(fields)
    (ws / "results" / "tiny.json").write_text(json.dumps(rec))


def _edit_config(ws, **fields):
    rec = json.loads((ws / "results" / "tiny.json").read_text())
    rec["config"].update(fields)
    (ws / "results" / "tiny.json").write_text(json.dumps(rec))


def _edit_ckpt(ws, change):
    ck = torch.load(ws / "ckpt" / "tiny.pt", weights_only=True)
    change(ck)
    _ckpt(ws, ck)


def _ckpt_without_lr(ws, mp):
    ck = torch.load(ws / "ckpt" / "tiny.pt", weights_only=True)
    del ck["lr"]
    _ckpt(ws, ck)


def _ckpt_behind(ws, mp):
    ck = torch.load(ws / "ckpt" / "tiny.pt", weights_only=True)
    ck["curve"] = ck["curve"][:1]
    _ckpt(ws, ck)


def _ckpt_of_other_config(ws, mp):
    ck = torch.load(ws / "ckpt" / "tiny.pt", weights_only=True)
    ck["config"]["n_z"] = 3
    _ckpt(ws, ck)


def _other_config_record(ws, mp):
    rec = json.loads((ws / "results" / "tiny.json").read_text())
    rec["config"]["n_hidden"] = 21
    (ws / "results" / "tiny.json").write_text(json.dumps(rec))


TRAIN_TINY = ["train", *TINY, "--name", "tiny", "--results-dir", "{r}", "--checkpoint-dir", "{c}"]
TRAIN_TINY_NO_CKPT = ["train", *TINY, "--name", "tiny", "--results-dir", "{r}", "--checkpoint-dir", "{ws}/none"]
FILE_CASES = [
    # the issue's
    Case("gzip-truncated", [*TRAIN_TINY[:-4], "--results-dir", "{ws}/r2", "--checkpoint-dir", "{ws}/c2",
                            "--samples", "1e4", "--data-dir", "{ws}/data"], 2,
         r"t10k-images-idx3-ubyte.gz is damaged: not a valid gzip \(EOFError.*fetch-data",
         setup=lambda ws, mp: _copy_data(ws, _truncate)),
    Case("gzip-flipped", [*TRAIN_TINY[:-4], "--results-dir", "{ws}/r2", "--checkpoint-dir", "{ws}/c2",
                          "--samples", "1e4", "--data-dir", "{ws}/data"], 2,
         r"is damaged: not a valid gzip \((error|BadGzipFile)", setup=lambda ws, mp: _copy_data(ws, _flip)),
    Case("fetch-data-replaces-damaged", ["fetch-data", "--dataset", "mnist", "--data-dir", "{ws}/data",
                                         "--mirror", D.resolve_data_dir().joinpath("mnist").as_uri() + "/"], 0, "",
         setup=lambda ws, mp: _copy_data(ws, _truncate), may_change=("data/mnist/t10k-images-idx3-ubyte.gz",),
         check=lambda ws, out: "replacing mnist/t10k-images-idx3-ubyte" in out and D.read_verified(
             "mnist/t10k-images-idx3-ubyte", ws / "data") is not None),
    Case("checkpoint-empty", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "{ws}/l.json"], 2,
         r"checkpoint .*tiny.pt is damaged or truncated \(.*an empty file\)",
         setup=lambda ws, mp: (ws / "ckpt" / "tiny.pt").write_bytes(b"")),
    Case("checkpoint-missing-key", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "{ws}/l.json"], 2,
         r"is not a vae_utils checkpoint \(it lacks \['lr'\]", setup=_ckpt_without_lr),
    Case("checkpoint-given-a-results-file", ["likelihood", "--checkpoint", "{r}/tiny.json", "--out", "{ws}/l.json"], 2,
         r"tiny.json is a JSON record, not a checkpoint"),
    Case("likelihood-out-is-a-folder", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "{r}"], 2,
         r"results is a folder where log p\(x\) estimates of run 'tiny' is to be written"),
    Case("train-overwrites-finished-shorter", [*TRAIN_TINY_NO_CKPT, "--samples", "1e4"], 0, "",
         check=lambda ws, out: "reusing the finished record" in out),
    Case("train-extends-without-checkpoint", [*TRAIN_TINY_NO_CKPT, "--samples", "1e5"], 2,
         r"records run tiny \(finished, 20,000 samples\); continuing it to 100,000 needs its checkpoint .* missing"),
    Case("same-name-other-config", ["train", "--nz", "3", *TINY[2:], "--name", "tiny", "--results-dir", "{r}",
                                    "--checkpoint-dir", "{ws}/c3", "--samples", "1e4"], 2,
         r"tiny.json already holds the results of run 'tiny' of another computation \(n_z: recorded 2, now 3\)"),
    Case("same-name-without-weight-prior", ["train", *TINY, "--weight-prior", "off", "--name", "tiny", "--results-dir", "{r}",
                                            "--checkpoint-dir", "{ws}/c3", "--samples", "1e4"], 2,
         r"tiny.json already holds the results of run 'tiny' of another computation \(weight_prior: recorded True, now False\)"),
    Case("results-damaged", [*TRAIN_TINY, "--samples", "1e4"], 2, r"results file .*tiny.json is damaged",
         setup=_write("results/tiny.json", '{"name": "tiny", "cur')),
    Case("verify-verdict-of-other-code", ["verify", "{r}/tiny.json", "--samples", "1e4"], 2,
         r"tiny_verify.json already holds a verify verdict on tiny of another computation \(code: .*--out-dir"),
    # ours
    Case("results-a-list", [*TRAIN_TINY, "--samples", "1e4"], 2, r"tiny.json is not the results of run 'tiny': it holds a JSON list",
         setup=_write("results/tiny.json", "[]")),
    Case("checkpoint-of-other-config", [*TRAIN_TINY, "--samples", "4e4"], 2, r"checkpoint .*tiny.pt belongs to a different run",
         setup=_ckpt_of_other_config),
    Case("checkpoint-behind-record", [*TRAIN_TINY, "--samples", "4e4"], 2, r"checkpoint .*tiny.pt is behind the record",
         setup=_ckpt_behind),
    Case("record-of-other-config", [*TRAIN_TINY, "--samples", "4e4"], 2, r"of another computation \(n_hidden: recorded 21, now 20\)",
         setup=_other_config_record),
    Case("checkpoint-random-bytes", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "{ws}/l.json"], 2,
         r"is damaged or truncated", setup=lambda ws, mp: (ws / "ckpt" / "tiny.pt").write_bytes(os.urandom(999))),
    Case("checkpoint-is-a-folder", ["likelihood", "--checkpoint", "{r}"], 2, r"checkpoint .*results is a folder"),
    Case("likelihood-record-other-settings", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--n", "5", "--is-samples", "10",
                                              "--out", "{r}/tiny_likelihood.json"], 2,
         r"tiny_likelihood.json already holds log p\(x\) estimates of run 'tiny' of another computation \(n: recorded 4, now 5\)"),
    Case("likelihood-record-same-settings", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--n", "4", "--is-samples", "10",
                                             "--out", "{r}/tiny_likelihood.json"], 0, "",
         check=lambda ws, out: "reused, nothing computed" in out),
    Case("benchmark-over-a-record", ["benchmark", "--only", "evaluation", "--out", "{r}/tiny_likelihood.json"], 2,
         r"tiny_likelihood.json is not a benchmark record: it lacks 'settings', 'results'"),
    Case("record-finished-not-a-bool", [*TRAIN_TINY, "--samples", "1e4"], 2, r"tiny.json is not a training results file: its finished is 'no', not a bool",
         setup=lambda ws, mp: _edit_record(ws, finished="no")),
    Case("record-samples-seen-text", [*TRAIN_TINY, "--samples", "1e4"], 2, r"its samples_seen is 'x', not a int",
         setup=lambda ws, mp: _edit_record(ws, samples_seen="x")),
    Case("record-curve-point-text", [*TRAIN_TINY, "--samples", "1e4"], 2, r"its curve is empty or malformed",
         setup=lambda ws, mp: _edit_record(ws, curve=[{"samples": "x", "train": 1, "test": 1}])),
    Case("record-nested-too-deep", ["verify", "{ws}/deep.json"], 2, r"results file .*deep.json is damaged",
         setup=_write("deep.json", "[" * 200_000)),
    Case("verify-config-not-a-run", ["verify", "{r}/tiny.json", "--samples", "1e4", "--out-dir", "{ws}/v"], 2,
         r"tiny.json: its config is not a valid run \(n_z=-1 is not allowed", setup=lambda ws, mp: _edit_config(ws, n_z=-1)),
    Case("report-config-not-a-run", ["report", "--results-dir", "{r}", "--figures-dir", "{ws}/fig"], 2,
         r"tiny.json: its config is not a valid run \(unknown dataset 'cifar'", setup=lambda ws, mp: _edit_config(ws, dataset="cifar")),
    Case("paper-csv-malformed", ["report", "--results-dir", "{r}", "--figures-dir", "{ws}/fig", "--reference-dir", "{ws}/ref"], 2,
         r"paper curves file .*is malformed \(line 2\): ValueError",
         setup=lambda ws, mp: (ws / "ref").mkdir() or (ws / "ref" / "aevb_paper_figures_digitized.csv").write_text(
             "figure,dataset,n_z,method,split,n_train,training_samples,value\nfigure2,mnist,3,aevb,train,,abc,1\n")),
    Case("checkpoint-lr-text", [*TRAIN_TINY, "--samples", "4e4"], 2, r"checkpoint .*tiny.pt holds a malformed lr",
         setup=lambda ws, mp: _edit_ckpt(ws, lambda ck: ck.update(lr="abc"))),
    Case("checkpoint-nan-weights", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "{ws}/l.json"], 2,
         r"tiny.pt holds non-finite \(NaN or infinite\) weights",
         setup=lambda ws, mp: _edit_ckpt(ws, lambda ck: next(iter(ck["run"]["model"].values())).fill_(float("nan")))),
    Case("benchmark-out-is-a-folder", ["benchmark", "--only", "evaluation", "--out", "{r}"], 2, r"results is a folder where a benchmark record"),
    Case("record-is-a-fifo", ["verify", "{ws}/fifo.json"], 2, r"record .*fifo.json is not a regular file",
         setup=lambda ws, mp: os.mkfifo(ws / "fifo.json")),
    Case("out-is-a-device", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "/dev/null"], 2,
         r"/dev/null is not a regular file"),
    Case("record-with-a-huge-integer", ["verify", "{ws}/big.json"], 2, r"results file .*big.json is damaged or not a record",
         setup=_write("big.json", '{"a": 1' + "1" * 5000 + "}")),
    Case("record-curve-nan", ["verify", "{r}/tiny.json", "--out-dir", "{ws}/v"], 2, r"finite numeric train and test",
         setup=lambda ws, mp: _edit_record(ws, curve=[{"samples": 10000, "train": float("nan"), "test": 1.0}])),
    Case("benchmark-resume-damaged", ["benchmark", "--only", "evaluation", "--resume", "--out", "{ws}/b.json"], 2,
         r"benchmark record .*b.json is damaged", setup=_write("b.json", '{"settings": {}, "results": []}')),
    Case("data-dir-symlink-loop", ["train", *TINY, "--samples", "1e4", "--name", "z", "--results-dir", "{ws}/r2",
                                   "--checkpoint-dir", "{ws}/c2", "--data-dir", "{ws}/loopA"], 2,
         r"data folder .*loopA cannot be resolved",
         setup=lambda ws, mp: (os.symlink(ws / "loopB", ws / "loopA"), os.symlink(ws / "loopA", ws / "loopB"))),
    Case("ais-calibration-same-run-twice", ["ais-calibration", "--checkpoints", "{c}/tiny.pt,{c}/tiny.pt", "--out", "{ws}/a.json"], 2,
         r"name one run twice"),
    Case("fetch-mirror-not-a-url", ["fetch-data", "--mirror", "not a url"], 2, r"--mirror: 'not a url' is not allowed: expected a base URL"),
    Case("likelihood-quadrature-beyond-n", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--n", "10", "--quadrature", "50",
                                            "--out", "{ws}/l.json"], 2, r"quadrature_n=50 is not allowed: expected at most n=10"),
    Case("verify-with-out-dir", ["verify", "{r}/tiny.json", "--samples", "1e4", "--out-dir", "{ws}/v"], 0, "",
         check=lambda ws, out: json.loads((ws / "v" / "tiny_verify.json").read_text())["verdict"] == "identical"),
    Case("report-with-a-list-file", ["report", "--results-dir", "{ws}/bad", "--figures-dir", "{ws}/fig"], 0, "",
         setup=lambda ws, mp: (ws / "bad").mkdir() or (ws / "bad" / "r.json").write_text("[]")),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id)
def test_files_damaged_wrong_or_finished_are_never_lost(case, ws, capsys, monkeypatch):
    run_case(case, ws, capsys, monkeypatch)


# --- class 5: faults of the system ------------------------------------------------------------

def _disk_full_after(n_bytes):
    def write(f, payload):
        f.write(payload[:n_bytes])
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def _read_only(ws, mp, folder):
    """A folder nobody may write: by its mode, or (as root, whom modes do not stop) by the system call."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real = records.tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and pathlib.Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)
    mp.setattr(records.tempfile, "mkstemp", mkstemp)


def _unreadable(ws, mp):
    data = _copy_data(ws)
    target = data / "mnist" / "t10k-images-idx3-ubyte.gz"
    if os.geteuid() != 0:
        target.chmod(0)
        return
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if self.resolve() == target.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)
    mp.setattr(pathlib.Path, "read_bytes", read_bytes)


def _raise_in_load_data(exc):
    def setup(ws, mp):
        from vae_utils import train as T

        def boom(cfg):
            raise exc
        mp.setattr(T, "load_data", boom)
    return setup


NEW_RUN = ["train", *TINY, "--samples", "2e4", "--name", "fresh", "--results-dir", "{r}", "--checkpoint-dir", "{c}"]
FAULT_CASES = [
    # the issue's
    Case("disk-full", NEW_RUN, 1, r"could not write .*fresh.pt: No space left on device \(free some space",
         setup=lambda ws, mp: mp.setattr(records, "_write_all", _disk_full_after(1000))),
    Case("read-only-results-folder", [*NEW_RUN[:-4], "--results-dir", "{ws}/ro", "--checkpoint-dir", "{c}"], 2,
         r"results folder .*ro cannot be written: .*Permission denied.*; nothing was computed",
         setup=lambda ws, mp: _read_only(ws, mp, ws / "ro")),
    Case("file-where-a-folder-is-wanted", [*NEW_RUN[:-4], "--results-dir", "{r}/tiny.json/sub", "--checkpoint-dir", "{c}"], 2,
         r"results folder .*tiny.json/sub cannot be written: .*(Not a directory|File exists)"),
    Case("folder-where-a-file-is-wanted", ["likelihood", "--checkpoint", "{c}/tiny.pt", "--out", "{c}"], 2,
         r"ckpt is a folder where log p\(x\) estimates"),
    Case("name-too-long-for-the-file-system", [*NEW_RUN[:-4], "--results-dir", "{ws}/" + "d" * 300, "--checkpoint-dir", "{c}"], 2,
         r"d{300}.*: File name too long \(a name is too long for the file system"),
    Case("unreadable-data-file", [*NEW_RUN, "--data-dir", "{ws}/data"], 2, r"t10k-images-idx3-ubyte.gz: Permission denied",
         setup=_unreadable),
    Case("ctrl-c-before-the-first-checkpoint", NEW_RUN, 130, r"interrupted \(Ctrl-C\) at once; .* from its last checkpoint",
         setup=_raise_in_load_data(KeyboardInterrupt())),
    # ours
    Case("disk-full-on-the-results-file", NEW_RUN, 1, r"could not write .*fresh.json: No space left on device",
         setup=lambda ws, mp: mp.setattr(records, "_write_all", _only_json(_disk_full_after(10)))),
    Case("file-too-large", NEW_RUN, 1, r"could not write .*: File too large",
         setup=lambda ws, mp: mp.setattr(records, "_write_all", _raises(errno.EFBIG, "File too large"))),
    Case("io-error", NEW_RUN, 1, r"could not write .*: Input/output error \(input/output error: the disk may be failing\)",
         setup=lambda ws, mp: mp.setattr(records, "_write_all", _raises(errno.EIO, "Input/output error"))),
    Case("read-only-checkpoint-folder", [*NEW_RUN[:-2], "--checkpoint-dir", "{ws}/ro"], 2,
         r"checkpoint folder .*ro cannot be written", setup=lambda ws, mp: _read_only(ws, mp, ws / "ro")),
    Case("unexpected-error-is-one-line", NEW_RUN, 1, r"internal error: ZeroDivisionError: boom \(a bug",
         setup=_raise_in_load_data(ZeroDivisionError("boom"))),
    Case("run-locked", [*TRAIN_TINY, "--samples", "4e4"], 2, r"run tiny is already being trained by pid",
         setup=lambda ws, mp: _hold_lock(ws / "ckpt" / "tiny.pt")),
]


def _raises(code, text):
    def write(f, payload):
        raise OSError(code, text)
    return write


def _only_json(fault):
    def write(f, payload):
        if payload.startswith(b"{"):
            return fault(f, payload)
        f.write(payload)
    return write


_held = []


def _hold_lock(ckpt):
    """Another process trains the run: a child holds its lock for the length of the case."""
    lock = str(ckpt) + ".lock"
    p = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
                          "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid 1 on elsewhere'); print('held', flush=True);"
                          "time.sleep(60)", lock], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    _held.append(p)


@pytest.mark.parametrize("case", FAULT_CASES, ids=lambda c: c.id)
def test_faults_are_one_line_and_lose_nothing(case, ws, capsys, monkeypatch):
    try:
        run_case(case, ws, capsys, monkeypatch)
    finally:
        while _held:
            _held.pop().kill()


def _train_cmd(d, samples="3e5"):
    return [sys.executable, "-m", "vae_utils", "train", "--nz", "5", "--hidden", "50", "--n-train", "2000", "--samples",
            samples, "--lr", "0.02", "--eval-n", "500", "--name", "k", "--no-progress",
            "--results-dir", str(d / "results"), "--checkpoint-dir", str(d / "ckpt")]


@pytest.mark.parametrize("sig, code, words", [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, " (SIGTERM)")],
                         ids=["ctrl-c", "sigterm"])
def test_a_signal_writes_a_checkpoint_exits_128_plus_it_and_resumes_bit_for_bit(sig, code, words, tmp_path, data_dir):
    """Ctrl-C in a terminal, or SIGTERM (a `kill`, or a session ending a nohup job, which ignores
    Ctrl-C): the run stops after the step, writes its checkpoint, says so in one line and exits
    128 + the signal; rerun, it ends where the uninterrupted run ends, bit for bit."""
    from conftest import signal_after_first_checkpoint
    from test_train import _assert_same_state, _final_state
    from vae_utils import train as T

    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(_train_cmd(tmp_path / "a"), check=True, env=env, capture_output=True)
    # a shell's background job (nohup, `&`) inherits SIGINT ignored, and a run honours that: give the Ctrl-C run
    # Ctrl-C; the SIGTERM run keeps SIGINT ignored, as under nohup
    interactive = signal.SIG_DFL if sig == signal.SIGINT else signal.SIG_IGN
    proc = subprocess.Popen(_train_cmd(tmp_path / "b"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, interactive))
    ckpt = tmp_path / "b" / "ckpt" / "k.pt"
    signal_after_first_checkpoint(proc, ckpt, sig, settle=0.3)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == code, err
    assert len(lines) == 1 and re.search(rf"k: interrupted{re.escape(words)} at ([\d,]+) samples; checkpoint .*k.pt "
                                         r"written: rerun", lines[0]), lines
    at = int(re.search(r"at ([\d,]+) samples", lines[0]).group(1).replace(",", ""))
    assert T.load_checkpoint(ckpt)["run"]["samples_seen"] == at and 0 < at < 300_000
    assert not [p for p in (tmp_path / "b").rglob("*") if TEMP_NAMES.search(p.name)]
    subprocess.run(_train_cmd(tmp_path / "b"), check=True, env=env, capture_output=True)
    _assert_same_state(_final_state(tmp_path / "a", "k")[0], _final_state(tmp_path / "b", "k")[0])


def test_a_real_file_size_limit_fails_the_run_in_one_line_and_leaves_no_partial_file(tmp_path, data_dir):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), as a full disk refuses them."""
    import resource

    d = tmp_path
    (d / "results").mkdir()
    (d / "results" / "k.json").write_text("{}")  # not ours, but it must survive too
    keep = fingerprint(d)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    proc = subprocess.run(_train_cmd(d, "2e4"), preexec_fn=limit, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # the results file of the name holds something else: refused before any work
    assert proc.returncode == 2 and len(lines) == 1 and "is not the results of run 'k'" in lines[0]
    (d / "results" / "k.json").unlink()
    keep = fingerprint(d)
    proc = subprocess.run(_train_cmd(d, "2e4"), preexec_fn=limit, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert re.search(r"could not write .*k.pt: File too large", lines[0]), lines[0]
    assert_nothing_lost(d, keep)
    assert not (d / "ckpt" / "k.pt").exists()


# --- the mechanism itself ---------------------------------------------------------------------


# --- every writer of a long computation's output: a record of another computation is kept ---------

def _other_settings(path, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": {"other": True}, "config": {}, "points": [], "models": [], **extra}))


def _writer_figure3(tmp_path):
    from conftest import small_config
    from vae_utils.experiments import figure3_job, likelihood_curve_path

    cfg = small_config(tmp_path)
    _other_settings(likelihood_curve_path(cfg))
    return lambda: figure3_job(cfg, [10_000], ll_n=4, is_samples=10)


def _writer_decoder_images(tmp_path):
    import numpy as np

    from conftest import small_config
    from vae_utils.experiments import decoder_images_job

    cfg = small_config(tmp_path)
    path = tmp_path / "results" / f"{cfg.name}_samples.npz"
    path.parent.mkdir(parents=True)
    np.savez_compressed(path, images=np.zeros((4, 28, 28), np.uint8),
                        meta=json.dumps({"n": 4, "samples_seen": 123, "config": {}}))
    return lambda: decoder_images_job(cfg, "samples", 9)


def _writer_accuracy(tmp_path):
    from conftest import small_config
    from vae_utils.budgets import BUDGETS
    from vae_utils.likelihood_studies import accuracy_settings, estimator_accuracy_job

    cfg = small_config(tmp_path)
    _other_settings(tmp_path / "results" / f"{cfg.name}_estimator_accuracy.json")
    return lambda: estimator_accuracy_job(cfg, accuracy_settings(BUDGETS["smoke"]))


def _writer_dimension_study(tmp_path):
    from vae_utils.budgets import BUDGETS
    from vae_utils.likelihood_studies import accuracy_settings, dimension_study_job

    _other_settings(tmp_path / "estimator_accuracy_dimensions.json")
    return lambda: dimension_study_job(accuracy_settings(BUDGETS["smoke"]), tmp_path)


def _writer_ais_calibration(tmp_path):
    from vae_utils.likelihood_studies import ais_calibration

    _other_settings(tmp_path / "ais.json", seed=0)
    return lambda: ais_calibration(["a", "b"], n=3, out=tmp_path / "ais.json")


def _writer_save_once(tmp_path):
    _other_settings(tmp_path / "derivation_checks.json", budget="quick", seed=0)
    return lambda: records.save_once(tmp_path / "derivation_checks.json", {"budget": "smoke", "seed": 0}, ("budget", "seed"),
                                     "the derivation checks")


def _writer_benchmark_resume(tmp_path):
    from vae_utils.benchmark import run_benchmark

    (tmp_path / "b.json").write_text(json.dumps({"settings": {"repeats": 9}, "results": {}}))
    return lambda: run_benchmark(only=["evaluation"], out=tmp_path / "b.json", resume=True)


@pytest.mark.parametrize("make", [_writer_figure3, _writer_decoder_images, _writer_accuracy, _writer_dimension_study,
                                  _writer_ais_calibration, _writer_save_once, _writer_benchmark_resume],
                         ids=lambda f: f.__name__[len("_writer_"):])
def test_every_writer_keeps_a_record_of_another_computation(make, tmp_path, data_dir):
    call = make(tmp_path)
    before = fingerprint(tmp_path)
    with pytest.raises(records.RecordExistsError) as e:
        call()
    assert "\n" not in str(e.value) and "of another computation" in str(e.value) and "it is kept" in str(e.value)
    assert_nothing_lost(tmp_path, before)


def test_ais_calibration_command_reuses_its_finished_record(ws, capsys):
    argv = ["ais-calibration", "--checkpoints", str(ws / "ckpt" / "tiny.pt"), "--n", "2", "--num-steps", "10",
            "--bdmc-n", "2", "--is-samples", "10", "--out", str(ws / "ais.json")]
    assert run_cli(argv, capsys)[0] == 0
    before = fingerprint(ws)
    code, lines, out = run_cli(argv, capsys)
    assert code == 0 and "reused, nothing computed" in out
    assert_nothing_lost(ws, before)
    code, lines, out = run_cli([*argv[:-4], "--is-samples", "11", "--out", str(ws / "ais.json")], capsys)
    assert code == 2 and len(lines) == 1 and "of another computation" in lines[0] and "--out another file" in lines[0]
    assert_nothing_lost(ws, before)
    # another model added to the record: the one calibrated before is kept as it was (its checkpoint may be gone)
    first = json.loads((ws / "ais.json").read_text())["models"]
    shutil.copy(ws / "ckpt" / "tiny.pt", ws / "ckpt" / "other.pt")
    (ws / "ckpt" / "tiny.pt").rename(ws / "ckpt" / "gone.pt")
    code, lines, out = run_cli(["ais-calibration", "--checkpoints", str(ws / "ckpt" / "other.pt"), *argv[3:]], capsys)
    models = json.loads((ws / "ais.json").read_text())["models"]
    assert code == 0 and "1 more recorded before, kept" in out
    assert models[:1] == first and [m["name"] for m in models] == ["tiny", "other"]
