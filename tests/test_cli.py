"""The command line as a user meets it: output contracts, predictions, and start-up cost."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gdlab.cli.fit import fit as fit_command
from gdlab.config import OPTIONS, FitOptions
from gdlab.data.builtin import DATASETS
from gdlab.history import History

JSON_KEYS = ["status", "epochs", "loss", "val_loss", "stop", "coef", "intercept", "path", "out"]


def test_json_output_is_exactly_one_object_with_the_documented_keys(gdlab, tmp_path: Path) -> None:
    run = gdlab("fit", "noisy-plane", "--lr", "0.3", "--epochs", "200", "--json",
                "--out", str(tmp_path / "r"))  # fmt: skip
    assert run.code == 0
    summary = json.loads(run.out)  # fails on anything else on stdout
    assert list(summary) == JSON_KEYS
    assert summary["status"] == "converged" and set(summary["coef"]) == {"x1", "x2"}
    assert summary["path"] == "closed-form"  # plain gd on least squares: every epoch at once
    assert summary["out"] == str(tmp_path / "r")
    for name in ("model.pt", "history.csv", "summary.json"):
        assert (tmp_path / "r" / name).is_file()
    history = History.load(tmp_path / "r" / "history.csv")
    assert len(history) == summary["epochs"] and history.train_loss[-1] == summary["loss"]
    assert history.params["coef[x1]"][-1] == summary["coef"]["x1"]


def test_softmax_json_has_coefficients_per_class_and_mlp_none(gdlab, tmp_path: Path) -> None:
    softmax = json.loads(gdlab("fit", "three-blobs", "--lr", "1", "--epochs", "50", "--json",
                               "--out", str(tmp_path / "s")).out)  # fmt: skip
    assert set(softmax["coef"]) == {"0", "1", "2"} and set(softmax["intercept"]) == {"0", "1", "2"}
    mlp = json.loads(gdlab("fit", "noisy-plane", "--model", "mlp:4", "--epochs", "20", "--json",
                           "--out", str(tmp_path / "m")).out)  # fmt: skip
    assert "coef" not in mlp and "intercept" not in mlp


def test_predict_writes_predictions_and_probabilities(gdlab, tmp_path: Path) -> None:
    assert gdlab("fit", "binary-blobs", "--lr", "2", "--epochs", "100",
                 "--out", str(tmp_path / "r")).code == 0  # fmt: skip
    out = tmp_path / "p.csv"
    run = gdlab("predict", str(tmp_path / "r"), "binary-blobs", "--out", str(out))
    assert run.code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 200 and list(rows[0]) == ["prediction", "proba_0", "proba_1"]
    labels = [int(r["label"]) for r in csv.DictReader(DATASETS["binary-blobs"].path.open())]
    accuracy = sum(
        int(r["prediction"]) == label for r, label in zip(rows, labels, strict=True)
    ) / len(rows)
    assert accuracy > 0.9
    assert all(abs(float(r["proba_0"]) + float(r["proba_1"]) - 1) < 1e-6 for r in rows)


def test_diverged_run_exits_1_and_explains_itself(gdlab, tmp_path: Path) -> None:
    run = gdlab("fit", "tutorial-line", "--lr", "0.5", "--no-standardize",
                "--out", str(tmp_path / "r"))  # fmt: skip
    assert run.code == 1
    assert "Diverged at epoch" in run.err and "2/λmax = 0.12" in run.err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_parquet_npz_and_npy_give_the_same_fit_as_csv(gdlab, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(DATASETS["noisy-plane"].path)
    frame.to_parquet(tmp_path / "d.parquet")
    np.savez(tmp_path / "d.npz", x1=frame.x1.to_numpy(), x2=frame.x2.to_numpy(), y=frame.y)
    np.save(tmp_path / "d.npy", frame.to_numpy())
    fits = {}
    for name, target in (("d.parquet", "y"), ("d.npz", "y"), ("d.npy", "c2")):
        run = gdlab("fit", str(tmp_path / name), "--target", target, "--lr", "0.3", "--json",
                    "--out", str(tmp_path / f"run-{name}"))  # fmt: skip
        assert run.code == 0, run.err
        fits[name] = list(json.loads(run.out)["coef"].values())
    reference = json.loads(gdlab("fit", "noisy-plane", "--lr", "0.3", "--json",
                                 "--out", str(tmp_path / "csv")).out)  # fmt: skip
    for coef in fits.values():
        assert coef == list(reference["coef"].values())


def test_datasets_lists_every_builtin(gdlab) -> None:
    run = gdlab("datasets")
    assert [line.split()[0] for line in run.out.splitlines()] == list(DATASETS)


def test_options_table_dataclass_and_cli_agree() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(FitOptions)}
    assert fields == {option.name: option.default for option in OPTIONS}
    cli_names = {p.name for p in fit_command.params if isinstance(p, click.Option)}
    assert {option.name for option in OPTIONS} <= cli_names
    for option in OPTIONS:
        assert option.constraint.check(option.default), option.name


def test_torch_free_name_lists_match_the_registries() -> None:
    # config.py names optimizers, losses and activations without importing torch; these copies
    # must stay equal to the registries that the training code resolves them with.
    from gdlab import config, losses, models
    from gdlab.optim import registry

    assert tuple(registry.OPTIMIZERS) == config.OPTIMIZERS
    assert tuple(losses.LOSSES) == config.LOSSES
    assert tuple(models.ACTIVATIONS) == config.ACTIVATIONS


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from gdlab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "main(['fit', '--help'])\n"
        "assert 'torch' not in sys.modules, 'torch imported by fit --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--optimizer" in result.stdout and "[default: gd]" in result.stdout


@pytest.mark.slow
def test_console_script_runs_in_a_real_process(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("gdlab")
    result = subprocess.run(
        [str(script), "fit", "nope.csv", "--target", "y"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.startswith("gdlab: error: nope.csv")
