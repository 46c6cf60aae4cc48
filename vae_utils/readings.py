"""The notebooks' closing words, written from the numbers so they hold at every budget.

A Figure-2 or Figure-3 notebook ends with a reading of its own results: the paper's claims with
their three-valued verdicts (``experiments.figure2_claims`` / ``figure3_claims``, weighed by
``vae_utils.claims``), and every gap between our curve and the paper's beyond the digitization
of its figure and the measurement's error, each with what the fidelity experiments found about
it (``fidelity.known_cause``, from their records). No number here is typed: each sentence is an
f-string of the records it describes.
"""

from __future__ import annotations

from .budgets import BUDGETS
from .claims import tally
from .experiments import DIGITIZATION, appendix_d_error, figure2_claims, figure3_claims, seed_spread
from .fidelity import PAPER_MEASURED_FROM, known_cause
from .plotting import LABELS, paper_value, samples_label


_PAPER = BUDGETS["paper"]  # the paper's own sample counts, where its axes end
PAPER_END = {"figure2": {"mnist": _PAPER.mnist_samples, "frey_face": _PAPER.frey_samples},
             "figure3": {1000: _PAPER.fig3_samples, 50_000: _PAPER.fig3_samples_50k}}


def _causes(far: list[tuple[str, str]]) -> list[str]:
    """One line per cause the fidelity experiments give, naming the runs it explains:
    ``far`` holds (cause, run) pairs, in order."""
    causes = {}
    for cause, run in far:
        causes.setdefault(cause, []).append(run)
    return [f"- {', '.join(dict.fromkeys(runs))}: {cause}." for cause, runs in causes.items()]


def _verdict_sentence(rows: list[dict], what: str) -> str:
    """'held at Nz = 3, 10; within error at Nz = 5 (...)' from claim rows about ``what``."""
    parts = []
    for v in ("held", "within error", "not held"):
        hit = [r for r in rows if r["verdict"] == v]
        if hit:
            names = ", ".join(r["claim"].split(", ")[-1] for r in hit)
            parts.append(f"**{v}** at {names}" + (f" (margin {', '.join(r['margin'] for r in hit)} against "
                                                  f"{hit[0]['error']})" if v != "held" else ""))
    return f"{what}: " + "; ".join(parts) + "."


def figure2_reading(results: list[dict], paper_rows) -> str:
    """The closing words of a Figure-2 notebook, every number from ``results``: AEVB against
    wake-sleep (three verdicts), train against test, and each gap to the paper's curve beyond its
    digitization and twice the seed sd, with what the fidelity experiments found about it."""
    if not results:
        return "No runs to read."
    dataset = results[0]["config"]["dataset"]
    x = max(r["curve"][-1]["samples"] for r in results)
    rows = figure2_claims(results)
    above = [r for r in rows if r["claim"].startswith("AEVB above")]
    text = [f"**At {samples_label(x)} training samples**, the end of this budget (the paper's curves run to "
            f"{samples_label(PAPER_END['figure2'][dataset])}), " + _verdict_sentence(above, "AEVB's bound above wake-sleep's")]
    gaps = {(r["config"]["n_z"], r["algorithm"]): r["curve"][-1]["train"] - r["curve"][-1]["test"] for r in results
            if r["curve"][-1]["test"] is not None}
    if gaps:
        (nz, alg), g = max(gaps.items(), key=lambda kv: abs(kv[1]))
        text.append(f"Train against test: the largest train − test difference is {g:+.1f} nats ({LABELS[alg]}, "
                    f"Nz = {nz}); overfitting would show as a large positive one.")
    sd, _ = seed_spread(dataset, x)
    # without a measured seed spread the tolerance is the digitization alone, and the words say so
    tolerance = DIGITIZATION[dataset] + (2 * sd if sd is not None else 0.0)
    spread = "plus twice the seed sd" if sd is not None else "alone (no two seeds reach this far)"
    far, compared = [], 0
    for r in sorted(results, key=lambda r: (r["algorithm"], r["config"]["n_z"])):
        last = r["curve"][-1]
        for split in ("train", "test"):
            theirs = paper_value(paper_rows, "figure2", dataset, r["config"]["n_z"], r["algorithm"], split, last["samples"])
            compared += theirs is not None and last[split] is not None
            if theirs is not None and last[split] is not None and abs(last[split] - theirs) > tolerance:
                far.append((r["algorithm"], r["config"]["n_z"], split, last[split] - theirs))
    early = x < PAPER_MEASURED_FROM[dataset]
    if not compared:
        text.append(f"The paper's curves have no value at {samples_label(x)} (they lie below its plotted range "
                    f"there), so this budget's end has nothing to compare with them.")
    elif not far:
        text.append(f"Where the paper has a value at {samples_label(x)}, every curve lies within its digitization "
                    f"(±{DIGITIZATION[dataset]:g}) {spread} ({tolerance:.1f} nats in all) of ours.")
    else:
        listed = "; ".join(f"{LABELS[a]} Nz = {nz} {split} {d:+.1f}" for a, nz, split, d in far)
        text.append(f"Gaps to the paper beyond its digitization (±{DIGITIZATION[dataset]:g}) {spread} "
                    f"({tolerance:.1f} nats in all), ours − paper: {listed}."
                    + (f" Below {samples_label(PAPER_MEASURED_FROM[dataset])} samples the paper's curves are mostly "
                       f"drawn, not measured (a straight segment to its first logged point near 4e5), so these say "
                       f"little." if early else ""))
        text += _causes([(known_cause(dataset, alg, n_z=nz), f"{LABELS[alg]} Nz = {nz}") for alg, nz, *_ in far])
    return "\n\n".join(text)


def figure3_reading(records: list[dict], paper_rows) -> str:
    """The closing words of the Figure-3 notebook, every number from ``records``: the claims'
    verdicts, importance sampling against Appendix D, and each gap to the paper's curve beyond
    its digitization and the estimator's measured error, with what the fidelity experiments
    found about it."""
    if not records:
        return "No runs to read."
    rows = figure3_claims(records, paper_rows)
    ends = {r["config"]["n_train"]: r["points"][-1]["samples"] for r in records}
    text = [f"**At {' and '.join(f'{samples_label(x)} (N = {n:,})' for n, x in sorted(ends.items()))} training "
            f"samples**, the end of this budget (the paper's axes run to "
            f"{' and '.join(samples_label(PAPER_END['figure3'][n]) for n in sorted(ends))}), the readings give "
            f"{tally(rows)}."]
    for r in rows:
        if r["verdict"] in ("within error", "not held"):
            text.append(f"- *{r['claim']}*: {r['verdict']}, by a margin of {r['margin']} against {r['error']} "
                        f"({r['measured']}).")
    iw = [(r, s, pt[s]["appendix_d"] - pt[s]["importance"]) for r in records for pt in r["points"][-1:]
          for s in ("train", "test") if pt[s].get("importance") is not None]
    if iw:
        r, s, d = max(iw, key=lambda t: t[2])
        text.append(f"Importance sampling with the encoder as proposal reads at most {d:.1f} nats below Appendix D "
                    f"({LABELS[r['algorithm']]}, N = {r['config']['n_train']:,}, {s}): a stochastic lower bound, "
                    f"loose where q(z|x) fits the posterior badly.")
    far, compared, unmeasured = [], 0, 0
    for r in records:
        n, alg, last = r["config"]["n_train"], r["algorithm"], r["points"][-1]
        for split in ("train", "test"):
            theirs = paper_value(paper_rows, "figure3", "mnist", 3, alg, split, last["samples"], n)
            measured = appendix_d_error(alg, n, split)  # None: no calibration of this kind of model
            error = DIGITIZATION["mnist"] + (measured if measured is not None else 0.0)
            compared += theirs is not None
            unmeasured += theirs is not None and measured is None
            if theirs is not None and abs(last[split]["appendix_d"] - theirs) > error:
                far.append((alg, n, split, last[split]["appendix_d"] - theirs,
                            f"±{error:.1f}" if measured is not None else f"±{error:.1f}, the digitization alone: "
                            f"the estimator's error is not measured for this model"))
    if not compared:
        text.append("The paper's curves have no value at our last points (they start later or lie below its "
                    "plotted range), so this budget's end has nothing to compare with them.")
    elif far:
        text.append(f"Gaps to the paper beyond its digitization (±{DIGITIZATION['mnist']:g}) plus the estimator's measured error, ours − "
                    "paper: " + "; ".join(f"{LABELS[a]} N = {n:,} {s} {d:+.1f} (beyond {e})"
                                           for a, n, s, d, e in far) + ".")
        text += _causes([(known_cause("mnist", alg, n_train=n), f"{LABELS[alg]} N = {n:,}") for alg, n, *_ in far])
    else:
        text.append("Where the paper has a value at our last point, every curve lies within its digitization plus "
                    "the estimator's measured error of ours" + (f" ({unmeasured} of these {compared} readings by the "
                    "digitization alone: the estimator's error is not measured for their models)." if unmeasured
                                                                else "."))
    return "\n\n".join(text)


__all__ = ["figure2_reading", "figure3_reading", "PAPER_MEASURED_FROM", "PAPER_END"]
