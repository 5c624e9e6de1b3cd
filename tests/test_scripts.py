"""The experiment scripts: the paper's full protocol as a dry run (every path checked, every
command printed and parseable by its entry point), and the set-up script's no-op second run."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from engine.config import parse_config
from engine.nc_eval import NC_DEFAULTS, NC_TYPES
from engine.ood_eval import OOD_DEFAULTS, OOD_TYPES
from engine.trainer import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from engine.transfer import TRANSFER_DEFAULTS, TRANSFER_TYPES

ROOT = Path(__file__).resolve().parents[1]
PATH_VARS = ["DATA_DIR", "NINCO_DIR", "IMAGENET_R_DIR", "CIFAR100_DIR", "FLOWERS_DIR", "CUB_DIR", "AIRCRAFT_DIR",
             "PETS_DIR", "STL10_DIR"]
PARSERS = {
    "pretrain.py": dict(defaults=PRETRAIN_DEFAULTS, types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES),
    "eval_nc.py": dict(defaults=NC_DEFAULTS, types=NC_TYPES),
    "eval_ood.py": dict(defaults=OOD_DEFAULTS, types=OOD_TYPES),
    "train_lp.py": dict(defaults=TRANSFER_DEFAULTS, types=TRANSFER_TYPES),
}


def dry_run(tmp_path, drop=None):
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS + ["NPROC", "ARCH", "EXPT_NAME"]}
    for var in PATH_VARS:
        (tmp_path / var).mkdir(exist_ok=True)
        env[var] = str(tmp_path / var)
    (tmp_path / "DATA_DIR" / "train").mkdir(exist_ok=True)
    (tmp_path / "DATA_DIR" / "val").mkdir(exist_ok=True)
    if drop:
        env[drop] = str(tmp_path / "nowhere")
    return subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_reproduce_paper_dry_run_prints_every_command_and_each_parses(tmp_path):
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 5 * 2 * 4
    entries = [next(Path(a).name for a in cmd if a.endswith(".py")) for cmd in commands]
    assert entries == ["pretrain.py", "eval_nc.py", "eval_ood.py", "train_lp.py"] * 10
    archs = []
    for cmd, entry in zip(commands, entries):
        argv = cmd[[i for i, a in enumerate(cmd) if a.endswith(entry)][0] + 1:]
        cfg = parse_config(argv=argv, **PARSERS[entry])
        if entry == "pretrain.py":
            archs.append((cfg.arch, cfg.alpha, cfg.output_dim, cfg.hidden_mlp))
            assert "torch.distributed.run" in cmd and "--nproc_per_node=4" in cmd
        else:
            assert os.path.basename(cfg.ckpt[0]).split("_in100_")[0] == archs[-1][0]
            assert cfg.dataset == "imagenet100" and cfg.data == str(tmp_path / "DATA_DIR")
        if entry == "eval_ood.py":
            assert len(cfg.ood) == 8
        if entry == "train_lp.py":
            assert len(cfg.transfer) == 8
    assert archs == [("vgg17", 0.0, 0, 0), ("vgg17", 0.05, 512, 2048), ("resnet18", 0.0, 0, 0),
                     ("resnet18", 0.05, 512, 2048), ("resnet34", 0.0, 0, 0), ("resnet34", 0.05, 512, 2048),
                     ("vit_tiny", 0.0, 0, 0), ("vit_tiny", 0.05, 192, 768), ("vit_small", 0.0, 0, 0),
                     ("vit_small", 0.05, 384, 1536)]


@pytest.mark.parametrize("var", ["STL10_DIR", "DATA_DIR"])
def test_reproduce_paper_dry_run_names_a_missing_path(tmp_path, var):
    result = dry_run(tmp_path, drop=var)
    assert result.returncode == 1 and result.stdout == ""
    assert f"missing: {var}=" in result.stderr


def test_setup_second_run_is_a_quick_no_op():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    again = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and again.stdout == ""
