"""The fidelity tables read our curves at the paper's sample counts."""

import json
import statistics

import pytest

from vae_utils import fidelity
from vae_utils.plotting import load_paper_curves


def test_the_mcem_count_that_generated_a_curve_is_the_one_that_matches_it():
    paper = sorted((r["training_samples"], r["value"]) for r in load_paper_curves() if r["figure"] == "figure3"
                   and r["method"] == "mcem" and r["n_train"] == "1000" and r["split"] == "train")
    truth = "(L+1) N + 5M (every gradient evaluation of the E-step)"
    ours = fidelity.MCEM_COUNTS[next(iter(fidelity.MCEM_COUNTS))]
    # a run whose curve is the paper's, had the paper counted every gradient evaluation
    record = {"points": [{"samples": x * ours / fidelity.MCEM_COUNTS[truth], "train": {"appendix_d": v}}
                         for x, v in paper]}
    rows = {r["count"]: r for r in fidelity.mcem_xaxis_table(record)}
    assert len(rows[truth]["points"]) == len(paper)
    assert all(abs(p["ours_minus_paper"]) < 1e-9 for p in rows[truth]["points"])
    others = [p for label, r in rows.items() if label != truth for p in r["points"]]
    assert others and all(abs(p["ours_minus_paper"]) > 0.1 for p in others)


def test_an_unknown_gap_or_experiment_is_refused():
    with pytest.raises(ValueError, match="unknown gap 'mcem_x'; valid: frey_face, wake_sleep"):
        fidelity.experiments("mcem_x")
    with pytest.raises(ValueError, match="unknown experiment"):
        fidelity.run("frey_face", names=["frey_lr0.5"])


def test_the_mcem_seed_table_gives_each_step_rules_mean_and_spread_over_its_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(fidelity, "FIDELITY_DIR", tmp_path)
    paper = {x: v for x, v in ((r["training_samples"], r["value"]) for r in load_paper_curves()
                               if r["figure"] == "figure3" and r["method"] == "mcem" and r["n_train"] == "1000"
                               and r["split"] == "train")}
    # seeds whose curves sit 1, 2 and 6 nats above the paper's, on a grid of the paper's own points
    for seed, offset in enumerate((1.0, 2.0, 6.0)):
        points = [{"samples": x, "train": {"appendix_d": v + offset}, "test": {"appendix_d": v}}
                  for x, v in sorted(paper.items())]
        (tmp_path / f"mcem_xaxis_seed{seed}_likelihood_curve.json").write_text(json.dumps({"points": points}))
    rows = {(r["variant"], r["split"]): r for r in fidelity.mcem_seed_table()}
    train = rows[("capped", "train")]
    assert train["seeds"] == [0, 1, 2] and 1e7 in train["ours_minus_paper"]
    for mean, sd in train["ours_minus_paper"].values():
        assert mean == pytest.approx(3.0) and sd == pytest.approx(statistics.stdev([1.0, 2.0, 6.0]))
    assert rows[("uncapped2013", "train")]["seeds"] == rows[("batch", "test")]["seeds"] == [] and "| train | 0,1,2 | +3.0 ± 2.6 |" in \
        fidelity.mcem_seed_markdown(fidelity.mcem_seed_table())


def test_a_candidates_verdict_weighs_its_distance_to_the_paper_against_the_defaults_seed_spread():
    row = lambda default, diff, sd=None: {"default": default, "samples": 1e6, "ours_minus_paper": diff, "sd": sd}
    default = row(True, -4.0, 1.0)
    assert fidelity.verdict(default, [default]) == "today's default"
    assert fidelity.verdict(row(False, -1.5), [default]) == "closer to the paper by 2.5"
    assert fidelity.verdict(row(False, +2.5), [default]) == "within 2 sd of the default"  # |2.5| vs |-4|: 1.5 < 2 sd
    assert fidelity.verdict(row(False, -7.0), [default]) == "further from the paper by 3.0"
    assert fidelity.verdict(row(False, -1.0), [row(True, -4.0)]) == "no default to compare"  # one seed: no sd


def test_each_mcem_variants_points_are_whole_iterations_and_reach_the_papers_points_for_its_n():
    from vae_utils.algorithms import mcem_samples_per_iteration

    for variant, points in fidelity.MCEM_POINTS.items():
        cfg = fidelity.mcem_curve_config(0, variant=variant)
        per_iteration = mcem_samples_per_iteration(cfg, cfg.n_train)
        assert all(x % per_iteration == 0 for x in points), variant  # a point is where an iteration ends
        assert cfg.samples == points[-1] and cfg.n_train == fidelity.mcem_n_train(variant)
        # the curve spans the paper's first MCEM point on its N, read by interpolation between ours
        assert points[0] <= min(x for x, _ in fidelity.mcem_paper_curve(cfg.n_train, "train")) <= points[-1]
    # N = 50,000: 16 N = 800,000 samples per iteration, the paper's 4e7 and 6.8e7 at iterations 50 and 85
    assert {40_000_000, 68_000_000} <= set(fidelity.MCEM_POINTS["batch_n50000"])


def test_the_mcem_seed_table_for_n_50000_has_the_papers_n_50000_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(fidelity, "FIDELITY_DIR", tmp_path)
    paper = dict(fidelity.mcem_paper_curve(50_000, "train"))
    points = [{"samples": x, "train": {"appendix_d": v - 2.0}, "test": {"appendix_d": v}} for x, v in paper.items()]
    (tmp_path / "mcem_batch_n50000_seed0_likelihood_curve.json").write_text(json.dumps({"points": points}))
    rows = fidelity.mcem_seed_table(n_train=50_000)
    assert {r["variant"] for r in rows} == {"batch_n50000"}
    md = fidelity.mcem_seed_markdown(rows, 50_000)
    assert "ours − paper at 4e7 | at 5e7 | at 6.8e7 |" in md and "| train | 0 | -2.0 | -2.0 | -2.0 |" in md


def test_figure3s_aevb_probe_varies_only_the_step_size_of_figure3s_n_50000_model():
    from vae_utils.experiments import FIGURE3_N_TRAIN

    grid, fixed = fidelity.fig3_aevb_config(0, "grid"), fidelity.fig3_aevb_config(0, "lr0.02")
    assert (grid.algorithm, grid.n_z, grid.n_hidden, grid.n_train) == ("aevb", 3, 100, FIGURE3_N_TRAIN[1])
    assert grid.lr == "auto" and fixed.lr == 0.02
    differs = {k for k in grid.identity() if grid.identity()[k] != fixed.identity()[k]}
    assert differs <= {"lr", "name"}
    with pytest.raises(ValueError, match="unknown Figure-3 AEVB variant 'lr0.5'"):
        fidelity.run_fig3_aevb(["lr0.5"])


@pytest.mark.parametrize("first, now, expected", [
    (None, (0.8, 0.3), "closed"),             # within 2 sd + digitization (0.5)
    ((8.8, 0.6), (0.3, 0.9), "closed"),
    ((7.9, 0.7), (3.2, 1.2), "narrowed by 4.7"),  # 3.2 > 2 * 1.2 + 0.5, and 4.7 > 2 * 0.7 + 0.5 of the first
    ((5.2, 0.8), (4.5, 0.5), "open"),         # 0.7 closer: inside the first reading's margin
    ((-4.3, 1.5), (-4.1, None), "open"),      # one seed borrows the first reading's sd: 4.1 > 3.5
    ((2.0, 0.4), (-0.5, None), "closed"),     # |-0.5| <= 2 * 0.4 + 0.5
    (None, (3.0, None), "open"),
    (None, (0.4, None), "closed"),            # one seed, no sd to borrow: the digitization (0.5) alone
    (None, (0.6, None), "open"),
])
def test_a_gap_is_closed_narrowed_or_open_by_its_seed_spread_and_the_digitization(first, now, expected):
    R = fidelity.Reading
    assert fidelity.gap_status(first and R("a", *first, 3), R("b", *now, 3 if now[1] else 1), 0.5) == expected


def test_the_gap_ledger_has_a_status_and_an_explanation_for_every_gap_of_the_record():
    rows = fidelity.gap_ledger()
    curves = {r["curve"] for r in rows}
    assert {"MNIST AEVB, Nz = 20, train", "Frey Face AEVB, Nz = 20, test", "wake-sleep MNIST, Nz = 20, train",
            "MCEM, Figure 3, N = 1,000, train, at 2e6", "Figure 3 AEVB, N = 50,000, train, at 2e6",
            "wake-sleep MNIST, Nz = 200, train"} <= curves
    for r in rows:
        assert r["status"] == fidelity.gap_status(r["first"], r["now"], r["digitization"])
        assert r["explanation"] and r["status"].split()[0] in ("closed", "narrowed", "open")
    # batch MCEM, the default since it matched, closes the N = 1000 train gap the on-line variant left
    mcem = next(r for r in rows if r["curve"] == "MCEM, Figure 3, N = 1,000, train, at 2e6")
    assert mcem["first"].mean > 5 and mcem["status"] == "closed"


def test_the_ledgers_train_test_row_is_each_paper_seeds_gap_less_the_papers_gap_read_from_the_csv():
    import csv

    from vae_utils.plotting import PAPER_CSV, load_results
    from vae_utils.records import RESULTS_DIR

    rows = {r["curve"]: r for r in fidelity.gap_ledger()}
    r = rows["MNIST AEVB, Nz = 20, train − test, at 2.4e8"]
    # the paper's two lines at 2.4e8 straight from the digitized file, not through paper_value
    with open(PAPER_CSV) as f:
        rows_csv = list(csv.DictReader(f))
    paper = {c["split"]: float(c["value"]) for c in rows_csv if (c["figure"], c["dataset"], c["method"], c["n_z"]) ==
             ("figure2", "mnist", "aevb", "20") and abs(float(c["training_samples"]) - 2.4e8) < 0.02 * 2.4e8}
    ours = [(p["train"], p["test"]) for rec in load_results("aevb_mnist_nz20_h500_grey_n50000_seed*.json", RESULTS_DIR / "paper")
            for p in rec["curve"] if p["samples"] == 2.4e8]
    expected = [(tr - te) - (paper["train"] - paper["test"]) for tr, te in ours]
    assert r["now"].seeds == len(expected) >= 3 and r["now"].mean == pytest.approx(sum(expected) / len(expected), abs=0.01)
    assert r["digitization"] == 1.0 and "global step 0.02" in r["explanation"] and "no weight prior" in r["explanation"]


def test_at_equal_fit_picks_the_point_whose_train_value_is_nearest():
    curve = [{"samples": 1, "train": -110.0, "test": -110.0}, {"samples": 2, "train": -100.0, "test": None},
             {"samples": 3, "train": -99.0, "test": -100.0}, {"samples": 4, "train": -95.0, "test": -97.0}]
    assert fidelity.at_train_value(curve, -100.2)["samples"] == 3  # 2 is nearer but has no test value
    assert fidelity.at_train_value(curve, -96.0)["samples"] == 4


def test_the_latent_kl_split_adds_up_to_the_closed_form_kl_of_the_bound(tmp_path, data_dir):
    import torch
    from conftest import small_config

    from vae_utils.estimators import gaussian_kl
    from vae_utils.records import checkpoint_path
    from vae_utils.train import evaluation_images, load_trained, train

    cfg = small_config(tmp_path, algorithm="wake_sleep", n_z=8, samples=4_000, eval_n=200)
    train(cfg, progress=False, log=lambda *a: None)
    row = fidelity.latent_kl(cfg, n=300)
    model, _ = load_trained(checkpoint_path(cfg))
    with torch.no_grad():
        mu, logvar = model.encode(evaluation_images(cfg, "test", 300))
        truth = gaussian_kl(mu, logvar).mean().item()  # KL(q || N(0, I)) per image, eq. 10's closed form
    assert abs(row["kl"] - truth) < 1e-4 * max(1.0, abs(truth))
    assert abs(row["kl_read"] + row["kl_unread"] - row["kl"]) < 1e-5 and 1 <= row["latents_read"] <= 8


def test_frey_wake_sleeps_candidates_are_read_at_1e7_beside_todays_default(monkeypatch):
    def run(test_at_1e7):
        return {"curve": [{"samples": 1_000_000, "test": 600.0}, {"samples": 10_000_000, "test": test_at_1e7}]}

    runs = {"wsfrey_default": {0: run(999.0)}, "wsfrey_logvar0.1": {0: run(960.0), 1: run(970.0)}}
    monkeypatch.setattr(fidelity, "_results", lambda e: runs.get(e.name, {}))
    [(e, values, default)] = fidelity.frey_wake_sleep_tested()
    assert e.overrides == {"ws_logvar_scale": 0.1} and values == [960.0, 970.0] and default == [999.0]
    cause = fidelity.known_cause("frey_face", "wake_sleep", n_z=20)
    assert "climbs as well (test 965 at 1e7, 2 seeds, against today's 999)" in cause and "open" in cause
    # before any candidate has run, the cause says what is known and nothing of a test
    runs.pop("wsfrey_logvar0.1")
    assert fidelity.frey_wake_sleep_tested() == [] and "tested" not in fidelity.known_cause("frey_face", "wake_sleep", n_z=20)


def test_the_first_training_block_is_the_curves_own_train_value_and_the_blocks_make_up_the_split(tmp_path, data_dir):
    import statistics as st

    from conftest import small_config

    from vae_utils.train import train

    cfg = small_config(tmp_path, n_train=2000, eval_n=500, samples=6_000, data_dir=str(data_dir))
    record = train(cfg, progress=False, log=lambda *a: None)
    row = fidelity.train_blocks(record, block=500, checkpoints=tmp_path / "ckpt")
    assert len(row["blocks"]) == 4 and row["samples_seen"] == 6_000
    # the same images, the same noise seed, the same arithmetic as the curve's last point
    assert row["blocks"][0] == record["curve"][-1]["train"] and row["test"] == record["curve"][-1]["test"]
    # the whole split is its blocks, up to the noise each draws afresh (sd of a 500-image mean: well under 1 nat)
    assert abs(row["whole"] - st.fmean(row["blocks"])) < 1.0


@pytest.mark.parametrize("e, differs, flag", [
    (fidelity.NO_PRIOR, {"weight_prior": (True, False)}, "--weight-prior off"),
    (fidelity.LATE_STEP, {"lr": ("auto", 0.02)}, "--lr 0.02")])
def test_each_late_variant_is_the_paper_budgets_run_of_its_seed_but_for_its_one_setting(monkeypatch, e, differs, flag):
    import shlex

    from vae_utils import records, train
    from vae_utils.__main__ import main
    from vae_utils.config import identity_differences

    cfg = fidelity.config(e, 0, 240_000_000)
    partner = json.loads((records.RESULTS_DIR / "paper" / "aevb_mnist_nz20_h500_grey_n50000_seed0.json").read_text())
    assert identity_differences(partner["config"], cfg) == differs
    # the command the table prints trains that very config
    seen = []
    monkeypatch.setattr(train, "train", lambda c, progress=True: seen.append(c))
    command = fidelity.command(e, 2.4e8).replace("<S>", "0")
    argv = shlex.split(command)[3:]
    assert flag in command and main(argv) == 0 and not identity_differences(json.loads(json.dumps(seen[0].identity())), cfg)


def test_the_weight_prior_table_pairs_the_two_runs_at_the_ticks_both_reached(tmp_path, monkeypatch):
    from vae_utils import tables

    curve = lambda offset, upto: [{"samples": x, "train": -100.0 + offset, "test": -101.0 + offset}
                                  for x in (1e6, 3162300, 1e7, 31622800, 1e8, 177827900, 2.4e8) if x <= upto]
    without = {"curve": curve(0.5, 1e8), "samples_seen": 1.2e8, "finished": False, "lr": 0.01}
    with_prior = {"curve": curve(0.0, 2.4e8), "lr": 0.01}
    monkeypatch.setattr(fidelity, "_results", lambda e: {0: without} if e is fidelity.NO_PRIOR else {})
    (tmp_path / "partner.json").write_text("{}")
    monkeypatch.setattr(fidelity, "results_path", lambda c: tmp_path / "partner.json")  # a record that is there
    monkeypatch.setattr(fidelity, "recorded_results", lambda c: with_prior)
    _, _, rows = fidelity.late_points(fidelity.NO_PRIOR)
    assert [r["samples"] for r in rows] == [1e6, 10 ** 6.5, 1e7, 10 ** 7.5, 1e8]  # 1e8 is the last both reached
    assert all(r["train_variant"] - r["train_record"] == r["test_variant"] - r["test_record"] == 0.5 for r in rows)
    assert rows[-1]["paper_train"] == pytest.approx(-97.9, abs=0.5)  # the paper's digitized Nz = 20 train at 1e8
    md = tables.mnist_weight_prior()
    assert "| 1e8 | -100.00 / -101.00 (+1.00) | -99.50 / -100.50 (+1.00) | +0.50 / +0.50 |" in md
    assert "The run without the prior: 1.2e8 (not finished), step 0.01 (the run with the prior: 0.01)" in md
    # a larger step: the variant fits further, and at equal fit its gap is read where its train value is the record's
    faster = {"curve": [{"samples": x, "train": -101.0 + 0.5 * i, "test": -101.5 + 0.3 * i} for i, x in
                        enumerate((1e6, 3162300, 1e7, 31622800, 1e8, 177827900, 2.4e8))],
              "samples_seen": 2.4e8, "finished": True, "lr": 0.02}
    monkeypatch.setattr(fidelity, "_results", lambda e: {0: faster} if e is fidelity.LATE_STEP else {})
    md = tables.mnist_late_step()
    assert "| 2.4e8 | -100.00 / -101.00 (+1.00) | -98.00 / -99.70 (+1.70) | +2.00 / +1.30 |" in md
    assert "At equal fit: the run at step 0.02 reached -100.00 on train at 1e7, its gap there +0.90 (the run at step " \
           "0.01: -100.00 at 2.4e8, gap +1.00)." in md
    monkeypatch.setattr(fidelity, "_results", lambda e: {})
    assert tables.mnist_weight_prior().startswith("**Not run yet:** `python -m vae_utils train") and "--weight-prior off" in \
        tables.mnist_weight_prior()
