"""Experiment tracking: each epoch's log record, also written to TensorBoard and/or Weights & Biases.

The JSON-lines log ``<save_dir>/<ckpt stem>.log.jsonl`` is always written and is the source of
truth; ``pretrain.py --logger tensorboard wandb`` (either or both; ``jsonl`` is accepted and
changes nothing) writes the same numbers through the libraries' own writers, on rank 0 only:

- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files in
  ``<save_dir>/tensorboard/<ckpt stem>/`` (``tensorboard --logdir <save_dir>/tensorboard``);
- ``wandb``: ``wandb.init`` / ``run.log``, files under ``<save_dir>/wandb/``, in ``offline`` mode
  unless the environment variable ``WANDB_MODE`` says otherwise (``online`` after ``wandb login``);
  the project is ``WANDB_PROJECT`` (default ``nc-ood``); the run's id is kept in
  ``<save_dir>/<ckpt stem>.wandb_id`` so a resumed run continues the same wandb run.

The step of every scalar is the record's ``epoch`` (1, 2, ...). Scalar names (:func:`scalar_name`)
end in the JSON-lines key:

==================================================  ===========================================
JSON-lines key                                      scalar name
==================================================  ===========================================
``loss``, ``ce_loss``, ``ent_loss``, ``lr``,        ``train/<key>`` (``train/loss``, ...)
``img_per_s``, ``seconds``
``train_<x>``, ``val_<x>``                          ``train/<x>``, ``val/<x>`` (``train/acc1``,
                                                    ``val/acc1``)
a key holding ``/`` (the collapse monitor's         the key itself (``nc1/encoder``,
``<metric>/<layer>``)                               ``vci/projector``)
any other number (the monitor's                     ``monitor/<key>`` (``monitor/clean_train_acc1``,
``clean_train_acc1``, ``auroc_<set>``, ...)         ``monitor/auroc_<set>``)
==================================================  ===========================================

``epoch`` is the step, and values that are not numbers (``resumed``) are not scalars.

Resuming: a resumed run continues the same logs at the same steps. TensorBoard gets a new event
file that starts with a purge marker at the first resumed epoch (``SummaryWriter(purge_step=)``),
so TensorBoard drops whatever a killed run wrote past its last checkpoint; a fresh run removes the
event files of the run it replaces. A logger that holds nothing of an earlier run (added on
resume, or a new ``--save_dir``) first receives the records of the epochs already trained.
"""
from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Iterable

from core.errors import UserError
from core.io import atomic_write_text

LOGGERS = ("jsonl", "tensorboard", "wandb")
TRAIN_KEYS = ("loss", "ce_loss", "ent_loss", "lr", "img_per_s", "seconds")
STEP_KEY = "epoch"
EVENT_PREFIX = "events.out.tfevents."
WANDB_PROJECT = "nc-ood"
# what each logger needs, and how to get it (both pinned in requirements.txt)
REQUIRES = {"tensorboard": ("tensorboard", "the pinned requirements: .venv/bin/pip install -r requirements.txt"),
            "wandb": ("wandb", ".venv/bin/pip install wandb==0.31.0 (pinned in requirements.txt)")}


def scalar_name(key: str) -> str:
    """The TensorBoard / wandb name of a log record's key (the table in the module doc)."""
    if "/" in key:
        return key
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return f"train/{key}" if key in TRAIN_KEYS else f"monitor/{key}"


def scalars(record: dict) -> dict[str, float]:
    """The record's numbers under their scalar names (the step ``epoch`` and non-numbers left out)."""
    return {scalar_name(k): float(v) for k, v in record.items()
            if k != STEP_KEY and isinstance(v, (int, float)) and not isinstance(v, bool)}


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_loggers(names: Iterable[str]) -> list[str]:
    """The loggers to open besides the JSON-lines log (which is always written), checked before any
    file is written: an unknown name, or a logger whose package is missing, is a one-line error."""
    chosen = []
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"--logger {name!r} is not a logger; choose from {', '.join(LOGGERS)} (several may be "
                            f"given, e.g. --logger tensorboard wandb)")
        if name in REQUIRES and not module_available(REQUIRES[name][0]):
            raise UserError(f"--logger {name} needs the {REQUIRES[name][0]} package, which is not installed; "
                            f"install it with {REQUIRES[name][1]}")
        if name != "jsonl" and name not in chosen:
            chosen.append(name)
    return chosen


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(EVENT_PREFIX + "*")) if folder.is_dir() else []


class TensorBoardLog:
    """Scalars into TensorBoard event files in ``<save_dir>/tensorboard/<stem>/``."""

    def __init__(self, save_dir: Path, stem: str, start_epoch: int, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = save_dir / "tensorboard" / stem
        earlier = event_files(self.folder)
        if start_epoch == 0:  # a fresh run replaces whatever an earlier run of this name left
            for path in earlier:
                path.unlink()
            earlier = []
        self.continues = bool(earlier)
        self.writer = SummaryWriter(str(self.folder), purge_step=start_epoch + 1 if self.continues else None)

    def write(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    """Scalars into a Weights & Biases run under ``<save_dir>/wandb/`` (offline unless ``WANDB_MODE``)."""

    def __init__(self, save_dir: Path, stem: str, start_epoch: int, config: dict) -> None:
        import wandb

        id_file = save_dir / f"{stem}.wandb_id"
        self.continues = start_epoch > 0 and id_file.is_file()
        run_id = id_file.read_text(encoding="utf-8").strip() if self.continues else secrets.token_hex(6)
        if not self.continues:
            atomic_write_text(id_file, run_id + "\n")
        mode = os.environ.get("WANDB_MODE") or "offline"
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT,
                                  name=f"{config.get('expt_name', 'run')}/{stem}", id=run_id, resume="allow",
                                  dir=str(save_dir), config=config, mode=mode)
        except Exception as exc:  # noqa: BLE001 - e.g. online without a login: one line, not a traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"--logger wandb could not start a run in {mode} mode ({first}); log in with "
                            f"'wandb login', or unset WANDB_MODE to log offline under {save_dir / 'wandb'}") from None

    def write(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": TensorBoardLog, "wandb": WandbLog}


class Tracker:
    """The loggers of one run (see the module doc): :meth:`log` each epoch's record, then :meth:`close`."""

    def __init__(self, backends: list) -> None:
        self.backends = backends

    @classmethod
    def open(cls, names: Iterable[str], save_dir: str | Path, stem: str, *, config: dict,
             history: list[dict] = (), start_epoch: int = 0) -> "Tracker":
        """Open the loggers ``names`` (checked by :func:`check_loggers`) for the run ``stem`` in
        ``save_dir`` starting after ``start_epoch`` epochs; a logger that holds nothing of the
        epochs already trained first gets ``history``, their records."""
        save_dir = Path(save_dir)
        backends = []
        try:
            for name in check_loggers(names):
                backend = BACKENDS[name](save_dir, stem, start_epoch, config)
                backends.append(backend)
                if not backend.continues:
                    for record in history:
                        backend.write(scalars(record), int(record[STEP_KEY]))
        except BaseException:
            cls(backends).close()
            raise
        return cls(backends)

    def log(self, record: dict) -> None:
        values = scalars(record)
        for backend in self.backends:
            backend.write(values, int(record[STEP_KEY]))

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []
