"""Verification of recorded runs: the start of a run re-run with today's code, its curve
compared point by point with the record; its step-size trial re-run, each step's training value
compared with the record's ``lr_trials`` and the step chosen with its ``lr`` (``verify_trial``);
and a lost checkpoint regained the same way, the whole run re-run and checked before its state is
installed (``restore_checkpoint``).

    verdict = identical            every bit of every compared curve point
            | agrees within X      largest |difference| <= X = VERIFY_TOLERANCE[algorithm]
            | differs

X is ten times the largest difference that floating-point noise alone was measured to produce
(``measure_float_noise``: the same run at 1 and at 2 threads). A verdict is a record
(``<run>_verify.json``, a trial's ``<run>_trial_verify.json``) and follows ``records``: the one already there is reused when it came
from the same clean commit, and otherwise kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import torch

from . import checks
from .config import ALGORITHMS, MAX_THREADS, TrainConfig
from .device import kind_of
from .records import (Interrupted, RunFailed, check_output_file, checkpoint_path, differences, existing_record, provenance,
                      read_training_record, write_record)
from .records import results_path as record_path
from .train import (RunLock, load_checkpoint, recorded_gradient, recorded_results, rerun_trial, run_config_of,
                    save_checkpoint, sessions_of, train)


# Largest curve difference (nats per datapoint) that floating-point noise alone produces when a
# run is repeated with another reduction order, measured by ``measure_float_noise`` (each
# committed run re-run for 2e5 samples at 1 and at 2 threads; results/verify_float_noise.json):
# AEVB 2.7e-5 (MNIST; Frey Face identical), wake-sleep 0.036, MCEM 0.28. The tolerance is ten
# times that. Wake-sleep and MCEM amplify rounding: once one sampled dream pixel or one HMC
# accept decision flips, the trajectories part, so their curves drift by hundredths to tenths of
# a nat while remaining the same computation.
VERIFY_TOLERANCE = {"aevb": 3e-4, "wake_sleep": 0.4, "mcem": 3.0}


# What decides a CPU's rounding beyond the thread count (records.machine): another CPU model or
# vector capability takes other BLAS kernels (MKL dispatches by vendor and instruction set), and
# AEVB's first steps at a large step size, like wake-sleep and MCEM throughout, amplify rounding.
MACHINE_KEYS = ("cpu_model", "cpu_capability", "blas", "onednn", "torch")


def machine_difference(recorded: dict, rerun: dict) -> dict:
    """``{key: (recorded, rerun)}`` for each of ``MACHINE_KEYS`` that differs between two
    provenances; a key the record does not name (records from before it was kept) counts as
    differing, its recorded value None."""
    return {k: (recorded.get(k), rerun.get(k)) for k in MACHINE_KEYS if recorded.get(k) != rerun.get(k)}


def machine_hint(difference: dict) -> str:
    """One clause for a 'differs' verdict made on another machine than the record's."""
    if not difference:
        return ""
    k, (was, now) = next(iter(difference.items()))
    named = f"{k} {was or 'not recorded'} there, {now} here" + (f", and {len(difference) - 1} more" if len(difference) > 1 else "")
    return (f"; the record was made on another machine ({named}): its kernels round otherwise and the tolerance "
            f"holds on one machine, so re-run it on a machine like the record's before calling the code changed")


def points(n: int) -> str:
    """'1 point', '2 points': a count of curve points in a line."""
    return f"{n} point" + ("" if n == 1 else "s")


def compare_curves(recorded: list[dict], rerun: list[dict], tolerance: float) -> dict:
    """Verdict on two curves: 'identical' (every bit), 'agrees within <tol>' (largest difference
    within the floating-point tolerance) or 'differs'; with the largest difference."""
    old = {p["samples"]: p for p in recorded}
    pairs = [(old[p["samples"]], p) for p in rerun if p["samples"] in old]
    diffs = [abs(a[k] - b[k]) for a, b in pairs for k in ("train", "test") if a[k] is not None and b[k] is not None]
    largest = max(diffs, default=math.inf)
    if not pairs:
        verdict = "differs"
    elif all(a[k] == b[k] for a, b in pairs for k in ("train", "test")):
        verdict = "identical"
    elif largest <= tolerance:
        verdict = f"agrees within {tolerance:g}"
    else:
        verdict = "differs"
    return {"verdict": verdict, "largest_difference": largest, "points_compared": len(pairs), "tolerance": tolerance}


def rerun_config(recorded: dict, samples: int, data_dir, directory, threads: int = 1, path="the record",
                 name: str = "verify") -> TrainConfig:
    """The recorded run's config, to re-run its first ``samples`` in ``directory``; a record whose
    config is not a valid run is refused naming its file."""
    # the arithmetic that made it (records from before a by-hand step: autograd; train.recorded_gradient)
    gradient = recorded_gradient(recorded["algorithm"], recorded["config"].get("gradient"))
    # on the kind of device that made its start: another device draws other random numbers
    devices = recorded.get("devices") or [{"device": kind_of(recorded), "from_samples": 0}]
    device = devices[0]["device"]
    switch = next((d for d in devices[1:] if d["from_samples"] < samples), None)
    if switch is not None:
        raise ValueError(f"{path} went on from {device} to {switch['device']} at {switch['from_samples']:,} samples; "
                         f"verify re-runs a start on one device: pass --samples {switch['from_samples']} or fewer")
    if recorded.get("runs_in_batch", 1) > 1:
        raise ValueError(f"{path} was trained in one batched step with {recorded['runs_in_batch'] - 1} other runs "
                         f"(vmapped, rounded otherwise than a single run); verify re-runs single runs and cannot "
                         f"re-run it")
    if device == "cuda" and not torch.cuda.is_available():
        gpu = recorded["provenance"].get("gpu") or "a CUDA GPU"
        raise ValueError(f"{path} was made on {gpu}; verify re-runs a record on the kind of device that made it, and "
                         f"torch {torch.__version__} finds no CUDA GPU here: run verify on a GPU machine")
    return run_config_of(recorded, path, gradient=gradient, lr=recorded["lr"], samples=samples, name=name,
                         threads=threads, results_dir=str(directory), checkpoint_dir=str(directory), data_dir=data_dir,
                         device=device)


def _rerun(recorded: dict, samples: int, data_dir, threads: int = 1, path="the record") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = rerun_config(recorded, samples, data_dir, tmp, threads, path)
        try:
            return train(cfg, progress=False, log=lambda *a: None)
        except Interrupted as e:
            raise Interrupted(f"verify of {path} interrupted; its re-run was in a temporary folder, now removed, and "
                              f"no verdict was written: rerun the command to verify", signum=e.signum) from None


def verify_path(results_path, out_dir=None, kind: str = "verify") -> Path:
    """Where the verdict on ``results_path`` goes: ``<run>_<kind>.json`` (``_verify``, a trial's
    ``_trial_verify``) beside it, or in ``out_dir``."""
    results_path = Path(results_path)
    return (Path(out_dir) if out_dir else results_path.parent) / f"{results_path.stem}_{kind}.json"


def _existing_verdict(out: Path, wanted: dict, what: str, name: str, log, session: dict | None = None):
    """The ``what`` ('verify verdict', 'trial verdict') on run ``name`` already in ``out`` if it is
    of the same run and settings from this same clean commit, reused and said so (None if there is
    none, ``out`` then checked writable); one of other code or settings is kept and this one
    refused. ``session``: this process's provenance, taken here if not given."""
    session = session or provenance()
    same_code = lambda r: (isinstance(r.get("provenance"), dict) and not session["git_dirty"]  # noqa: E731
                           and not r["provenance"].get("git_dirty") and session["git_commit"] is not None
                           and r["provenance"].get("git_commit") == session["git_commit"])
    diff = lambda r: {**differences(r, wanted), **({} if same_code(r) else {"code": (  # noqa: E731
        (r.get("provenance") or {}).get("git_commit"), f"{session['git_commit']}{' (dirty)' * bool(session['git_dirty'])}")})}
    old = existing_record(out, f"a {what} on {name}", diff, "pass --out-dir to write this verdict elsewhere",
                          required=("verdict",))
    if old is not None:
        log(f"{name}: {what} of this commit already recorded in {out}: {old['verdict']} (reused)")
        return old
    check_output_file(out, "verify record")
    return None


def verify_run(results_path, samples: int = 200_000, data_dir=None, log=print, out_dir=None) -> dict:
    """Re-run the start of a recorded run with today's code and compare its curve.

    The recorded step size is used (the grid trials start from the same seed, so the
    trajectory is the same). The verdict is 'identical' when every curve point agrees to the
    last bit, 'agrees within X' when the largest difference is within ``VERIFY_TOLERANCE``
    (floating-point noise of another CPU, BLAS build or thread count), else 'differs'.

    The verdict is written to ``verify_path`` (``<run>_verify.json``). A verdict already there
    from the same clean commit on the same run and sample count is reused; one from other code
    or settings is kept, and this one refused before any work (pass ``out_dir``).
    """
    checks.at_least("samples", samples)
    results_path = Path(results_path)
    recorded = read_training_record(results_path, ALGORITHMS)
    out = verify_path(results_path, out_dir)
    wanted = {"run": recorded["name"], "samples": samples, "recorded_commit": recorded["provenance"].get("git_commit")}
    old = _existing_verdict(out, wanted, "verify verdict", recorded["name"], log)
    if old is not None:
        return old
    rerun_config(recorded, samples, data_dir, out.parent, path=results_path)  # a bad config refused before any work
    rerun = _rerun(recorded, samples, data_dir, path=results_path)
    cmp = compare_curves(recorded["curve"], rerun["curve"], VERIFY_TOLERANCE[recorded["algorithm"]])
    other = machine_difference(recorded["provenance"], rerun["provenance"])
    result = {**wanted, **cmp, "identical": cmp["verdict"] == "identical",
              "recorded_machine": {k: recorded["provenance"].get(k) for k in ("cpu_model", "blas", "onednn",
                                                                              "torch_threads", "processor")},
              "machine_difference": other,
              "comparison": [{"samples": p["samples"], "rerun": (p["train"], p["test"])} for p in rerun["curve"]],
              "provenance": rerun["provenance"]}
    write_record(out, result, f"a verify verdict on {recorded['name']}")
    log(f"{recorded['name']}: {cmp['points_compared']} curve points up to {samples:,} samples: {cmp['verdict']} "
        f"(largest difference {cmp['largest_difference']:.3g} nat) with the code at {rerun['provenance']['git_commit']}"
        + (machine_hint(other) if cmp["verdict"] == "differs" else ""))
    return result


def compare_trials(recorded: dict, rerun: dict, recorded_lr: float, rerun_lr: float, tolerance: float) -> dict:
    """Verdict on two step-size trials (``{step: training value or None}``): 'identical' (the same
    steps, every value to the bit, the same step chosen), 'agrees within <tol>' (the same steps
    and choice, values within the floating-point tolerance) or 'differs'; with the largest
    difference."""
    same_steps = set(recorded) == set(rerun) and all((recorded[k] is None) == (rerun[k] is None) for k in recorded)
    diffs = [abs(recorded[k] - rerun[k]) for k in recorded if recorded[k] is not None and rerun.get(k) is not None]
    largest = max(diffs, default=0.0 if same_steps else math.inf)
    if not same_steps or float(recorded_lr) != float(rerun_lr):
        verdict = "differs"
    elif all(recorded[k] == rerun[k] for k in recorded):
        verdict = "identical"
    elif largest <= tolerance:
        verdict = f"agrees within {tolerance:g}"
    else:
        verdict = "differs"
    return {"verdict": verdict, "largest_difference": largest, "steps_compared": len(diffs), "tolerance": tolerance,
            "chosen": {"recorded": recorded_lr, "rerun": rerun_lr}}


def check_has_trial(recorded: dict, path) -> None:
    """Refuse in one line a record trained at a given step size: it has no trial to verify."""
    if not isinstance(recorded.get("lr_trials"), dict) or not recorded["lr_trials"]:
        raise ValueError(f"{path} was trained at a given step size ({recorded['lr']}), without a step-size trial: "
                         f"there is no trial to verify")


def verify_trial(results_path, data_dir=None, log=print, out_dir=None) -> dict:
    """Re-run a record's step-size trial with today's code and compare it with the record.

    Each step of the grid trains from the run's seed for the trial's length (fixed by the run's
    identity: ``lr_trial_samples``, MCEM ``train.mcem_trial_length``) and is scored on the
    training images, as ``train.choose_lr`` did when the run began; the verdict compares every
    step's value with the record's ``lr_trials`` (``VERIFY_TOLERANCE`` as for curves) and the
    step chosen with its ``lr``. A record trained at a given step has no trial and is refused in
    one line. The verdict goes to ``<run>_trial_verify.json`` and is reused or kept as
    ``verify_run``'s is.
    """
    results_path = Path(results_path)
    recorded = read_training_record(results_path, ALGORITHMS)
    check_has_trial(recorded, results_path)
    out = verify_path(results_path, out_dir, "trial_verify")
    wanted = {"run": recorded["name"], "trial": True, "recorded_commit": recorded["provenance"].get("git_commit")}
    session = provenance()  # taken once, now: the code this process runs is the code at its start
    old = _existing_verdict(out, wanted, "trial verdict", recorded["name"], log, session)
    if old is not None:
        return old
    # the trial ran at the start of the run: on the device that began it (rerun_config refuses what it cannot)
    cfg = dataclasses.replace(rerun_config(recorded, 1, data_dir, out.parent, path=results_path, name="verify_trial"),
                              lr="auto")
    trials = []
    lr, scores = rerun_trial(cfg, log=trials.append)
    cmp = compare_trials(recorded["lr_trials"], scores, recorded["lr"], lr, VERIFY_TOLERANCE[recorded["algorithm"]])
    other = machine_difference(recorded["provenance"], session)
    result = {**wanted, **cmp, "identical": cmp["verdict"] == "identical",
              "comparison": {k: {"recorded": recorded["lr_trials"].get(k), "rerun": scores.get(k)}
                             for k in dict.fromkeys([*recorded["lr_trials"], *scores])},
              "trial_log": trials, "recorded_machine": {k: recorded["provenance"].get(k) for k in MACHINE_KEYS},
              "machine_difference": other, "provenance": session}
    write_record(out, result, f"a trial verdict on {recorded['name']}")
    log(f"{recorded['name']}: step-size trial ({len(scores)} steps) {cmp['verdict']} (largest difference "
        f"{cmp['largest_difference']:.3g} nat; chosen {recorded['lr']} recorded, {lr} now)"
        + (machine_hint(other) if cmp["verdict"] == "differs" else ""))
    return result


def measure_float_noise(results_path, samples: int = 200_000, data_dir=None) -> dict:
    """The same recorded run re-run at 1 and at 2 threads (another reduction order, as another
    CPU or BLAS build would give): the largest curve difference floating-point noise causes."""
    recorded = read_training_record(results_path, ALGORITHMS)
    one, two = (_rerun(recorded, samples, data_dir, threads, results_path) for threads in (1, 2))
    return {"run": recorded["name"], "algorithm": recorded["algorithm"], "samples": samples,
            **compare_curves(one["curve"], two["curve"], math.inf), "provenance": two["provenance"]}


class RestoreDiffers(RunFailed):
    """A re-run meant to regain a lost checkpoint did not arrive where its record says."""


def restore_checkpoint(cfg: TrainConfig, *, deadline: float | None = None, progress: bool = True,
                       log=print) -> Path | None:
    """Regain the lost checkpoint of a recorded run by training it again from the start.

    A record without its checkpoint (a fresh clone holds the records, not the ignored
    checkpoints) cannot be continued. Training is deterministic, so the same run re-run to the
    record's ``samples_seen`` on the kind of device that made it reaches the same state. The re-run
    trains in ``<checkpoint folder>/restore/`` (a ``deadline`` stops it with a checkpoint there and
    the next call goes on), its curve is compared with the record's point by point
    (``compare_curves``, ``VERIFY_TOLERANCE``), and only when they agree up to the record's last point
    is its state installed as ``cfg``'s checkpoint, with the record's curve, step size and trials
    and a session line saying how it was regained; the re-run's files are then removed. A re-run
    that differs raises ``RestoreDiffers`` in one line, and the record and the re-run are kept: each
    curve point is checked as the re-run reaches it (``train(on_point=...)``), so a re-run that parts
    from its record (on another machine, say) stops at that point rather than at the record's end.

    Returns the installed checkpoint's path, or None where nothing is to be restored (no record,
    a checkpoint already there, or a record already at or beyond ``cfg.samples``)."""
    ckpt_path, out = checkpoint_path(cfg), record_path(cfg)
    record = recorded_results(cfg)
    if record is None or ckpt_path.exists() or (record["finished"] and record["samples_seen"] >= cfg.samples):
        return None
    at = record["samples_seen"]
    # on the threads that made the record's start, whatever the run goes on with: another count sums otherwise
    side = rerun_config(record, at, cfg.data_dir, ckpt_path.parent / "restore", start_threads(record), out,
                        name=cfg.name)
    tolerance = VERIFY_TOLERANCE[record["algorithm"]]

    def refuse(how: str, cmp: dict, rerun_provenance: dict) -> RestoreDiffers:
        return RestoreDiffers(f"{cfg.name}: the re-run to {at:,} samples {how} the record {out} (largest "
                              f"difference {cmp['largest_difference']:.3g} nat over {points(cmp['points_compared'])}); "
                              f"no checkpoint was installed, and the record and the re-run "
                              f"{record_path(side)} are kept (remove the re-run's files to try again)"
                              + machine_hint(machine_difference(record["provenance"], rerun_provenance)))

    recorded_points = {p["samples"]: p for p in record["curve"]}

    def check_point(point: dict) -> None:
        # each point as it comes, so that a re-run that parts from its record stops there, not hours later at its end
        if point["samples"] in recorded_points:
            cmp = compare_curves([recorded_points[point["samples"]]], [point], tolerance)
            if cmp["verdict"] == "differs":
                raise refuse(f"differs at {point['samples']:,} samples from", cmp, provenance())

    so_far = recorded_results(side)  # a re-run stopped on its way (a deadline) goes on only if it still agrees
    if so_far is not None and (cmp := compare_curves(record["curve"], so_far["curve"], tolerance))["verdict"] == "differs":
        raise refuse(f"stopped on its way at {so_far['samples_seen']:,} and has parted from", cmp,
                     so_far["provenance"])
    log(f"{cfg.name}: its record {out} stands at {at:,} samples but its checkpoint {ckpt_path} is missing; re-running "
        f"it from the start in {ckpt_path.parent / 'restore'} to regain it (checked against the record as it goes)")
    rerun = train(side, progress=progress, log=log, deadline=deadline, on_point=check_point)
    cmp = compare_curves(record["curve"], rerun["curve"], tolerance)
    last = record["curve"][-1]["samples"] if record["curve"] else None
    if cmp["verdict"] == "differs" or last not in {p["samples"] for p in rerun["curve"]}:
        raise refuse("differs from" if cmp["verdict"] == "differs" else "does not reach the last point of", cmp,
                     rerun["provenance"])
    ckpt = load_checkpoint(checkpoint_path(side))
    # the record's run: its identity, step size, trials and curve; the state the re-run reached
    ckpt.update(config=cfg.identity(), lr=record["lr"], lr_trials=record["lr_trials"], curve=record["curve"])
    ckpt["run"]["train_time"] = record["train_time_s"]  # the run's own training time, not the re-run's as well
    ckpt["sessions"] = [*sessions_of(record, record), {"from_samples": at, "restored_by_rerun": {
                            **{k: cmp[k] for k in ("verdict", "largest_difference", "points_compared")},
                            "provenance": json.loads(json.dumps(rerun["provenance"], default=str))}}]  # plain values
    with RunLock(ckpt_path):
        if ckpt_path.exists():  # another process got here first: its checkpoint stands
            return ckpt_path
        save_checkpoint(ckpt_path, ckpt)
    for f in (checkpoint_path(side), record_path(side)):
        f.unlink(missing_ok=True)
    log(f"{cfg.name}: checkpoint regained at {at:,} samples ({cmp['verdict']} over {cmp['points_compared']} curve "
        f"points); the run goes on from it")
    return ckpt_path


def start_threads(record: dict) -> int:
    """The threads that trained a record's start (its first session's provenance; 1 for a record
    that does not say), at most this machine's cores. A regain (``restore_checkpoint``) re-runs on
    them, whatever threads the run then goes on with: another thread count sums its products in
    another order (``measure_float_noise``), which wake-sleep amplifies past the tolerance."""
    first = (record.get("sessions") or [{}])[0].get("provenance") or record.get("provenance") or {}
    return max(1, min(int(first.get("torch_threads", 1)), MAX_THREADS))


def regains_under_way(checkpoints, results) -> list[dict]:
    """Each regain stopped on its way (a deadline, Ctrl-C) in ``<checkpoints>/restore``: its run,
    how far its re-run has come (its last curve point), the record's count, and how its points
    compare with the record's so far (``compare_curves``, ``VERIFY_TOLERANCE``). A regain is hours
    of one core; this says, before the next piece goes on, whether it still agrees."""
    under_way = []
    for f in sorted(Path(checkpoints, "restore").glob("*.json")):
        if not Path(results, f.name).is_file():  # no record to regain any more: nothing will go on from it
            continue
        rerun, record = read_training_record(f, ALGORITHMS), read_training_record(Path(results, f.name), ALGORITHMS)
        under_way.append({"run": record["name"], "at": rerun["samples_seen"], "of": record["samples_seen"],
                          "rerun": str(f), **compare_curves(record["curve"], rerun["curve"],
                                                            VERIFY_TOLERANCE[record["algorithm"]])})
    return under_way


def regain_line(r: dict) -> str:
    """One line on a regain under way (``regains_under_way``)."""
    head = f"regaining {r['run']}: its re-run has come to {r['at']:,} samples (its last point) of the record's {r['of']:,}"
    if not r["points_compared"]:
        return f"{head}, no point of the record's reached yet"
    if r["verdict"] == "differs":
        return (f"{head} and has parted from the record (largest difference {r['largest_difference']:.3g} nat over "
                f"{points(r['points_compared'])}, tolerance {r['tolerance']:g}): the next piece refuses it; remove "
                f"{r['rerun']} and its .pt to try again on a machine like the record's")
    return (f"{head}, {r['verdict']} at {points(r['points_compared'])} so far "
            f"(largest difference {r['largest_difference']:.3g} nat)")
