"""The docs' figures: regenerated, and every value they plot is the schedules' own."""

from __future__ import annotations

import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from cvae_dist import docs_figures
from cvae_dist.schedules import KLAnnealer, teacher_forcing_coin, teacher_forcing_ratio
from support import REPO, run_env

# What each labelled line of the figures must be, recomputed here from the schedules directly.
BETA_EXPECTED = {
    "Cyclical, 10 cycles, ratio 1.0 (course default)": KLAnnealer("Cyclical", 70, 10, 1.0),
    "Cyclical, 4 cycles, ratio 0.5": KLAnnealer("Cyclical", 70, 4, 0.5),
    "Cyclical, 2 cycles, ratio 0.25": KLAnnealer("Cyclical", 70, 2, 0.25),
    "Monotonic, ratio 1.0": KLAnnealer("Monotonic", 70, 1, 1.0),
    "Monotonic, ratio 0.25": KLAnnealer("Monotonic", 70, 1, 0.25),
    "Without (beta = 1)": KLAnnealer("Without", 70, 1, 1.0),
}
TF_EXPECTED = {
    "course default: --tfr 1.0 --tfr_sde 10 --tfr_d_step 0.1": (1.0, 10, 0.1),
    "--tfr 1.0 --tfr_sde 0 --tfr_d_step 0.02": (1.0, 0, 0.02),
    "--tfr 1.0 --tfr_sde 30 --tfr_d_step 0.05": (1.0, 30, 0.05),
    "--tfr 0.5 --tfr_sde 0 --tfr_d_step 0.0": (0.5, 0, 0.0),
    "--tfr 0 (teacher forcing off)": (0.0, 0, 0.0),
}


def test_beta_figure_plots_the_annealers_values():
    plotted = docs_figures.plotted_series(docs_figures.beta_figure())
    assert set(plotted) == set(BETA_EXPECTED)
    for label, annealer in BETA_EXPECTED.items():
        np.testing.assert_array_equal(plotted[label], [annealer.beta(e) for e in range(70)], err_msg=label)
    # The course default is a sawtooth of 7-epoch cycles: it must reach 6/7 and restart at 0.
    assert plotted["Cyclical, 10 cycles, ratio 1.0 (course default)"][[6, 7]] == pytest.approx([6 / 7, 0])


def test_teacher_forcing_figure_plots_the_schedules_values():
    plotted = docs_figures.plotted_series(docs_figures.teacher_forcing_figure())
    assert set(plotted) == set(TF_EXPECTED) | {docs_figures.COIN_LABEL}
    for label, flags in TF_EXPECTED.items():
        np.testing.assert_array_equal(plotted[label], [teacher_forcing_ratio(e, *flags) for e in range(70)], err_msg=label)
    coins = [float(teacher_forcing_coin(teacher_forcing_ratio(e, 1.0, 10, 0.1), 0, e)) for e in range(70)]
    np.testing.assert_array_equal(plotted[docs_figures.COIN_LABEL], coins)


def test_the_docs_command_regenerates_every_embedded_figure(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cvae_dist.docs_figures", "schedules", "--out", str(tmp_path)],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["kl_beta.png", "teacher_forcing.png"]
    method = (REPO / "docs" / "method.md").read_text()
    embedded = set(re.findall(r"\]\(figures/([\w.-]+\.png)\)", method))
    assert embedded == set(written), "docs/method.md must embed exactly the figures the command draws"
    figures = {"kl_beta.png": docs_figures.beta_figure(), "teacher_forcing.png": docs_figures.teacher_forcing_figure()}
    for name, figure in figures.items():
        digest = docs_figures.series_digest(figure)
        assert Image.open(tmp_path / name).text[docs_figures.SERIES_KEY] == digest
        committed = Image.open(REPO / "docs" / "figures" / name).text.get(docs_figures.SERIES_KEY)
        assert committed == digest, f"docs/figures/{name} is stale: rerun python -m cvae_dist.docs_figures schedules"


def test_demo_images_from_a_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "psnr_per_frame.png").write_bytes(b"\x89PNG stand-in")
    video = np.zeros((30, 16, 40, 3), dtype=np.uint8)
    video[:, :, :, 0] = np.arange(30)[:, None, None] * 8  # frame t is (8t, 0, 0) everywhere
    iio.imwrite(run / "eval" / "rollout.gif", video, extension=".gif", loop=0)
    paths = docs_figures.write_demo_images(run, tmp_path / "images")
    assert paths["psnr"].read_bytes() == b"\x89PNG stand-in"
    strip = iio.imread(paths["frames"])
    assert strip.ndim == 3 and strip.shape[0] > strip.shape[1] / 2  # six frames stacked
    with pytest.raises(docs_figures.UserError, match="rollout.gif"):
        (run / "eval" / "rollout.gif").unlink()
        docs_figures.write_demo_images(run, tmp_path / "images")


def test_data_image_shows_the_validation_video_stored_small_and_as_labels(dataset_root, tmp_path):
    figure = docs_figures.data_figure(dataset_root, count=4)
    grids = [axes.images[0].get_array() for axes in figure.axes]
    assert len(grids) == 12
    stored, small, label = grids[0], grids[4], grids[8]
    assert stored.shape == (64, 128, 3) and small.shape == (32, 64, 3)  # the fixture's PNGs, and what a model sees
    assert np.array_equal(stored, iio.imread(dataset_root / "val" / "val_img" / "0.png"))
    assert (np.asarray(label) == 255).all(-1).mean() > 0.8  # a pose label: mostly white
    done = subprocess.run(
        [sys.executable, "-m", "cvae_dist.docs_figures", "data", "--root", str(dataset_root), "--out", str(tmp_path)],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert iio.imread(tmp_path / "dataset_frames.png").shape[1] > 600
