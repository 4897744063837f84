"""Issue 22, the dataset-file items: a dataset file is never trusted without a check.

1. a file without content_sha256 is refused up front (train, score, evaluate before any
   encoding, data info), unless --unverified-data, which every record then shows;
2. its metadata is validated at open, one line naming the file and the attribute;
3. a file declaring more images than it stores, or than memory holds, is refused before
   anything is read.
Both file kinds: the dSprites file and the toolkit's image-set file (ImageFile)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from disentangle.data import trust
from disentangle.data.datasets import DatasetError, open_file
from disentangle.data.image_file import write_image_file
from disentangle.data.dsprites import DataError, DSpritesData
from disentangle.data.ground_truth import GroundTruth
from disentangle.io import CODES_FILE, CONFIG_FILE
from cli_checks import invoke as _invoke, one_line as _one_line


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.fixture
def unverified(tmp_path, tiny_data_path) -> Path:
    """The issue's repro: a bit flipped in images_packed and content_sha256 deleted."""
    path = tmp_path / "tiny.h5"
    shutil.copy(tiny_data_path, path)

    def damage(f):
        row = f["images_packed"][3]
        row[7] ^= 1
        f["images_packed"][3] = row
        del f.attrs["content_sha256"]
    _edit(path, damage)
    return path


_TRAIN = ["--steps", "3", "--batch-size", "8", "--latent-dim", "3", "--threads", "1", "--device", "cpu"]


# ----------------------------------------------------------------------------- 1. no checksum
def test_a_file_without_checksum_is_refused_by_every_command(tmp_path, unverified, tiny_trained_run):
    codes = tmp_path / "codes.npz"
    np.savez(codes, codes=np.random.default_rng(0).normal(size=(1536, 4)).astype(np.float32))
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns(CODES_FILE, "scores.json"))
    before = sorted(p.name for p in run.iterdir())
    for args in (["train", "--out", tmp_path / "new", "--data", unverified, *_TRAIN],
                 ["score", codes, "--out", tmp_path / "scored", "--data", unverified, "--metric", "mig"],
                 ["evaluate", run, "--metric", "mig", "--data", unverified],
                 ["data", "info", unverified],
                 ["sweep", "--results", tmp_path / "study", "--data", unverified, "--beta", "1", "--seeds", "0",
                  "--steps", "3", "--metric", "mig"]):
        line = _one_line(_invoke(*args))
        assert str(unverified.name) in line and "no content_sha256" in line and "--unverified-data" in line, line
    # nothing written: no run directory, no scores, no codes table, no study
    assert not (tmp_path / "new").exists() and not (tmp_path / "scored").exists()
    assert not (tmp_path / "study").exists()
    assert sorted(p.name for p in run.iterdir()) == before and not (run / CODES_FILE).exists()


def test_unverified_data_is_explicit_and_recorded(tmp_path, unverified):
    out = tmp_path / "run"
    result = _invoke("train", "--out", out, "--data", unverified, *_TRAIN, "--unverified-data")
    assert result.exit_code == 0, result.output
    data = json.loads((out / CONFIG_FILE).read_text())["data"]
    assert data["content_check"] == "unverified"
    # the identity recorded is the images as read (with the flipped bit), not nothing
    packed = h5py.File(unverified, "r")["images_packed"][...]
    import hashlib
    assert data["content_sha256"] == hashlib.sha256(packed.tobytes()).hexdigest()
    # evaluate without the flag: refused before encoding; with it: scored and recorded
    _one_line(_invoke("evaluate", out, "--metric", "mig", "--data", unverified))
    assert not (out / CODES_FILE).exists()
    result = _invoke("evaluate", out, "--metric", "mig", "--data", unverified, "--unverified-data")
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "scores.json").read_text())["mig"]
    assert entry["data"]["content_check"] == "unverified" and entry["data"]["matches_training_data"] is True
    # shown by data info and the report
    result = _invoke("data", "info", unverified, "--unverified-data")
    assert result.exit_code == 0 and "content_check:    unverified" in result.output, result.output
    result = _invoke("report", tmp_path, "--format", "csv")
    assert result.exit_code == 0 and "unverified" in result.output, result.output


def test_a_verified_file_records_no_content_check(tiny_data):
    assert "content_check" not in tiny_data.provenance
    # the flag changes nothing for a file with its checksum
    with trust.accept_unverified():
        assert DSpritesData(tiny_data.path).provenance == tiny_data.provenance


def test_the_sweep_carries_the_flag_to_its_jobs(tmp_path, unverified):
    from disentangle.sweep import Study, run_sweep
    study = Study().with_overrides(grid={"beta": [1.0], "seed": [0]},
                                   fixed={"steps": 3, "batch_size": 8, "latent_dim": 3, "threads": 1},
                                   metrics=("mig",), eval_seed=None)
    with trust.accept_unverified():
        result = run_sweep(study, tmp_path / "study", data=str(unverified), device="cpu", report=False,
                           echo=lambda s: None)
    assert result.count("done") == 1, result.outcomes
    (run,) = [p for p in (tmp_path / "study").iterdir() if p.is_dir()]
    assert json.loads((run / CONFIG_FILE).read_text())["data"]["content_check"] == "unverified"
    assert json.loads((run / "scores.json").read_text())["mig"]["data"]["content_check"] == "unverified"
    study_record = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study_record["sweeps"][-1]["unverified_data"] is True


# ----------------------------------------------------------------------------- 2. metadata
def _set_attr(key, value):
    return lambda f: f.attrs.__setitem__(key, value)


def _replace(key, data):
    def edit(f):
        del f[key]
        if isinstance(data, str) and data == "group":
            f.create_group(key)
        else:
            f.create_dataset(key, data=data)
    return edit


def _latents(key, fn):
    def edit(f):
        a = f[key][...]
        fn(a)
        del f[key]
        f.create_dataset(key, data=a)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set_attr("factor_names", 5), "attribute factor_names is 5, expected JSON text"),
    (_set_attr("factor_names", "null"), "factor_names is None, expected a list of factor names"),
    (_set_attr("factor_names", json.dumps(["shape", "scale", "orientation", "pos_x"])), "names 4 factors"),
    (_set_attr("factor_names", json.dumps(["shape", 1, "orientation", "pos_x", "pos_y"])), "expected a list of"),
    (_set_attr("factor_values", "[[1, 2, 3], [0.5], [0], [0], []]"), "factor_values[4]"),
    (_set_attr("factor_values", "[[1, 2, 3], [0.5, NaN], [0, 1, 2, 3], [0], [0]]"), "factor_values[1]"),
    (_set_attr("factor_values", "[" * 100000 + "]" * 100000), "factor_values is not valid JSON"),
    (_set_attr("official_classes", "[[0, 1, 2], [0, 5], [0, 5, 10, 40], [0, 4, 8, 12, 16, 20, 24, 28], "
                                   "[0, 4, 8, 12, 16, 20, 24, 28]]"), "official_classes[2]"),
    (_set_attr("source", 3), "attribute source is 3, expected a string"),
    (_set_attr("source", "mine"), "expected 'official' or 'rendered'"),
    (_set_attr("renderer_version", np.arange(3)), "attribute renderer_version"),
    (_set_attr("content_sha256", "abc"), "content_sha256 is 'abc', not a sha256"),
    (_replace("images_packed", "group"), "images_packed is an HDF5 group, expected an array"),
    (_replace("images_packed", np.array([b"x" * 512] * 1536)), "images_packed has dtype"),
    (_replace("images_packed", np.zeros((1536, 512), np.int64)), "images_packed has dtype int64"),
    (_replace("images_packed", np.zeros((1535, 512), np.uint8)), "images_packed has shape (1535, 512)"),
    (_latents("latents_classes", lambda a: a.__setitem__((100, 3), 39)), "latents_classes row 100"),
    (_latents("latents_values", lambda a: a.__setitem__((7, 2), np.nan)), "latents_values holds a value that is not finite"),
    (_replace("latents_classes", np.zeros((1536, 5), np.int64)), "latents_classes has shape (1536, 5)"),
    (_replace("latents_classes", np.zeros((1536, 6), np.float64)), "latents_classes has dtype float64"),
])
def test_dsprites_metadata_is_validated_at_open(tmp_path, tiny_data_path, edit, message):
    path = tmp_path / "bad.h5"
    shutil.copy(tiny_data_path, path)
    _edit(path, edit)
    with pytest.raises(DataError) as info:
        DSpritesData(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)
    line = _one_line(_invoke("train", "--out", tmp_path / "run", "--data", path, *_TRAIN))
    assert message in line and not (tmp_path / "run").exists()


def _image_set(path: Path, sizes=(3, 2, 4), n_nuisance=2, checksum=True) -> Path:
    from disentangle.data.ground_truth import Nuisance
    gt = GroundTruth(("floor_hue", "wall_hue", "object_hue"), tuple(np.linspace(0, 1, s) for s in sizes),
                     nuisance=(Nuisance("instance", "uniform over 2", n_nuisance),) if n_nuisance else ())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (gt.num_images, 64, 64, 3), dtype=np.uint8)
    write_image_file(path, "shapes3d", gt, 3, [images], {"source": "official"})
    if not checksum:
        _edit(path, lambda f: f.attrs.__delitem__("content_sha256"))
    return path


def _gt_edit(fn):
    def edit(f):
        d = json.loads(f.attrs["ground_truth"])
        fn(d)
        f.attrs["ground_truth"] = json.dumps(d)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set_attr("ground_truth", 5), "attribute ground_truth is 5, expected JSON text"),
    (_set_attr("ground_truth", "[1, 2]"), "expected dict or null"),
    (_gt_edit(lambda d: d.__setitem__("factor_names", 5)), "ground_truth.factor_names is 5"),
    (_gt_edit(lambda d: d.__setitem__("factor_names", None)), "ground_truth.factor_names is None"),
    (_gt_edit(lambda d: d["factor_values"][0].__setitem__(0, "x")), "ground_truth.factor_values[0]"),
    (_gt_edit(lambda d: d["nuisance"][0].__setitem__("size", -1)), "ground_truth.nuisance[0]"),
    (_set_attr("source", 7), "attribute source is 7, expected a string"),
    (_set_attr("source_files", "{\"a\": 1}"), "attribute source_files"),
    (_set_attr("content_sha256", 12), "content_sha256 is 12"),
    (_replace("images", "group"), "images is an HDF5 group"),
    (_replace("images", np.zeros((48, 64, 64, 3), np.float32)), "images has dtype float32"),
    (_replace("factor_classes", np.zeros((48, 3), np.int64)), "factor_classes has shape (48, 3)"),
    (_latents("factor_classes", lambda a: a.__setitem__((5, 0), 7)), "factor_classes row 5"),
    (_latents("factor_values", lambda a: a.__setitem__((9, 1), np.inf)), "factor_values holds a value that is not"),
])
def test_image_set_metadata_is_validated_at_open(tmp_path, edit, message):
    path = _image_set(tmp_path / "set.h5")
    _edit(path, edit)
    with pytest.raises(DatasetError) as info:
        open_file(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)
    line = _one_line(_invoke("train", "--out", tmp_path / "run", "--dataset", "shapes3d", "--data", path, *_TRAIN))
    assert message in line and not (tmp_path / "run").exists()


def test_image_set_without_checksum(tmp_path):
    path = _image_set(tmp_path / "set.h5", checksum=False)
    with pytest.raises(DatasetError, match="no content_sha256 attribute.*--unverified-data"):
        open_file(path)
    with trust.accept_unverified():
        ds = open_file(path)
    try:
        assert ds.provenance["content_check"] == "unverified"
        want = _image_set(tmp_path / "same.h5")   # the same images, checksum kept
        assert ds.provenance["content_sha256"] == h5py.File(want, "r").attrs["content_sha256"]
    finally:
        ds.close()
    result = _invoke("data", "info", path, "--unverified-data")
    assert result.exit_code == 0 and "unverified" in result.output, result.output


# ----------------------------------------------------------------------------- 3. declared sizes
def test_a_forged_image_count_is_refused_before_reading(tmp_path, monkeypatch):
    """An image set whose grid and /images declare 73.7 M images in a small file."""
    path = _image_set(tmp_path / "set.h5", n_nuisance=0)

    def forge(f):
        gt = json.loads(f.attrs["ground_truth"])
        gt["factor_values"] = [list(np.linspace(0, 1, s)) for s in (96, 96, 8000)]   # 73,728,000 images
        gt["official_classes"] = None
        f.attrs["ground_truth"] = json.dumps(gt)
        del f["images"]
        f.create_dataset("images", shape=(73_728_000, 64, 64, 3), dtype=np.uint8, chunks=(1, 64, 64, 3))
    _edit(path, forge)
    assert path.stat().st_size < 10_000_000
    read = []
    monkeypatch.setattr(trust, "rows_match_grid", lambda *a, **k: read.append(a))   # nothing is read
    with pytest.raises(DatasetError, match=r"images declares 73,728,000 rows .* stores 0 of its 73,728,000 chunks"):
        open_file(path)
    assert not read


def test_dsprites_images_declared_but_not_stored(tmp_path, tiny_data_path):
    path = tmp_path / "hollow.h5"
    shutil.copy(tiny_data_path, path)

    def hollow(f):   # declared, never written
        del f["images_packed"]
        f.create_dataset("images_packed", shape=(1536, 512), dtype=np.uint8, chunks=(512, 512))
    _edit(path, hollow)
    with pytest.raises(DataError, match="images_packed declares 1,536 rows of 512 .* stores 0 of its 3 chunks"):
        DSpritesData(path)


def test_more_images_than_memory_is_refused_before_reading(tmp_path, tiny_data_path, monkeypatch):
    import disentangle.io
    monkeypatch.setattr(disentangle.io, "available_memory_bytes", lambda: 100_000)
    with pytest.raises(DataError, match=r"images_packed declares 1,536 images \(0.000786 GB in memory\), more "
                                        r"than the 0.0001 GB of memory available"):
        DSpritesData(tiny_data_path)
