"""Shared fixtures. The real datasets come from $AEVB_DATA_DIR (CI points it at shared/data)."""


import pytest
import torch

from vae_utils import data as data_mod
from vae_utils.exact import LinearGaussian


@pytest.fixture(scope="session")
def data_dir():
    d = data_mod.resolve_data_dir()
    missing = [f for f in data_mod.SHA256 if not ((d / f).exists() or (d / (f + ".gz")).exists())]
    if missing:
        pytest.fail(f"the datasets are needed for these tests: set {data_mod.DATA_DIR_ENV} to a folder holding "
                    f"{missing} (or run `python -m vae_utils fetch-data`)", pytrace=False)
    return d


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    """2000 MNIST training images (grey levels) and 500 test images."""
    return (data_mod.load_dataset("mnist", "train", n_train=2000),
            data_mod.load_dataset("mnist", "test")[:500])


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def small_config(tmp_path, **overrides):
    from vae_utils.train import TrainConfig

    kw = dict(dataset="mnist", n_z=5, n_hidden=50, n_train=2000, samples=20_000, lr=0.02, eval_n=500,
              eval_from=2_000, adagrad_warmup=10, results_dir=str(tmp_path / "results"),
              checkpoint_dir=str(tmp_path / "ckpt"), name="t")
    kw.update(overrides)
    return TrainConfig(**kw)


def signal_after_first_checkpoint(proc, ckpt, sig, settle: float = 0.5, timeout: float = 120) -> None:
    """Send ``sig`` to a training process once its first checkpoint exists and ``settle`` s more have passed."""
    import time

    deadline = time.time() + timeout
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(settle)
    proc.send_signal(sig)


@pytest.fixture(scope="session")
def trained_vae(tmp_path_factory, data_dir):
    """A small AEVB model (784-100-5) trained on 2000 MNIST images for 1e5 samples."""
    from vae_utils.train import load_trained, train

    tmp = tmp_path_factory.mktemp("trained")
    cfg = small_config(tmp, n_hidden=100, samples=100_000, lr=0.05, name="trained")
    train(cfg, progress=False, log=lambda *a: None)
    model, _ = load_trained(tmp / "ckpt" / "trained.pt")
    return model


class Perturbed(LinearGaussian):
    """A linear-Gaussian model whose q(z|x) is a deliberately imperfect Gaussian."""

    def encode(self, x):
        mu, logvar = super().encode(x)
        return mu + 0.2, logvar + 0.4


@pytest.fixture(scope="module")
def linear_gaussian():
    model = LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.5, seed=0)
    x = model.sample_x(200)
    return model, x, model.log_marginal(x).numpy()


@pytest.fixture
def float64():
    """In float64 rounding is 1e-16 and stays far below what any change of arithmetic moves, even
    through the chaotic first steps (in float32 two thread counts of the old step itself part by
    tens of nats per minibatch around step 150 and by 1.3 nats in the test bound at step 1500)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)
