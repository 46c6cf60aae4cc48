"""The package's layers: estimators below the loop, the loop below the studies, records below everything, no
import circle; and a package docstring that names every module."""

import ast
from pathlib import Path

from vae_utils import algorithms


def package_imports(module: str) -> set[str]:
    """The vae_utils modules ``module`` imports, directly or through others (read from the source)."""
    root = Path(algorithms.__file__).parent
    seen, todo = set(), [module]
    while todo:
        tree = ast.parse((root / f"{todo.pop()}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                for name in names:
                    if name not in seen:
                        seen.add(name)
                        todo.append(name)
    return seen


def test_the_algorithms_never_import_the_training_loop():
    below = package_imports("algorithms")
    assert {"config", "models", "estimators", "hmc"} <= below  # the reader sees the real imports
    assert not below & {"train", "sweep", "experiments", "reproduce"}, below
    assert "algorithms" in package_imports("train")


def test_no_module_of_the_package_imports_itself_through_others():
    modules = [p.stem for p in Path(algorithms.__file__).parent.glob("*.py") if not p.stem.startswith("__")]
    circles = {m: sorted(package_imports(m)) for m in modules if m in package_imports(m)}
    assert not circles, circles


def test_the_estimators_sit_below_the_loop_and_records_below_everything():
    assert package_imports("marginal_likelihood") <= {"checks", "device", "hmc", "models", "estimators"}
    assert not package_imports("device")  # where tensors live: below everything, as records
    assert not package_imports("records")  # paths, reading and writing: imported by every other layer
    assert not package_imports("claims")  # a verdict knows no figure: the studies build its rows
    modules = [p.stem for p in Path(algorithms.__file__).parent.glob("*.py") if not p.stem.startswith("__")]
    assert not [m for m in modules if "tables" in package_imports(m)]  # the documents' tables: the top layer
    studies = package_imports("likelihood_studies")
    assert {"marginal_likelihood", "train", "experiments"} <= studies and "likelihood_studies" not in package_imports("train")


def test_the_package_docstring_names_every_module_in_one_line():
    import re

    import vae_utils

    modules = sorted(p.stem for p in Path(algorithms.__file__).parent.glob("*.py") if not p.stem.startswith("__"))
    assert [m for m in modules if not re.search(rf"^    {m} +\S", vae_utils.__doc__, re.M)] == []
