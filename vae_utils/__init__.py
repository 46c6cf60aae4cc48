"""vae_utils: a reference reproduction of Kingma & Welling, Auto-Encoding Variational Bayes (2014).

    checks               the one rule for bad input: a one-line ValueError / TypeError
    records              paths, atomic reading and writing of records, provenance; finished results kept
    device               where tensors live: cpu, cuda or auto; generators per device; GPU provenance
    data                 MNIST and Frey Face, verified by SHA-256              (Section 5)
    models               the VAE: tanh MLP encoder, Bernoulli/Gaussian decoder  (Section 3, App. C)
    estimators           analytic KL, SGVB estimators A and B                   (eqs. 6-10, App. B)
    config               TrainConfig: every knob of a run, checked in one place
    algorithms           AEVB (Algorithm 1), wake-sleep, Monte Carlo EM, Adagrad (Section 2.3, 5, App. E)
    train                the resumable training loop, checkpoints, the run lock (Section 5)
    batched              several AEVB runs of one shape in one vmapped step, each its own record
    together             several runs of any kind side by side, a CUDA stream each, each its own record
    verify               a recorded run's start re-run, its curve compared bit for bit
    hmc                  batched Hamiltonian Monte Carlo                        (App. D, E)
    marginal_likelihood  the Appendix-D estimator, importance sampling, AIS, BDMC  (App. D, Figure 3)
    likelihood_studies   their accuracy against quadrature, checkpoint evaluation, AIS calibration
    exact                closed-form and quadrature log p(x) for testing
    sweep                many runs in parallel processes or on a dask cluster
    benchmark            samples/s against the usual PyTorch loop and the matmul limit
    claims               a claim checked on our numbers: held, not held, or within error
    budgets              the four budgets, where each writes, the notebooks' parameter check
    experiments          the runs each figure needs, Figure 3's log p(x) along training, decoder images
    fidelity             the experiments on the gaps to the paper, their tables
    readings             the notebooks' closing words, written from the numbers (claims, gaps, causes)
    plotting             Figures 2-5 in the paper's layout, ours-vs-paper tables, save_figure
    reproduce            the notebooks in order through papermill
    tables               the README's and docs' tables, generated from results/
"""

from .data import load_dataset
from .estimators import gaussian_kl, lower_bound, sgvb_a, sgvb_b
from .models import VAE
from .train import TrainConfig, load_trained

# `train` (the function) is deliberately not re-exported: it would shadow the module
# vae_utils.train. Use `from vae_utils.train import train`.
__all__ = ["load_dataset", "VAE", "gaussian_kl", "sgvb_a", "sgvb_b", "lower_bound", "TrainConfig", "load_trained"]
