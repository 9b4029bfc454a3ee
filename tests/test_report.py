"""The report: figures and a Markdown page from real runs' TensorBoard events."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from cvae_dist import report


def test_read_run_sees_teacher_forcing_beta_and_settings(tiny_run):
    run = report.read_runs([tiny_run])[0]
    assert run.name == "teacher_forced_then_free"
    assert run.series("epoch/teacher_forcing")[1].tolist() == [1.0, 0.0]  # --tfr_sde 1 --tfr_d_step 1
    assert run.series("epoch/tfr")[1].tolist() == [1.0, 0.0]
    assert sorted(set(run.series("train/beta")[1].tolist())) == [0.0, 0.5]  # Monotonic over 2 epochs
    assert run.hparams["kl_anneal_type"] == "Monotonic" and run.hparams["preset"] == "tiny"
    assert len(run.series("final/psnr_per_frame")[0]) == 15


def test_report_page_embeds_the_figures_and_tabulates_each_run(tiny_run, tmp_path):
    other = tmp_path / "second_run"
    shutil.copytree(tiny_run, other)
    assert report.main([str(tiny_run), str(other), "--out", str(tmp_path / "report")]) == 0

    page = (tmp_path / "report" / "report.md").read_text()
    for name in report.FIGURES:
        image = tmp_path / "report" / f"{name}.png"
        assert f"]({name}.png)" in page
        pixels = np.asarray(Image.open(image).convert("RGB"))
        assert pixels.shape[0] > 300 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, name  # drawn, not blank

    # The table's average PSNR is the run's own evaluation of its best weights (eval/psnr_per_frame.csv).
    with (tiny_run / "eval" / "psnr_per_frame.csv").open() as handle:
        average = np.mean([float(row["psnr"]) for row in csv.DictReader(handle)])
    rows = [line for line in page.splitlines() if line.startswith("| teacher_forced_then_free") or line.startswith("| second_run")]
    assert len(rows) == 2
    header = [cell.strip() for cell in page.splitlines()[2].strip("|").split("|")]
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert dict(zip(header, cells))["KL annealing"] == "Monotonic"
    assert float(dict(zip(header, cells))["avg PSNR (dB)"]) == pytest.approx(average, abs=0.01)


def test_loss_tfr_figure_shades_the_teacher_forced_epoch(tiny_run, tmp_path):
    path = tmp_path / "loss_tfr.png"
    report.plot_loss_tfr(report.read_runs([tiny_run]), path)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # The shade is matplotlib's tab:orange at alpha 0.35 over white.
    orange = np.array([255, 127, 14])
    shade = np.rint(0.35 * orange + 0.65 * 255)
    assert (np.abs(pixels - shade).max(axis=2) <= 2).sum() > 2000


def test_missing_events_are_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
