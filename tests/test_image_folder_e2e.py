"""A folder of images without factors, end to end through the CLI: import, train with a
discretised likelihood, evaluate (`all` = the metrics that apply; a factor metric refused
in one line), the information view with its bound, traversals as PNG and GIF, reconstructions."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from disentangle.cli import main


def _tiles(folder, n_side: int = 4):
    """n_side² × 4 RGB images: a coloured square at a grid position on a grey background."""
    folder.mkdir()
    colours = [(220, 40, 40), (40, 180, 40), (40, 60, 220), (230, 200, 30)]
    i = 0
    for xi in range(n_side):
        for yi in range(n_side):
            for colour in colours:
                img = np.full((64, 64, 3), 90, np.uint8)
                img[8 + 10 * yi:22 + 10 * yi, 8 + 10 * xi:22 + 10 * xi] = colour
                Image.fromarray(img).save(folder / f"t{i:03d}.png")
                i += 1
    return i


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_image_folder_trains_evaluates_and_draws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n = _tiles(tmp_path / "tiles")
    cli = CliRunner()
    data = tmp_path / "tiles.h5"
    _ok(cli.invoke(main, ["data", "import-folder", str(tmp_path / "tiles"), "--name", "tiles",
                          "--out", str(data)]))
    run = tmp_path / "run"
    _ok(cli.invoke(main, ["train", "--dataset", "tiles", "--data", str(data), "--likelihood",
                          "discretized-gaussian", "--latent-dim", "3", "--batch-size", "8", "--steps", "6",
                          "--threads", "1", "--out", str(run)]))
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["dataset"] == "tiles" and config["model"]["channels"] == 3

    # a factor metric is refused in one line, before the codes table is built
    refused = cli.invoke(main, ["evaluate", str(run), "--metric", "mig", "--threads", "1"])
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and "no ground-truth factors" in lines[0] and "mig" in lines[0], refused.output
    assert not (run / "codes.h5").exists()

    # `all` means the metrics that apply: the information view (and the code-only scores)
    _ok(cli.invoke(main, ["evaluate", str(run), "--threads", "1", "--param", "info.iq_min_samples=64",
                          "--param", "info.iq_max_samples=64"]))
    scores = json.loads((run / "scores.json").read_text())
    assert "info" in scores and "mig" not in scores and "dci" not in scores
    info = scores["info"]["values"]
    assert info["is_bound"] is True                                 # 256-level likelihood on 8-bit pixels
    assert info["entropy_x_nats"] == pytest.approx(math.log(n))     # n distinct images
    assert info["i_gen_lower_nats"] == pytest.approx(info["entropy_x_nats"] - info["distortion_nats"])
    assert info["i_q_nats"] <= info["rate_nats"] + 3 * info["i_q_se_nats"] + 1e-6

    # traversals (PNG and an animated GIF, in colour) and reconstructions
    gif = tmp_path / "trav.gif"
    _ok(cli.invoke(main, ["plot", "traversal", str(run), "--steps", "5", "--gif", str(gif),
                          "--out", str(tmp_path / "trav.png")]))
    with Image.open(gif) as im:
        assert im.n_frames == 5
    with Image.open(tmp_path / "trav.png") as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 50                 # colour, not grey
    _ok(cli.invoke(main, ["plot", "reconstructions", str(run), "--out", str(tmp_path / "rec.png")]))
    assert (tmp_path / "rec.png").is_file()
