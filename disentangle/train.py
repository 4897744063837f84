"""Training loop of one β-VAE run: checkpoints, exact resume, divergence handling.
(Loading a trained model back is :meth:`disentangle.rundir.RunDir.load_model`.)

A run directory (``results/<run>/``) holds config.json, checkpoint.pt, model.pt,
train_log.csv and status.json. ``train(config, out_dir)`` is idempotent: a finished
run returns at once, an interrupted one resumes from its last checkpoint, and a
directory holding a different configuration is refused.

Reproducibility. A run's numbers depend only on its configuration (on one device type):
the initial weights come from ``seed``; batches are image indices drawn uniformly with
replacement (as disentanglement_lib's sampler) from a CPU ``torch.Generator``; the
reparameterisation noise comes from a second generator on the training device. Both
generator states, the optimizer state and the log are in every checkpoint, so a run
killed at any moment and started again ends with bit-identical weights.

Data path. The dataset is opened through the registry (``open_dataset(config.dataset,
config.data)``, :mod:`disentangle.data.datasets`). dSprites stays bit-packed (512 bytes per
image) in one uint8 tensor on the training device; each batch is gathered and unpacked
there with two integer ops (:class:`PackedBatches`: no DataLoader, no per-image collate,
no 3 GB float copy of the dataset). Every other dataset serves a batch with
``dataset.torch_batch(indices, device, rng)`` (:class:`DatasetBatches`): 8-bit sets read
their uint8 rows from disk (streamed, never loaded whole) and convert on the device.

Random nuisance (the colour, noise and Scream patch of the dSprites variants) is drawn
afresh for every example of every batch, as disentanglement_lib trains, from a numpy
Generator seeded from ``seed`` (the fourth word of its SeedSequence); its bit-generator
state is in every checkpoint, so a resumed run draws the same nuisance as an unbroken one.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Callable

import numpy as np

from disentangle.config import TrainConfig, differing_keys
from disentangle.devices import resolve_device, thread_limit, tune_allocator
from disentangle.errors import ParameterError, UserError
from disentangle.progress import report
from disentangle.io import WriteError, clean_stale_temps, environment_info, write_bytes_atomic, write_error
from disentangle.rundir import RunDir

CHECKPOINT_FORMAT = "disentangle-checkpoint-1"


class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- small helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the data path
class PackedBatches:
    """Serves training batches from the bit-packed dataset, on the training device.

    ``indices(n)`` draws image indices uniformly with replacement from a seeded CPU
    generator (device independent, so a run sees the same images on CPU and GPU);
    ``images(idx)`` gathers the packed rows and unpacks the bits to float32 {0, 1}
    images of shape (n, 1, 64, 64).
    """

    def __init__(self, packed: np.ndarray, device, seed: int):
        import torch
        self.device = torch.device(device)
        self.packed = torch.from_numpy(np.ascontiguousarray(packed)).to(self.device)
        self.num_images = self.packed.shape[0]
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def indices(self, n: int):
        import torch
        return torch.randint(0, self.num_images, (n,), generator=self.generator)

    def images(self, idx):
        from disentangle.data.render import unpack_to_float
        return unpack_to_float(self.packed.index_select(0, idx.to(self.device, non_blocking=True)))

    def sample(self, n: int):
        return self.images(self.indices(n))

    def rng_state(self) -> dict:
        return {"batches": self.generator.get_state()}

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["batches"])


class DatasetBatches(PackedBatches):
    """Training batches of any registered dataset: the same index draws as
    :class:`PackedBatches` (a seeded CPU torch generator), the images from
    ``dataset.torch_batch``. For a dataset with random nuisance each example's nuisance
    is drawn from ``nuisance_rng`` (numpy), whose state :meth:`rng_state` returns for the
    checkpoint."""

    def __init__(self, dataset, device, seed: int, nuisance_seed: int):
        import torch
        self.device = torch.device(device)
        self.dataset = dataset
        self.num_images = int(dataset.num_images)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.nuisance_rng = np.random.default_rng(nuisance_seed) if dataset.has_random_nuisance else None

    def images(self, idx):
        return self.dataset.torch_batch(idx.numpy(), self.device, self.nuisance_rng)

    def rng_state(self) -> dict:
        state = super().rng_state()
        if self.nuisance_rng is not None:
            # JSON text: the PCG64 state holds 128-bit integers, which torch's weights_only loader refuses
            state["nuisance"] = json.dumps(self.nuisance_rng.bit_generator.state)
        return state

    def set_rng_state(self, state: dict) -> None:
        super().set_rng_state(state)
        if self.nuisance_rng is not None:
            if "nuisance" not in state:
                raise UserError("the checkpoint holds no nuisance generator state for this dataset's random "
                                "nuisance; delete it to restart the run from step 0")
            self.nuisance_rng.bit_generator.state = json.loads(state["nuisance"])


def make_batches(dataset, device, trainer: "Trainer") -> PackedBatches:
    """The batch source of ``dataset``: dSprites' packed fast path (unchanged, so dSprites
    runs stay bit-identical to those trained before datasets were a field), else
    :class:`DatasetBatches`."""
    packed = getattr(dataset, "packed", None)
    if packed is not None and not dataset.has_random_nuisance:
        return PackedBatches(packed, device, trainer.batch_seed)
    return DatasetBatches(dataset, device, trainer.batch_seed, trainer.nuisance_seed)


def open_training_data(config: TrainConfig):
    """The run's dataset through the registry: ``config.dataset`` from ``config.data``
    (else the dataset's path rule)."""
    from disentangle.data.datasets import dataset_class, open_dataset
    dataset_class(config.dataset, config.data)       # an unknown name: one line naming --dataset
    return open_dataset(config.dataset, config.data)


# --------------------------------------------------------------------------- the step
class Trainer:
    """Model, optimizer and the per-step update of one configuration, for every method
    of the registry (:mod:`disentangle.methods`): the method's entry gives the loss
    function, the hyper-parameters it reads, its log terms and any extra trained state
    (factor-vae's discriminator), which takes part in the step and the checkpoints."""

    def __init__(self, config: TrainConfig, device, channels: int = 1):
        import torch
        from disentangle import methods as method_registry
        from disentangle.models.architectures import build_model
        self.config = config
        self.method = method_registry.get(config.method)
        self.extra_terms = self.method.log_terms
        self.loss = self.method.loss_function()
        self.device = torch.device(device)
        # generate_state is prefix-stable: the first three words are those of the runs made
        # before the fourth (the nuisance generator's seed) existed
        seeds = np.random.SeedSequence(config.seed).generate_state(4)
        self.channels = int(channels)
        self.model = build_model(config.latent_dim, config.likelihood, int(seeds[0]),
                                 config.architecture, channels=self.channels).to(self.device)
        # the likelihood as the loss reads it (a discretised one carries the model's log-scale)
        self.loss_arguments = {"likelihood": self.model.output_likelihood(),
                               **{k: getattr(config, k) for k in self.method.reads}, **self.method.loss_settings}
        # channels_last: oneDNN's (and cuDNN's) faster conv layout (docs/performance.md); the
        # state dict keeps the same names and values
        self.model.set_execution(torch.bfloat16 if config.precision == "bf16-mixed" else None,
                                 channels_last=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.batch_seed = int(seeds[1])
        self.nuisance_seed = int(seeds[3])
        self.noise_generator = torch.Generator(device=self.device)
        self.noise_generator.manual_seed(int(seeds[2]))
        state_class = self.method.state_class()
        self.state = state_class(config, self.device) if state_class is not None else None

    def step(self, x, step: int):
        """One update on batch x at 0-based step ``step``; returns the detached stats vector
        [loss, reconstruction, kl, kl_0, ..., kl_{D-1}, *extra terms of the method]."""
        import torch
        c = self.config
        noise = torch.randn((x.shape[0], c.latent_dim), generator=self.noise_generator, device=self.device)
        mean, logvar = self.model.encode(x)
        z = self.model.sample(mean, logvar, noise)
        logits = self.model.decode(z)
        inputs = self.state.loss_inputs(z) if self.state is not None else {}
        terms = self.loss(x, logits, mean, logvar, z, step, **self.loss_arguments, **inputs)
        loss = terms["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.state is None:
            loss.backward()
        else:
            self.state.backward(self.model, terms)
        self.optimizer.step()
        extras = [terms[k].detach().reshape(()).float() for k in self.extra_terms]
        return torch.cat([torch.stack([loss, terms["reconstruction"], terms["kl"]]), terms["kl_dims"],
                          torch.stack(extras) if extras else terms["kl_dims"][:0]]).detach()


def _model_record(config: TrainConfig, trainer: Trainer) -> dict:
    """config.json["model"]: which network (name and version) and how many weights."""
    from disentangle.models.architectures import ARCHITECTURE_VERSIONS, parameter_count
    record = {"architecture": config.architecture, "architecture_version": ARCHITECTURE_VERSIONS[config.architecture],
              "channels": trainer.channels, "parameters": parameter_count(trainer.model)}
    if trainer.state is not None:
        record.update(trainer.state.model_record())
    return record


# --------------------------------------------------------------------------- checkpoints
def _log_columns(latent_dim: int, extra_terms=()) -> list[str]:
    return (["step", "loss", "reconstruction", "kl", "capacity"]
            + [f"kl_{i}" for i in range(latent_dim)] + list(extra_terms) + ["img_per_s", "elapsed_s"])


def _save_checkpoint(run: RunDir, trainer: Trainer, batches: PackedBatches, step: int,
                     log_rows: list, elapsed: float, acc, acc_steps: int) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "device_type": trainer.device.type,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": {**batches.rng_state(), "noise": trainer.noise_generator.get_state()},
        **(trainer.state.state_dict() if trainer.state is not None else {}),
        "log_rows": [list(map(float, r)) for r in log_rows],
        # the open log interval, so a resumed run logs the same means
        "log_acc": acc.detach().cpu().clone(), "log_acc_steps": int(acc_steps),
        "elapsed_s": float(elapsed),
        "config": trainer.config.identity(),
    }
    _torch_save_atomic(state, run.checkpoint_path)


def _torch_save_atomic(obj, path: Path) -> None:
    """torch.save into memory, then an atomic write: torch's own file writer reports a
    full disk as "RuntimeError: ... unexpected pos"; a Python write says ENOSPC."""
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer())


def _load_checkpoint(run: RunDir, trainer: Trainer, batches: PackedBatches) -> dict:
    import torch
    path = run.checkpoint_path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a disentangle checkpoint")
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"delete it to restart the run from step 0") from None
    saved_identity = state.get("config")
    if not isinstance(saved_identity, dict):
        raise UserError(f"{path}: damaged checkpoint (no configuration record); delete it to restart the run "
                        f"from step 0")
    diff = differing_keys(saved_identity, trainer.config.identity())
    if diff:
        raise UserError(f"{path}: belongs to a run with a different configuration "
                        f"(differing: {', '.join(diff)}); delete it or choose another run directory")
    problem = _checkpoint_problem(state, trainer)
    if problem:
        raise UserError(f"{path}: damaged checkpoint ({problem}); delete it to restart the run from step 0")
    if int(state["step"]) > trainer.config.steps:
        raise ParameterError("steps", f"{path} is at step {int(state['step'])}, beyond the {trainer.config.steps} "
                             f"steps asked; give at least that many steps or delete the checkpoint",
                             value=trainer.config.steps)
    if state["device_type"] != trainer.device.type:
        raise ParameterError("device", f"{path} was written on {state['device_type']}, cannot resume "
                             f"exactly on {trainer.device.type}; resume with device {state['device_type']}",
                             value=trainer.device.type)
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        batches.set_rng_state(state["rng"])
        trainer.noise_generator.set_state(state["rng"]["noise"])
        if trainer.state is not None:
            trainer.state.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise UserError(f"{path}: damaged checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to restart the run "
                        f"from step 0") from None
    return {"step": int(state["step"]), "log_rows": [list(r) for r in state["log_rows"]],
            "elapsed_s": float(state["elapsed_s"]), "log_acc": state["log_acc"],
            "log_acc_steps": int(state["log_acc_steps"])}


def _checkpoint_problem(state: dict, trainer: Trainer) -> str | None:
    """What is wrong with a checkpoint's entries (types, keys, shapes), or None: checked
    before anything of it is loaded, so a damaged file is one line, never a traceback or
    a silently wrong resume."""
    import torch

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    step = state.get("step")
    if not is_int(step) or step < 0:
        return f"step {step!r} is not a non-negative integer"
    if not isinstance(state.get("device_type"), str):
        return "no device_type"
    for key in ("model", "optimizer", "rng", "config"):
        if not isinstance(state.get(key), dict):
            return f"{key!r} missing or not a mapping"
    rng = state["rng"]
    for key in ("batches", "noise"):
        if not isinstance(rng.get(key), torch.Tensor) or rng[key].dtype != torch.uint8:
            return f"rng[{key!r}] missing or not a generator state"
    own = trainer.model.state_dict()
    theirs = state["model"]
    if set(theirs) != set(own):
        missing, extra = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        return f"model weights {'missing ' + ', '.join(missing[:3]) if missing else ''}" \
               f"{'; ' if missing and extra else ''}{'unexpected ' + ', '.join(extra[:3]) if extra else ''}"
    for key, value in theirs.items():
        if not isinstance(value, torch.Tensor) or value.shape != own[key].shape or value.dtype != own[key].dtype:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"model weight {key} is {shape}, expected {tuple(own[key].shape)} {own[key].dtype}"
        if value.is_floating_point() and not torch.isfinite(value).all():
            return f"model weight {key} has NaN or infinite values"
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    opt = state["optimizer"]
    groups = opt.get("param_groups")
    if not isinstance(groups, list) or not isinstance(opt.get("state"), dict):
        return "optimizer state malformed"
    ids = [i for g in groups if isinstance(g, dict) for i in (g.get("params") or [])]
    if len(ids) != len(params):
        return f"optimizer holds {len(ids)} parameters, the model {len(params)}"
    shapes = dict(zip(ids, (p.shape for p in params)))
    for pid, entry in opt["state"].items():
        if pid not in shapes or not isinstance(entry, dict):
            return f"optimizer state for unknown parameter {pid!r}"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != shapes[pid]:
                return f"optimizer {name} of parameter {pid} is {tuple(value.shape)}, expected {tuple(shapes[pid])}"
    rows = state.get("log_rows")
    if not isinstance(rows, list) or not all(isinstance(r, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) for r in rows):
        return "log_rows is not a list of rows of numbers"
    width = 3 + trainer.config.latent_dim + len(trainer.extra_terms)
    acc = state.get("log_acc")
    if not isinstance(acc, torch.Tensor) or tuple(acc.shape) != (width,) or not acc.is_floating_point():
        return f"log_acc is not a float tensor of {width} values"
    if not is_int(state.get("log_acc_steps")) or state["log_acc_steps"] < 0:
        return "log_acc_steps is not a non-negative integer"
    elapsed = state.get("elapsed_s")
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool) or not math.isfinite(elapsed):
        return "elapsed_s is not a finite number"
    return None


# --------------------------------------------------------------------------- train
def _check_existing(run: RunDir, config: TrainConfig) -> dict | None:
    """Refuse a run directory that holds another configuration; return its config.json."""
    if not run.has_config():
        return None
    saved = run.saved()
    diff = differing_keys(saved["config"], config.to_dict())
    if diff:
        shown = ", ".join(f"{k} ({saved['config'].get(k)!r} there, {config.to_dict().get(k)!r} asked)" for k in diff)
        raise ParameterError("out", f"holds a run with a different configuration: {shown}; "
                             f"choose another run directory", value=run.path)
    return saved


def default_run_dir(config: TrainConfig, results_dir: str | Path = "results") -> Path:
    """results/<run name>, e.g. results/beta-vae_b4_s0 (the sweep's naming scheme,
    :func:`disentangle.config.run_name`)."""
    from disentangle.config import run_name
    return Path(results_dir) / run_name(config.to_dict())


def train(config: TrainConfig, out_dir: str | Path | None = None, progress: bool = False,
          echo: Callable[[str], None] | None = None) -> Path:
    """Train (or resume, or skip if finished) the run ``config`` in ``out_dir`` (default
    :func:`default_run_dir`); return the run directory. Raises UserError for bad
    options, a refused directory, or a diverged run (whose status.json then says
    "failed" with the reason)."""
    say = echo or (lambda msg: None)
    config.validate()
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise ParameterError("out", "exists and is not a directory", value=run_dir)
    run = RunDir(run_dir)
    run.refuse_foreign("out")   # a user's own files are never overwritten
    saved = _check_existing(run, config)
    if saved is not None and run.training_finished():
        say(f"{run_dir}: already finished ({config.steps} steps); nothing to do")
        return run_dir

    data = open_training_data(config)
    if saved is not None:
        old_sha = (saved.get("data") or {}).get("content_sha256")
        if old_sha != data.provenance["content_sha256"]:
            raise ParameterError("out", f"was trained on other data ({(saved.get('data') or {}).get('path')}, "
                                 f"sha256 {str(old_sha)[:12]}...) than {data.path}; choose another run "
                                 f"directory", value=run_dir)

    import torch
    device = torch.device(resolve_device(config.device))
    from disentangle.rundir import RunLock
    lock = RunLock(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        locked = lock.acquire(reentrant=True)
    except OSError as exc:
        raise (write_error(exc, run_dir) or exc) from None
    if not locked:
        raise ParameterError("out", f"busy: another process is working on this run ({lock.holder()}); "
                             f"wait for it or choose another run directory", value=run_dir)
    try:
        # under the lock: another process may have written the run meanwhile
        run = RunDir(run_dir)
        saved = _check_existing(run, config)
        if saved is not None and run.training_finished():
            say(f"{run_dir}: already finished ({config.steps} steps); nothing to do")
            return run_dir
        # no other writer is alive: what a killed one left half-written goes
        clean_stale_temps(run_dir)
        _train_locked(config, run, saved, data, device, progress, say)
    finally:
        lock.release()
    say(f"{run_dir}: finished ({config.steps} steps)")
    return run_dir


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _train_locked(config: TrainConfig, run: RunDir, saved: dict | None, data, device, progress: bool,
                  say: Callable[[str], None]) -> None:
    import torch
    run_dir = run.path
    try:
        allocator = tune_allocator()
        with thread_limit(config.threads) as threads:
            if device.type == "cuda":
                # exact repeatability on one GPU type: deterministic conv algorithms only
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            trainer = Trainer(config, device, channels=data.channels)
            batches = make_batches(data, device, trainer)
            resumed = None
            if run.checkpoint_path.is_file():
                # before config.json is written: a refused checkpoint leaves the directory as it was
                resumed = _load_checkpoint(run, trainer, batches)
                say(f"{run_dir}: resuming at step {resumed['step']} of {config.steps}")
            if saved is None:
                record = dict(data.provenance)
                if getattr(batches, "nuisance_rng", None) is not None:
                    record["training_nuisance"] = {"seed": trainer.nuisance_seed,
                                                   "drawn": "afresh per example (numpy PCG64)"}
                run.write_config({"config": config.to_dict(), "data": record,
                                  "package": environment_info(), "model": _model_record(config, trainer),
                                  "created": _now()})
            start = resumed["step"] if resumed else 0
            # pid and host let a sweep tell a live "running" run from one that was killed
            runtime = {"device": str(device), "threads": threads, "pid": os.getpid(),
                       "host": socket.gethostname(), "allocator": allocator}
            # a model checksum of an earlier finish no longer describes what is being trained
            run.write_status("running", step=start, runtime=runtime, model_sha256=None)
            _loop(config, run, trainer, batches, resumed, progress, runtime)
    except WriteError as exc:
        _record_failure(run, f"training failed: {exc}")
        raise
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        reason = (f"out of memory on {device} (batch_size {config.batch_size}, latent_dim "
                  f"{config.latent_dim}); use a smaller batch or model")
        _record_failure(run, f"training failed: {reason}")
        raise UserError(f"{run_dir}: {reason}") from None


def _record_failure(run: RunDir, reason: str) -> None:
    """status.json "failed" with ``reason`` (its step kept), where it can still be written."""
    if not run.config_path.is_file():
        return  # nothing of the run was written: leave the directory as it was
    with contextlib.suppress(UserError, OSError, ValueError, TypeError):
        run.write_status("failed", reason=reason)


def checks_every_step(device) -> bool:
    """Whether the loop checks every step's loss for NaN/inf. On the CPU the value is already
    on the host, so the check is free and names the exact step. On an accelerator reading
    it would synchronise the host with the device every step; there the loss is read only
    at log and checkpoint points (their accumulated sum is non-finite when any step's loss
    was), so between those points the loop issues no host synchronisation at all."""
    import torch
    return torch.device(device).type == "cpu"


def _loop(config: TrainConfig, run: RunDir, trainer: Trainer, batches: PackedBatches,
          resumed: dict | None, progress: bool, runtime: dict) -> None:
    import torch
    from disentangle.models.objectives import capacity
    columns = _log_columns(config.latent_dim, trainer.extra_terms)
    per_step_check = checks_every_step(trainer.device)
    # the capacity column: C at each step, for the methods that anneal one
    annealed = "capacity_max" in trainer.method.reads
    acc = torch.zeros(3 + config.latent_dim + len(trainer.extra_terms), dtype=torch.float64, device=trainer.device)
    start, log_rows, elapsed, acc_steps = 0, [], 0.0, 0
    if resumed is not None:
        start, log_rows, elapsed = resumed["step"], resumed["log_rows"], resumed["elapsed_s"]
        acc.copy_(resumed["log_acc"])
        acc_steps = resumed["log_acc_steps"]
    interval_start, last_good, timed_steps = time.perf_counter(), start, 0
    bar = None
    if progress:
        from disentangle.progress import bar as progress_bar   # shown only on a terminal
        bar = progress_bar(config.steps, "train", "step", initial=start, unit_scale=False)
    report("training", start, config.steps, "steps")
    try:
        for t in range(start, config.steps):
            cap = capacity(t, config.capacity_max, config.capacity_steps) if annealed else 0.0
            stats = trainer.step(batches.sample(config.batch_size), t)
            acc += stats
            acc_steps += 1
            timed_steps += 1
            done = t + 1
            log_now = done % config.log_every == 0 or done == config.steps
            ckpt_now = done % config.checkpoint_every == 0 or done == config.steps
            if per_step_check or log_now or ckpt_now:
                loss_value = float(stats[0]) if per_step_check else float(acc[0])
                if not math.isfinite(loss_value):
                    _fail(run, config, t if per_step_check else None, done, loss_value, last_good)
            if log_now:
                now = time.perf_counter()
                seconds = now - interval_start
                elapsed += seconds
                mean = (acc / acc_steps).tolist()
                log_rows.append([done, mean[0], mean[1], mean[2], cap] + mean[3:]
                                + [timed_steps * config.batch_size / max(seconds, 1e-9), elapsed])
                if bar is not None:
                    bar.set_postfix(loss=f"{mean[0]:.1f}", kl=f"{mean[2]:.2f}",
                                    img_s=f"{log_rows[-1][-2]:.0f}", refresh=False)
                    bar.update(done - bar.n)
                acc.zero_()
                acc_steps, timed_steps, interval_start = 0, 0, time.perf_counter()
                report("training", done, config.steps, "steps")
            if ckpt_now:
                _save_checkpoint(run, trainer, batches, done, log_rows, elapsed, acc, acc_steps)
                run.write_train_log(columns, log_rows)
                last_good = done
                if done < config.steps:
                    run.write_status("running", step=done, runtime=runtime)
        _torch_save_atomic({k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()},
                           run.model_path)
        run.write_status("finished", step=config.steps, runtime=runtime, model_sha256=run.model_sha256())
    finally:
        if bar is not None:
            bar.close()


def _strength_text(config: TrainConfig) -> str:
    """The method's strength as "name=value", for messages."""
    from disentangle import methods as method_registry
    key = method_registry.get(config.method).strength
    return f"{key}={getattr(config, key):g}"


def _fail(run: RunDir, config: TrainConfig, step: int | None, done: int, value: float, last_good: int):
    where = f"at step {step + 1}" if step is not None else f"by step {done}"
    kept = (f"kept the last good checkpoint (step {last_good})" if run.checkpoint_path.is_file()
            else "no checkpoint had been written")
    reason = (f"training diverged: loss is {value} {where} (lr {config.lr:g}, "
              f"{config.method} {_strength_text(config)}); {kept}")
    run.write_status("failed", step=last_good, reason=reason)
    raise TrainingDiverged(f"{run.path}: {reason}")
