"""Issue 22: the second hostile-input round. Each test reproduces one item of the issue
and asserts the one-line error AND that the user's files are byte-identical afterwards.

Section 1 first (a user's files are never changed unless named, never through a link)."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from disentangle.errors import UserError
from disentangle.io import CONFIG_FILE, LOCK_FILE, LOG_FILE, SCORES_FILE, STATUS_FILE
from cli_checks import file_hashes, invoke as _invoke, one_line as _one_line


def _hashes(root: Path) -> dict[str, str]:
    return file_hashes(root, directories=False)


ROOT = Path(__file__).resolve().parents[1]


def _train_args(out, data):
    return ["train", "--out", out, "--data", data, "--steps", "3", "--batch-size", "8", "--latent-dim", "3",
            "--threads", "1"]


@pytest.fixture
def codes_npz(tmp_path, tiny_data):
    rng = np.random.default_rng(0)
    path = tmp_path / "codes.npz"
    np.savez(path, codes=rng.normal(size=(tiny_data.num_images, 4)).astype(np.float32))
    return path


# ----------------------------------------------------------------------------- 1. never a user's file
def test_train_refuses_a_users_directory_and_leaves_no_lock(tmp_path, tiny_data_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in (("model.pt", "my weights"), ("train_log.csv", "a,b\n1,2\n"),
                       (STATUS_FILE, '{"mine": true}')):
        (mine / name).write_text(text)
    before = _hashes(mine)
    line = _one_line(_invoke(*_train_args(mine, tiny_data_path)))
    assert "--out" in line and "not a disentangle run directory" in line and "nothing was written" in line
    assert _hashes(mine) == before
    assert not (mine / LOCK_FILE).exists()


def test_score_refuses_a_users_directory(tmp_path, tiny_data_path, codes_npz):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / SCORES_FILE).write_text('{"my": 1}')
    before = _hashes(mine)
    line = _one_line(_invoke("score", codes_npz, "--out", mine, "--data", tiny_data_path, "--metric", "mig"))
    assert "not a disentangle run directory" in line
    assert _hashes(mine) == before and not (mine / LOCK_FILE).exists()


def test_an_empty_or_new_directory_still_trains(tmp_path, tiny_data_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _invoke(*_train_args(empty, tiny_data_path))
    assert result.exit_code == 0, result.output
    assert (empty / CONFIG_FILE).is_file()


@pytest.mark.parametrize("name", [CONFIG_FILE, SCORES_FILE, STATUS_FILE])
def test_report_out_never_replaces_a_runs_own_file(run_dir, name):
    study = run_dir.parent
    if not (run_dir / name).exists():
        (run_dir / name).write_text("{}\n")
    before = _hashes(study)
    line = _one_line(_invoke("report", study, "--out", run_dir / name))
    assert f"is the {name} of run" in line
    assert _hashes(study) == before


def test_atomic_write_never_renames_over_a_device_fifo_or_directory(tmp_path):
    from disentangle.io import WriteError, write_text_atomic
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside").write_text("kept")
    targets = [fifo, folder]
    if os.geteuid() == 0:   # a character device like /dev/null (mknod needs root)
        dev = tmp_path / "null"
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        targets.append(dev)
    for target in targets:
        mode = os.lstat(target).st_mode
        with pytest.raises(WriteError, match="not a regular file"):
            write_text_atomic(target, "x")
        assert os.lstat(target).st_mode == mode
    assert (folder / "inside").read_text() == "kept"
    assert not list(tmp_path.glob(".*.tmp"))


def test_render_out_a_device_or_fifo_is_refused_before_rendering(tmp_path):
    fifo = tmp_path / "x"
    os.mkfifo(fifo)
    line = _one_line(_invoke("data", "render", "--out", fifo, "--keep", "scale=0:1", "--keep", "orientation=0:1"))
    assert "a FIFO, not a regular file" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_plot_out_pdf_leaves_a_users_png_alone(run_dir, tmp_path, tiny_data_path):
    png = tmp_path / "fig1.png"
    png.write_bytes(b"my own figure")
    before = png.read_bytes()
    result = _invoke("plot", "training", run_dir, "--out", tmp_path / "fig1.pdf")
    assert result.exit_code == 0, result.output
    assert png.read_bytes() == before
    assert (tmp_path / "fig1.pdf").read_bytes()[:5] == b"%PDF-"
    assert "left" in result.output and "fig1.png alone" in result.output
    # a figure the toolkit wrote is its own: rewritten as before
    result = _invoke("plot", "training", run_dir, "--out", tmp_path / "fig2.png")
    assert result.exit_code == 0 and (tmp_path / "fig2.pdf").is_file()
    pdf_before = (tmp_path / "fig2.pdf").stat().st_mtime_ns
    result = _invoke("plot", "training", run_dir, "--out", tmp_path / "fig2.png")
    assert result.exit_code == 0 and "alone" not in result.output
    assert (tmp_path / "fig2.pdf").stat().st_mtime_ns >= pdf_before


def test_fetch_never_touches_a_users_download_npz(tmp_path):
    """The official download goes to a unique temporary name: a user's X.h5.download.npz
    survives a failed fetch (here: nothing listens on the URL)."""
    mine = tmp_path / "X.h5.download.npz"
    mine.write_bytes(b"my archive")
    result = _invoke("data", "fetch", "dsprites", "--out", tmp_path / "X.h5", "--url", "http://127.0.0.1:9/none")
    _one_line(result)
    assert mine.read_bytes() == b"my archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.h5.download.npz"]
    # --keep-npz would have to replace it: refused up front
    line = _one_line(_invoke("data", "fetch", "dsprites", "--out", tmp_path / "X.h5", "--keep-npz",
                             "--url", "http://127.0.0.1:9/none"))
    assert "never replaces a file" in line and mine.read_bytes() == b"my archive"


def test_a_linked_lock_is_never_written_through(run_dir, tmp_path, tiny_data_path, tiny_trained_run):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (run_dir / LOCK_FILE).unlink(missing_ok=True)
    os.symlink(notes, run_dir / LOCK_FILE)
    (run_dir / "model.pt").unlink()   # interrupted: train resumes it, under the lock
    for args in (["train", "--out", run_dir, "--data", tiny_data_path, "--steps", "20", "--batch-size", "16",
                  "--latent-dim", "6", "--beta", "4", "--threads", "1", "--log-every", "10",
                  "--checkpoint-every", "20"],):
        line = _one_line(_invoke(*args))
        assert "symbolic link" in line, line
        assert notes.read_text() == "my notes\n"
    # evaluate takes the same lock
    import shutil
    shutil.copy(Path(str(tiny_trained_run)) / "model.pt", run_dir / "model.pt")
    line = _one_line(_invoke("evaluate", run_dir, "--metric", "mig", "--data", tiny_data_path))
    assert "symbolic link" in line and notes.read_text() == "my notes\n"


def test_a_linked_sweep_log_is_never_appended_to(run_dir, tmp_path):
    from disentangle.rundir import RunDir
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    os.symlink(notes, run_dir / LOG_FILE)
    RunDir(run_dir).append_log("a line")          # best effort: dropped, not written through
    with pytest.raises(UserError, match="symbolic link"):
        RunDir(run_dir).open_log_fd()
    assert notes.read_text() == "my notes\n"


def test_score_into_an_out_scored_from_another_file_is_refused(tmp_path, tiny_data, tiny_data_path, codes_npz):
    out = tmp_path / "scored"
    assert _invoke("score", codes_npz, "--out", out, "--data", tiny_data_path, "--metric", "mig").exit_code == 0
    other = tmp_path / "other.npz"
    np.savez(other, codes=np.random.default_rng(1).normal(size=(tiny_data.num_images, 4)).astype(np.float32))
    before = _hashes(out)
    line = _one_line(_invoke("score", other, "--out", out, "--data", tiny_data_path, "--metric", "mig"))
    assert "holds the scores of another codes file" in line
    assert _hashes(out) == before


def test_score_takes_the_run_lock(tmp_path, tiny_data_path, codes_npz):
    import subprocess
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import time; from disentangle.rundir import RunLock; "
                               f"assert RunLock({str(out)!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _one_line(_invoke("score", codes_npz, "--out", out, "--data", tiny_data_path, "--metric", "mig"))
        assert "busy" in line
        assert not (out / CONFIG_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- 2. empty options
@pytest.mark.parametrize("args", [["train", "--out", ""], ["report", ".", "--out", ""],
                                  ["evaluate", ".", "--data", ""], ["data", "fetch", "dsprites", "--url="]])
def test_an_empty_option_value_is_an_error(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    line = _one_line(_invoke(*args))
    assert "must not be empty" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 2. checkpoints
def _tampered_checkpoint(run_dir: Path, change) -> None:
    import torch
    path = run_dir / "checkpoint.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, path)
    (run_dir / "model.pt").unlink()   # interrupted: the next train resumes from the checkpoint


_RESUME = ["--steps", "20", "--batch-size", "16", "--latent-dim", "6", "--beta", "4", "--threads", "1",
           "--log-every", "10", "--checkpoint-every", "20", "--seed", "0"]


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


def _drop(key):
    return lambda state: state.pop(key)


def _reshape_weight(state):
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key].flatten()[:3].clone()


@pytest.mark.parametrize("change, message", [
    (_set("step", 1_000_000), "step 1000000, beyond the 20 steps asked"),
    (_drop("optimizer"), "'optimizer' missing"),
    (_drop("log_acc"), "log_acc is not a float tensor"),
    (_set("step", "20"), "step '20' is not a non-negative integer"),
    (_set("log_rows", "oops"), "log_rows is not a list"),
    (_reshape_weight, "model weight"),
    (_set("rng", {"batches": 1, "noise": 2}), "not a generator state"),
])
def test_a_damaged_checkpoint_is_one_line_before_any_training(run_dir, tiny_data_path, change, message):
    _tampered_checkpoint(run_dir, change)
    before = _hashes(run_dir)
    line = _one_line(_invoke("train", "--out", run_dir, "--data", tiny_data_path, *_RESUME))
    assert "checkpoint.pt" in line and message in line, line
    after = _hashes(run_dir)
    after.pop(str(run_dir / LOCK_FILE), None)
    before.pop(str(run_dir / LOCK_FILE), None)
    assert after == before


@pytest.mark.parametrize("name", ["checkpoint.pt", "model.pt", SCORES_FILE])
def test_a_run_file_that_is_a_directory_is_refused_before_training(tmp_path, tiny_data_path, name):
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    line = _one_line(_invoke(*_train_args(out, tiny_data_path)))
    assert f"{name}: cannot write: it exists and is a directory" in line
    assert sorted(p.name for p in out.iterdir()) == [name]


# ----------------------------------------------------------------------------- 2. codes.h5
@pytest.mark.parametrize("damage, reason", [
    ("int64 zeros", "dtype int64"),
    ("nan", "checksum differs"),
    ("edited", "checksum differs"),
])
def test_a_tampered_codes_table_is_rebuilt_not_reused(run_dir, tiny_data, damage, reason):
    import h5py

    from disentangle.evaluation.codes import codes_state, get_codes
    first = get_codes(run_dir, tiny_data, progress=False)
    assert codes_state(run_dir, tiny_data) == "fresh"
    with h5py.File(run_dir / "codes.h5", "r+") as f:   # the attributes (stamps) stay intact
        mean = f["mean"][...]
        del f["mean"]
        if damage == "int64 zeros":
            f.create_dataset("mean", data=np.zeros(mean.shape, np.int64))
        elif damage == "nan":
            mean[3, 1] = np.nan
            f.create_dataset("mean", data=mean)
        else:
            f.create_dataset("mean", data=np.zeros_like(mean))
    assert reason in codes_state(run_dir, tiny_data)
    again = get_codes(run_dir, tiny_data, progress=False)
    assert again.built and np.array_equal(again.mean, first.mean)
    assert codes_state(run_dir, tiny_data) == "fresh"


# ----------------------------------------------------------------------------- 2/4. score
@pytest.mark.parametrize("setting, message", [
    ("steps=-5", "--setting steps=-5: must be >= 1"),
    ("architecture=resnet9000", "unknown architecture 'resnet9000'"),
    ("latent_dim=5", "has 4 columns"),
    ("beta=nan", "--setting beta=nan: must be a finite number"),
])
def test_score_settings_are_validated_as_the_configuration_is(tmp_path, tiny_data_path, codes_npz, setting, message):
    out = tmp_path / "scored"
    line = _one_line(_invoke("score", codes_npz, "--out", out, "--data", tiny_data_path, "--metric", "mig",
                             "--setting", setting))
    assert message in line, line
    assert not out.exists()


def _huge_npy(path: Path, shape) -> Path:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 64)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d, n: _huge_npy(d / "c.npy", (n, 10 ** 9)), "declares 1,000,000,000 columns"),
    (lambda d, n: _huge_npy(d / "c.npy", (10 ** 9, 4)), "has 1,000,000,000 rows"),
    (lambda d, n: (np.save(d / "c.npy", np.full((n, 4), 1e300)), d / "c.npy")[1], "infinite values (as float32)"),
    (lambda d, n: (np.savez(d / "c.npz", codes=np.zeros((n, 4), "f4"), logvar=np.full((n, 4), 800.0, "f4")),
                   d / "c.npz")[1], "logvar reaches 800"),
    (lambda d, n: ((d / "c.npy").write_bytes(b""), d / "c.npy")[1], "unreadable codes file"),
])
def test_a_codes_file_is_checked_before_it_is_read(tmp_path, tiny_data, tiny_data_path, make, message):
    codes = make(tmp_path, tiny_data.num_images)
    before = _hashes(tmp_path)
    line = _one_line(_invoke("score", codes, "--out", tmp_path / "scored", "--data", tiny_data_path,
                             "--metric", "mig"))
    assert message in line, line
    assert _hashes(tmp_path) == before and not (tmp_path / "scored").exists()


# ----------------------------------------------------------------------------- 4. sizes and ranges
@pytest.mark.parametrize("param, message", [
    ("mig.num_train=3000000000", "at most 10,000,000"),
    ("beta_vae.num_train=10000000", "must be at most 200,000,000 images drawn"),
    ("dci.num_test=99999999999", "at most 10,000,000"),
])
def test_sample_counts_are_bounded_and_say_by_what(tmp_path, tiny_data_path, codes_npz, param, message):
    line = _one_line(_invoke("score", codes_npz, "--out", tmp_path / "s", "--data", tiny_data_path,
                             "--param", param))
    assert f"--param {param.split('=')[0]}" in line and message in line, line
    assert not (tmp_path / "s").exists()


def test_sample_bounds_keep_the_published_defaults():
    from disentangle.evaluation.metrics import METRICS
    for name, spec in METRICS.items():
        spec.params()   # every default passes


@pytest.mark.parametrize("keep, message", [
    ("scale=0:10000000000", "need 0 <= START < STOP <= 6"),
    ("orientation=0:40:0", "STEP must be a positive integer"),
    ("scale=0,99", "not 99"),
    ("colour=0:1", "unknown factor 'colour'"),
])
def test_render_keep_ranges_are_checked_before_building_lists(tmp_path, keep, message):
    import time
    t0 = time.perf_counter()
    result = _invoke("data", "render", "--out", tmp_path / "x.h5", "--keep", keep)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output
    assert time.perf_counter() - t0 < 5 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make, message", [
    (lambda d: Path("/dev/zero"), "not a regular file"),
    (lambda d: (d / "big.toml").write_text("# x\n" * 300_000) and d / "big.toml", "larger than 1024 KiB"),
    (lambda d: (d / "dt.toml").write_text("[grid]\nbeta = [1979-05-27]\n") and d / "dt.toml", "grid.beta[0]: a TOML date"),
    (lambda d: (d / "deep.toml").write_text("[grid]\nbeta = " + "[" * 100_000 + "]" * 100_000 + "\n")
     and d / "deep.toml", "nested too deeply"),
])
def test_a_sweep_spec_is_bounded_and_regular(tmp_path, tiny_data_path, make, message):
    spec = make(tmp_path)
    line = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--spec", spec, "--data", tiny_data_path))
    assert message in line, line
    assert not (tmp_path / "r").exists()


def test_deeply_nested_json_is_one_line(run_dir, tiny_data_path):
    (run_dir / SCORES_FILE).write_text("[" * 100_000 + "]" * 100_000)
    result = _invoke("report", run_dir.parent)   # the report warns about the run and goes on
    assert "Traceback" not in result.output and result.exception is None, result.output
    assert "scores.json: unreadable scores file (nested too deeply)" in result.output
    (run_dir / CONFIG_FILE).write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    line = _one_line(_invoke("evaluate", run_dir, "--metric", "mig", "--data", tiny_data_path))
    assert "config.json" in line and "nested too deeply" in line, line


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "-1 is not in the range"),
    (["--span", "nan"], "must be a finite number"),
    (["--span", "inf"], "not in the range"),
    (["--images", "100000"], "not in the range"),
])
def test_plot_option_ranges(run_dir, tiny_data_path, tmp_path, args, message):
    result = _invoke("plot", "traversal", run_dir, "--data", tiny_data_path, "--out", tmp_path / "t.png", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.png").exists()


def test_report_group_by_a_score_column_is_one_line(run_dir):
    from disentangle.evaluation.score import score_codes  # noqa: F401  (import check only)
    (run_dir / SCORES_FILE).write_text(json.dumps({"mig": {"values": {"discrete_mig": 0.1}}}))
    line = _one_line(_invoke("report", run_dir.parent, "--format", "csv", "--group-by", "mig.discrete_mig"))
    assert "--group-by" in line and "is a score column" in line, line


def test_report_to_a_full_or_closed_stdout_is_one_line(run_dir, tmp_path):
    import subprocess
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for redirect in (">/dev/full", ">&-"):
        proc = subprocess.run(["bash", "-c", f'exec "$@" {redirect}', "_", sys.executable, "-m", "disentangle",
                               "report", str(run_dir.parent), "--format", "csv"],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]) == 1, proc.stderr
