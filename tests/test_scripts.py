"""The experiment scripts: the paper's full protocol as a dry run (every path checked, every
command printed and parseable by its entry point), and the set-up script's no-op second run."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data import parse_spec
from core.config import parse_config
from evaluate.nc import NC_DEFAULTS, NC_TYPES
from evaluate.ood import OOD_DEFAULTS, OOD_TYPES
from train.options import PRETRAIN_ALIASES, PRETRAIN_DEFAULTS, PRETRAIN_TYPES
from evaluate.transfer import TRANSFER_DEFAULTS, TRANSFER_TYPES

ROOT = Path(__file__).resolve().parents[1]
PATH_VARS = ["DATA_DIR", "NINCO_DIR", "IMAGENET_R_DIR", "CIFAR100_DIR", "FLOWERS_DIR", "CUB_DIR", "AIRCRAFT_DIR",
             "PETS_DIR", "STL10_DIR"]
PARSERS = {
    "pretrain.py": dict(defaults=PRETRAIN_DEFAULTS, types=PRETRAIN_TYPES, aliases=PRETRAIN_ALIASES),
    "eval_nc.py": dict(defaults=NC_DEFAULTS, types=NC_TYPES),
    "eval_ood.py": dict(defaults=OOD_DEFAULTS, types=OOD_TYPES),
    "train_lp.py": dict(defaults=TRANSFER_DEFAULTS, types=TRANSFER_TYPES),
}


PROTOCOL_VARS = ["CKPT", "CKPT_WHICH", "PRECISION", "ENC_LAYER", "PROJ_RAW", "CIFAR_STATS", "LAYERS"]
SUBFOLDERS = {"DATA_DIR": ["train", "val"], "IMAGENET_R_DIR": ["train", "test"], "CUB_DIR": ["train", "test"]}


def script_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS + PROTOCOL_VARS + ["NPROC", "ARCH", "EXPT_NAME"]}
    for var in PATH_VARS:
        (tmp_path / var).mkdir(exist_ok=True)
        env[var] = str(tmp_path / var)
        for sub in SUBFOLDERS.get(var, []):
            (tmp_path / var / sub).mkdir(exist_ok=True)
    return {**env, **extra}


def dry_run(tmp_path, drop=None, **extra):
    env = script_env(tmp_path, **extra)
    if drop:
        env[drop] = str(tmp_path / "nowhere")
    return subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def parsed_commands(stdout: str) -> list[tuple[str, object]]:
    """(entry point, its parsed config) for every command a dry run printed."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("#"):
            continue
        cmd = shlex.split(line)
        entry = next(Path(a).name for a in cmd if a.endswith(".py"))
        argv = cmd[[i for i, a in enumerate(cmd) if a.endswith(entry)][0] + 1:]
        out.append((entry, parse_config(argv=argv, **PARSERS[entry])))
    return out


def test_reproduce_paper_dry_run_prints_every_command_and_each_parses(tmp_path):
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 5 * 2 * 4
    parsed = parsed_commands(result.stdout)
    assert [entry for entry, _ in parsed] == ["pretrain.py", "eval_nc.py", "eval_ood.py", "train_lp.py"] * 10
    archs = []
    for cmd, (entry, cfg) in zip(commands, parsed):
        if entry == "pretrain.py":
            archs.append((cfg.arch, cfg.alpha, cfg.output_dim, cfg.hidden_mlp))
            assert "torch.distributed.run" in cmd and "--nproc_per_node=4" in cmd
        else:
            assert os.path.basename(cfg.ckpt[0]).split("_in100_")[0] == "best_" + archs[-1][0]
            assert cfg.dataset == "imagenet100" and cfg.data == str(tmp_path / "DATA_DIR")
        if entry == "eval_ood.py":
            assert len(cfg.ood) == 8
        if entry == "train_lp.py":
            assert len(cfg.transfer) == 8
    assert archs == [("vgg17", 0.0, 0, 0), ("vgg17", 0.05, 512, 2048), ("resnet18", 0.0, 0, 0),
                     ("resnet18", 0.05, 512, 2048), ("resnet34", 0.0, 0, 0), ("resnet34", 0.05, 512, 2048),
                     ("vit_tiny", 0.0, 0, 0), ("vit_tiny", 0.05, 192, 768), ("vit_small", 0.0, 0, 0),
                     ("vit_small", 0.05, 384, 1536)]


def test_the_paper_scripts_run_the_official_evaluation_protocol(tmp_path):
    """Hook points, the best checkpoint, float32 extraction and the official OOD splits (docs/FIDELITY.md)."""
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    parsed = parsed_commands(result.stdout)
    arch = None
    for entry, cfg in parsed:
        if entry == "pretrain.py":
            arch, vit = cfg.arch, cfg.arch.startswith("vit")
            continue
        ckpt = Path(cfg.ckpt[0])
        assert ckpt.name.startswith("best_") and ckpt.parent.name == arch   # best_<ckpt_file> of the run
        assert cfg.precision == "float32"
        encoder = "encoder" if vit else "last_conv"
        if entry == "eval_nc.py":
            assert cfg.probe and cfg.probe_epochs == 30 and cfg.splits == ["train"]
            assert cfg.layers == ([encoder, "projector"] if vit else [encoder, "projector_raw"])
            assert cfg.probe_features == ([] if vit else ["projector_raw=projector"])
        if entry == "train_lp.py":
            assert cfg.layers == ([encoder, "projector"] if vit else [encoder, "projector_raw"])
            assert cfg.test_splits == ["flowers102=val"]
            specs = {parse_spec(text).label: parse_spec(text) for text in cfg.transfer}
        if entry == "eval_ood.py":
            assert cfg.layers == [encoder, "projector"] and cfg.scorers == ["energy"] and cfg.logits == "probe"
            assert cfg.ood_splits == ["flowers102=val"]
            specs = {parse_spec(text).label: parse_spec(text) for text in cfg.ood}
        if entry in ("train_lp.py", "eval_ood.py"):
            assert specs["ninco"].options == {"root": str(tmp_path / "NINCO_DIR"), "holdout": 0.2}
            assert specs["imagenet_r"].options == {"root": str(tmp_path / "IMAGENET_R_DIR")}  # its train/ and test/
            assert specs["cifar100"].options.get("stats", "imagenet") == ("imagenet" if vit else "own")
            assert {s.name for s in specs.values()} == {"imagefolder", "cifar100", "flowers102", "aircraft", "pets",
                                                        "stl10"}
    assert arch == "vit_small"


def test_protocol_variables_choose_the_last_checkpoint_precision_and_our_encoder(tmp_path):
    env = script_env(tmp_path, DRY_RUN="1", CKPT_WHICH="last", PRECISION="bfloat16", ENC_LAYER="encoder",
                     ARCH="resnet34")
    for script in ("nc_eval_resnet_nc.sh", "ood_det_resnet_nc.sh", "train_lp_resnet_nc.sh"):
        result = subprocess.run(["bash", str(ROOT / "scripts" / script)], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        ((entry, cfg),) = parsed_commands(result.stdout)
        assert Path(cfg.ckpt[0]).name == "resnet34_in100_nc.pth" and cfg.precision == "bfloat16"
        assert cfg.layers[0] == "encoder"
    env["LAYERS"] = "layer3 encoder.layer4.1.conv1 encoder"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "ood_det_vgg.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    ((_, cfg),) = parsed_commands(result.stdout)
    assert cfg.layers == ["layer3", "encoder.layer4.1.conv1", "encoder"]
    env["CKPT_WHICH"] = "first"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "ood_det_vgg.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "error: CKPT_WHICH must be best or last, got 'first'"


@pytest.mark.parametrize("var", ["STL10_DIR", "DATA_DIR"])
def test_reproduce_paper_dry_run_names_a_missing_path(tmp_path, var):
    result = dry_run(tmp_path, drop=var)
    assert result.returncode == 1 and result.stdout == ""
    assert f"missing: {var}=" in result.stderr


def test_reproduce_paper_dry_run_needs_the_official_imagenet_r_split(tmp_path):
    env = script_env(tmp_path)
    (tmp_path / "IMAGENET_R_DIR" / "test").rmdir()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert "IMAGENET_R_DIR=" in result.stderr and "has no test/ class folders" in result.stderr


def test_setup_second_run_is_a_quick_no_op():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    again = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and again.stdout == ""


def test_every_paper_command_resolves_to_the_recipe_of_before_the_recipes_were_files(tmp_path):
    """The ten pretraining recipes moved from bash variables into configs/paper/*.yaml: every command of the
    dry run resolves, value by value, to the configuration the scripts gave before (tests/fixtures)."""
    before = json.loads((ROOT / "tests" / "fixtures" / "paper_commands.json").read_text())
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]
    now = parsed_commands(result.stdout)
    assert len(now) == len(before) == 40
    for cmd, (entry, cfg), old in zip(lines, now, before):
        assert entry == old["entry"]
        assert [a for a in cmd if a.startswith("--nproc_per_node")] == old["launcher"]
        values = json.loads(json.dumps({k: v for k, v in vars(cfg).items() if k != "config"}).replace(str(tmp_path),
                                                                                                      "<TMP>"))
        assert {k: values.get(k) for k in old["config"]} == old["config"], entry
        added = {k: v for k, v in values.items() if k not in old["config"]}  # flags added since: their defaults
        assert added == json.loads(json.dumps({k: PARSERS[entry]["defaults"][k] for k in added})), entry
    recipes = [a for cmd in lines for a, b in zip(cmd, cmd[1:]) if a == "--config" and "paper" in b]
    assert len(recipes) == 10  # every pretraining command reads its recipe file


def test_print_config_prints_the_resolved_recipe_and_one_place_sets_the_vit_s_lr(tmp_path):
    recipe = ROOT / "configs" / "paper" / "vit_small_nc.yaml"
    out = subprocess.run([sys.executable, str(ROOT / "pretrain.py"), "--config", str(recipe), "--print_config"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert (printed["arch"], printed["lr"], printed["lr_base_batch"], printed["batch_size"]) == ("vit_small", 4e-4, 512, 1024)
    assert (printed["alpha"], printed["output_dim"], printed["hidden_mlp"], printed["repeated_aug"]) == (0.05, 384, 1536, 3)
    lr_files = [p.name for p in (ROOT / "configs" / "paper").glob("*.yaml")
                if "lr" in (yaml.safe_load(p.read_text()) or {}) and "vit_small" in p.name]
    assert lr_files == ["vit_small_baseline.yaml"]  # the NC run inherits it: one place for the ViT-S lr


def test_a_retired_recipe_variable_is_refused_with_the_file_and_the_flag(tmp_path):
    env = script_env(tmp_path, DRY_RUN="1", LR="0.02")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "pretrain_vgg_nc.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("error: LR is not read any more: the recipe is configs/paper/vgg17_nc.yaml; "
                                     "pass --lr 0.02 or edit the file")
    env = script_env(tmp_path, DRY_RUN="1", ALPHA="0.2", NORM="bn", BS="256", EXPT_NAME="mine")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "pretrain_resnet_nc.sh"), "--epochs", "3"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    ((entry, cfg),) = parsed_commands(result.stdout)
    assert (cfg.alpha, cfg.norm, cfg.batch_size, cfg.epochs, cfg.ckpt_file) == (0.2, "bn", 256, 3, "mine.pth")
    assert (cfg.output_dim, cfg.lr) == (512, 0.01)  # the rest is the recipe file's
