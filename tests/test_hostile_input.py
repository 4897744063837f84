"""Issue 12: hostile input, full disks, dead parents. Each test failed before its fix.

The full-disk and read-only cases mount a 2 MB tmpfs / a read-only bind mount, which
needs root and a kernel that allows it; elsewhere they skip with the reason."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from disentangle import sweep as sw
from disentangle.cli import main as cli
from disentangle.config import TrainConfig
from disentangle.errors import UserError
from disentangle.io import CHECKPOINT_FILE, CODES_FILE, CONFIG_FILE, STATUS_FILE, TRAIN_LOG_FILE

ROOT = Path(__file__).resolve().parents[1]


def _config(data, **kw) -> TrainConfig:
    base = dict(beta=4.0, steps=20, batch_size=16, seed=0, data=str(data), device="cpu", threads=1,
                log_every=10, checkpoint_every=10, latent_dim=6)
    base.update(kw)
    return TrainConfig(**base)


def _one_line(result) -> str:
    """A CLI failure: exit 1, one line, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- mounts
def _mount(*args) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a tmpfs / read-only bind mount")
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} refused here: {proc.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs; fill(free_bytes) leaves about that much space."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt))

    def fill(free_bytes: int = 0) -> None:
        st = os.statvfs(mnt)
        avail = st.f_bavail * st.f_frsize - free_bytes
        with open(mnt / "filler", "wb") as fh:
            if avail > 0:
                fh.write(b"\0" * avail)
    yield mnt, fill
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def read_only(tmp_path):
    """``(src, ro)``: ro is a read-only bind mount of src (write into src, read via ro)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    _mount("--bind", str(src), str(ro))
    proc = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["umount", "-l", str(ro)], check=False)
        pytest.skip(f"read-only remount refused here: {proc.stderr.strip()}")
    yield src, ro
    subprocess.run(["umount", "-l", str(ro)], check=False)


# ----------------------------------------------------------------------------- 2. sweep options
def test_sweep_options_that_fail_every_run_are_refused_up_front(tmp_path, tiny_data_path):
    results = tmp_path / "study"
    study = sw.Study(grid={"beta": [1.0]}, fixed={"steps": 2, "batch_size": 8, "latent_dim": 3})
    with pytest.raises(UserError, match="--eval-seed: must be a non-negative integer, got -1"):
        sw.run_sweep(dataclasses.replace(study, eval_seed=-1), results, data=str(tiny_data_path), device="cpu", report=False, echo=lambda m: None)
    with pytest.raises(UserError, match="--eval-seed"):
        study.with_overrides(eval_seed=-1)
    spec = tmp_path / "s.toml"
    spec.write_text('[grid]\nbeta = [1]\n[evaluate]\nseed = -3\n')
    with pytest.raises(UserError, match=r"s.toml: \[evaluate\] seed: must be a non-negative integer, got -3"):
        sw.load_spec(spec)
    import torch
    if not torch.cuda.is_available():
        from disentangle.cli import user_message
        with pytest.raises(UserError) as refused:
            sw.run_sweep(study, results, data=str(tiny_data_path), device="cuda", report=False,
                         echo=lambda m: None)
        assert "--device cuda" in user_message(refused.value)
    assert not results.exists()  # nothing started, so nothing is marked failed


# ----------------------------------------------------------------------------- 3. full disk, read-only
def test_train_on_a_full_disk_fails_in_one_line_and_marks_the_run_failed(small_disk, tiny_data_path):
    small_disk, fill = small_disk
    out = small_disk / "run"
    fill(64 * 1024)  # room for config/status, not for a checkpoint
    with pytest.raises(UserError) as info:
        from disentangle.train import train
        train(_config(tiny_data_path), out)
    msg = str(info.value)
    assert "no space left on device" in msg and str(out) in msg and "\n" not in msg
    status = json.loads((out / STATUS_FILE).read_text())
    assert status["state"] == "failed" and "no space left on device" in status["reason"]
    assert not (out / CHECKPOINT_FILE).exists() and _temps(small_disk) == []


def test_render_evaluate_on_a_full_disk_fail_in_one_line(small_disk, tiny_data_path, tiny_trained_run):
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    from disentangle.evaluation.evaluate import evaluate_run
    small_disk, fill = small_disk
    run = small_disk / "run"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns(CODES_FILE, "scores.json",
                                                                          "checkpoint.pt"))
    fill(0)
    gt = GroundTruth.dsprites().subgrid({"orientation": [0, 5], "pos_x": range(0, 32, 2), "pos_y": range(0, 32, 2)})
    with pytest.raises(UserError, match="no space left on device"):
        render_dataset(small_disk / "d.h5", gt)
    with pytest.raises(UserError, match=f"{run / CODES_FILE}: cannot write: no space left on device"):
        evaluate_run(run, metrics=["mig"], data=str(tiny_data_path), progress=False)
    assert not (small_disk / "d.h5").exists() and not (run / CODES_FILE).exists() and _temps(small_disk) == []


def test_read_only_paths_fail_in_one_line(read_only, tiny_data_path, tiny_trained_run):
    src, ro = read_only
    shutil.copytree(tiny_trained_run, src / "run")
    before = {p.name: p.read_bytes() for p in (src / "run").iterdir() if p.is_file()}
    runner = CliRunner()
    for args in (["train", "--out", str(ro / "new"), "--data", str(tiny_data_path), "--steps", "2",
                  "--batch-size", "8", "--latent-dim", "3", "--device", "cpu"],
                 ["report", str(ro), "--out", str(ro / "t.md")],
                 ["plot", "training", str(ro / "run"), "--out", str(ro / "f.png")],
                 ["sweep", "--results", str(ro / "study"), "--beta", "1", "--steps", "2", "--data",
                  str(tiny_data_path), "--device", "cpu"]):
        result = runner.invoke(cli, args)
        line = _one_line(result)
        assert "read-only file system" in line and str(ro) in line, line
    assert runner.invoke(cli, ["report", str(ro)]).exit_code == 0  # reading it is fine
    after = {p.name: p.read_bytes() for p in (src / "run").iterdir() if p.is_file()}
    assert after == before and _temps(src) == []


# ----------------------------------------------------------------------------- 4. dataset checksum
def test_a_flipped_bit_in_the_images_is_refused(tmp_path, tiny_data_path):
    import h5py

    from disentangle.data.dsprites import DSpritesData
    from disentangle.train import train
    bad = tmp_path / "flipped.h5"
    shutil.copy(tiny_data_path, bad)
    with h5py.File(bad, "r+") as f:
        row = f["images_packed"][7]
        row[100] ^= 0b00010000
        f["images_packed"][7] = row
    with pytest.raises(UserError, match="does not match the file's content_sha256"):
        DSpritesData(bad)
    with pytest.raises(UserError, match="flipped.h5: images_packed does not match"):
        train(_config(bad), tmp_path / "run")
    assert "does not match" in _one_line(CliRunner().invoke(cli, ["data", "info", str(bad)]))
    assert not (tmp_path / "run" / CONFIG_FILE).exists()
    DSpritesData(tiny_data_path)  # the intact file still loads


# ----------------------------------------------------------------------------- 5. orphans
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead; it only waits for init to reap it


def test_workers_die_with_a_sigkilled_sweep(tmp_path, tiny_data_path):
    results = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "disentangle", "sweep", "--results", str(results), "--beta", "1,2",
           "--steps", "1000000", "--batch-size", "8", "--latent-dim", "3", "--data", str(tiny_data_path),
           "--device", "cpu", "--jobs", "2", "--threads-per-job", "1", "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    logs = [results / name / sw.LOG_FILE for name in ("beta-vae_b1_s0", "beta-vae_b2_s0")]
    deadline = time.monotonic() + 120
    try:
        while not all(p.is_file() and p.read_text().startswith("---") for p in logs):
            assert proc.poll() is None and time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)   # never leave a million-step sweep behind
        raise
    pids = [int(p.read_text().split()[3]) for p in logs]
    assert all(_alive(pid) for pid in pids)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [pid for pid in pids if _alive(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers outlived their sweep"
    for p in logs:
        assert "Traceback" not in p.read_text()


def test_a_rerun_says_it_found_an_interrupted_run(run_dir):
    status = json.loads((run_dir / STATUS_FILE).read_text())
    status.update(state="running", runtime={"pid": 999999})
    (run_dir / STATUS_FILE).write_text(json.dumps(status))
    (run_dir / "model.pt").unlink()
    config = json.loads((run_dir / CONFIG_FILE).read_text())["config"]
    out = sw.execute_run({"name": run_dir.name, "run_dir": str(run_dir), "config": config,
                          "metrics": ["mig"], "eval_seed": 0})
    assert out["result"] == "done", out
    assert "found interrupted at step 20 (its process 999999 is gone); resumed from step 20" in out["action"]


# ----------------------------------------------------------------------------- 6. spec values
@pytest.mark.parametrize("text,message", [
    (b'[grid]\nbeta = ["abc"]\n', r"s.toml: --beta: must be a finite number, got 'abc'"),
    (b'[grid]\nbeta = [1]\n[evaluate]\nseed = "x"\n', r"s.toml: \[evaluate\] seed: must be a non-negative integer"),
    (b'[grid]\nbeta = [1]\n[fixed]\nsteps = "x"\n', r"s.toml: --steps: must be an integer"),
    (b'[grid]\nbeta = [1]\n# \xff\xfe\n', r"--spec .*s.toml: not UTF-8 text"),
])
def test_malformed_spec_values_are_one_line(tmp_path, text, message):
    spec = tmp_path / "s.toml"
    spec.write_bytes(text)
    result = CliRunner().invoke(cli, ["sweep", "--spec", str(spec), "--results", str(tmp_path / "r"), "--dry-run"])
    import re
    assert re.search(message, _one_line(result)), result.output


# ----------------------------------------------------------------------------- 7. malformed run files
def test_non_numeric_train_log_is_one_line(run_dir):
    (run_dir / TRAIN_LOG_FILE).write_text("step,loss,kl\n10,abc,1.0\n")
    line = _one_line(CliRunner().invoke(cli, ["plot", "training", str(run_dir), "--out", str(run_dir / "f.png")]))
    assert "train_log.csv: non-numeric values in column(s) loss" in line


def test_codes_with_wrong_columns_are_rebuilt_not_reused(run_dir, tiny_data):
    from disentangle.evaluation.codes import codes_state, get_codes, write_codes
    from disentangle.io import file_sha256
    n = tiny_data.num_images
    write_codes(run_dir / CODES_FILE, np.zeros((n, 2)), np.zeros((n, 2)),
                model_sha256=file_sha256(run_dir / "model.pt"), data=tiny_data, batch_size=1, device="cpu",
                encode_seconds=0.0)
    assert codes_state(run_dir, tiny_data).startswith("stale: 2 columns, the run has 6")
    codes = get_codes(run_dir, tiny_data, progress=False)
    assert codes.built and codes.shape == (n, 6)
    assert codes_state(run_dir, tiny_data) == "fresh"


# ----------------------------------------------------------------------------- 8. sizes
@pytest.mark.parametrize("option,value", [("--latent-dim", "100000000"), ("--batch-size", "100000000"),
                                          ("--threads", "100000")])
def test_unreasonable_sizes_are_refused_in_one_line(tmp_path, tiny_data_path, option, value):
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "run"), "--data", str(tiny_data_path),
                                      option, value])
    assert _one_line(result).startswith(f"Error: {option}: must be")
    assert not (tmp_path / "run").exists()


def test_huge_seed_range_is_refused_before_expanding(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--seeds", "0-100000000", "--results", str(tmp_path / "r"),
                                      "--dry-run"])
    assert "at most 100,000 runs" in _one_line(result)
    with pytest.raises(UserError, match="the grid has 1,000,000 points"):
        sw.expand(sw.Study(grid={"seed": list(range(1000)), "beta": [float(b) for b in range(1, 1001)]}))


def test_out_of_memory_is_one_line_and_status_failed(tmp_path, tiny_data_path, monkeypatch):
    import torch

    from disentangle import train as tr

    def oom(self, x, cap):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
    monkeypatch.setattr(tr.Trainer, "step", oom)
    with pytest.raises(UserError, match=r"out of memory on cpu \(batch_size 16"):
        tr.train(_config(tiny_data_path), tmp_path / "run")
    status = json.loads((tmp_path / "run" / STATUS_FILE).read_text())
    assert status["state"] == "failed" and "out of memory" in status["reason"]


# ----------------------------------------------------------------------------- 9. stale temporaries
def test_stale_temporaries_are_cleaned_by_the_next_train_and_evaluate(run_dir, tiny_data_path):
    from disentangle.evaluation.evaluate import evaluate_run
    from disentangle.train import train
    names = ["checkpoint.pt", "model.pt", "status.json", "train_log.csv", "codes.h5", "scores.json"]
    old = time.time() - 3600
    for name in names:
        p = run_dir / f".{name}.ab12cd34.tmp"
        p.write_bytes(b"half")
        os.utime(p, (old, old))
    fresh = run_dir / ".codes.h5.zz99yy88.tmp"  # a live evaluate may be writing this one
    fresh.write_bytes(b"live")
    evaluate_run(run_dir, metrics=["mig"], data=str(tiny_data_path), progress=False)
    assert _temps(run_dir) == [fresh]
    # a run that trains again (here: from its checkpoint) cleans under its lock as well
    (run_dir / ".model.pt.qq11rr22.tmp").write_bytes(b"half")
    (run_dir / "model.pt").unlink()
    status = json.loads((run_dir / STATUS_FILE).read_text())
    (run_dir / STATUS_FILE).write_text(json.dumps({**status, "state": "running"}))
    cfg = json.loads((run_dir / CONFIG_FILE).read_text())["config"]
    train(TrainConfig.from_dict({**cfg, "data": str(tiny_data_path)}), run_dir)
    assert _temps(run_dir) == [fresh]


# ----------------------------------------------------------------------------- 10. smaller ones
def test_foreign_checkpoint_refusal_writes_no_config(run_dir, tmp_path, tiny_data_path):
    from disentangle.train import train
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(run_dir / CHECKPOINT_FILE, other / CHECKPOINT_FILE)
    with pytest.raises(UserError, match="belongs to a run with a different configuration"):
        train(_config(tiny_data_path, beta=1.0), other)
    assert not (other / CONFIG_FILE).exists() and not (other / STATUS_FILE).exists()


def test_no_dataset_found_names_the_runs_missing_file(run_dir, tmp_path, monkeypatch):
    from disentangle.evaluation.evaluate import evaluate_run
    cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    cfg["data"]["path"] = str(tmp_path / "gone.h5")
    (run_dir / CONFIG_FILE).write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISENTANGLE_DATA", raising=False)
    with pytest.raises(UserError, match=r"the dataset it trained on, .*gone.h5, is gone, and no dataset found"):
        evaluate_run(run_dir, metrics=["mig"], progress=False)


def test_convert_npz_never_edits_its_output_after_the_rename(tmp_path, monkeypatch):
    import h5py

    from disentangle.data import dsprites
    from disentangle.data.ground_truth import GroundTruth
    sys.path.insert(0, str(Path(__file__).parent))
    from test_dsprites import SMALL_GRID, _write_official_npz
    gt = GroundTruth.dsprites().subgrid(SMALL_GRID)
    npz = _write_official_npz(tmp_path / "o.npz", gt)
    modes = []
    real = h5py.File

    def spy(name, mode="r", *a, **kw):
        modes.append(mode)
        return real(name, mode, *a, **kw)
    monkeypatch.setattr(h5py, "File", spy)
    out = dsprites.convert_npz(npz, tmp_path / "o.h5", source_checksum="md5:x")
    monkeypatch.setattr(h5py, "File", real)
    assert "r+" not in modes and "a" not in modes
    data = dsprites.DSpritesData(out)
    assert data.attrs["pos_y_top"] and "pos_y_class0_mean_row" in data.attrs


def test_two_trains_on_one_out_do_not_both_train(run_dir, tmp_path, tiny_data_path):
    target = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import time; from disentangle.sweep import RunLock; "
                               f"assert RunLock({str(target)!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(cli, ["train", "--out", str(target), "--data", str(tiny_data_path),
                                          "--steps", "2", "--batch-size", "8", "--latent-dim", "3"])
        assert "busy: another process is working on this run (pid" in _one_line(result)
        assert not (target / CONFIG_FILE).exists()
    finally:
        holder.kill()
        holder.wait()
