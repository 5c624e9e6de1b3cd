"""The experiment scripts: the paper's full protocol as a dry run (every data folder's files checked,
every command printed and parseable by its entry point), the set-up script's no-op second run, and
every script's usage, arguments and environment variables."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data import parse_spec
from scripts.smoke_data import write_smoke_datasets
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
CHAIN_VARS = ["NPROC", "NNODES", "ARCH", "ARCHS", "EXPT_NAME", "DRY_RUN", "WORK_DIR", "DEVICE", "PRETRAIN_FLAGS",
              "EVAL_FLAGS", "SMOKE_DIR", "OUT_DIR", "SAVE_DIR", "WORKERS"]


def script_env(tmp_path, **extra):
    """The environment of a paper script: each data folder variable names a tiny copy of its dataset
    (scripts/smoke_data.py) at tmp_path/<VAR>."""
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS + PROTOCOL_VARS + CHAIN_VARS}
    missing = {var: tmp_path / var for var in PATH_VARS if not (tmp_path / var).exists()}
    if missing:
        write_smoke_datasets(folders=missing)
    return {**env, **{var: str(tmp_path / var) for var in PATH_VARS}, **extra}


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    """(tmp folder, result) of one `reproduce_paper.sh --dry-run` over tiny data folders, shared by the tests
    that read its commands."""
    tmp_path = tmp_path_factory.mktemp("dry_run")
    return tmp_path, dry_run(tmp_path)


def dry_run(tmp_path, **extra):
    env = script_env(tmp_path, **extra)
    return subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def command_lines(stdout: str, entries=tuple(PARSERS)) -> list[str]:
    """The printed commands of ``entries`` (comment lines and the final summarize.py left out)."""
    return [line for line in stdout.splitlines()
            if not line.startswith("#") and any(f"/{entry} " in f"{line} " for entry in entries)]


def parsed_commands(stdout: str) -> list[tuple[str, object]]:
    """(entry point, its parsed config) for every pretraining and evaluation command a dry run printed."""
    out = []
    for line in command_lines(stdout):
        cmd = shlex.split(line)
        entry = next(Path(a).name for a in cmd if a.endswith(".py"))
        argv = cmd[[i for i, a in enumerate(cmd) if a.endswith(entry)][0] + 1:]
        out.append((entry, parse_config(argv=argv, **PARSERS[entry])))
    return out


def test_reproduce_paper_dry_run_prints_every_command_and_each_parses(paper_dry_run):
    tmp_path, result = paper_dry_run
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in command_lines(result.stdout)]
    assert len(commands) == 5 * 2 * 4
    summary = shlex.split(result.stdout.splitlines()[-1])   # then Table 1 of the ten models
    assert summary[1].endswith("summarize.py") and summary[-2:] == ["--out_dir", "./results/paper"]
    assert summary[3:-2] == [f"./results/{arch}_in100_{v}" for arch in ("vgg17", "resnet18", "resnet34", "vit_tiny",
                                                                     "vit_small") for v in ("baseline", "nc")]
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


def test_the_paper_scripts_run_the_official_evaluation_protocol(paper_dry_run):
    """Hook points, the best checkpoint, float32 extraction and the official OOD splits (docs/FIDELITY.md)."""
    tmp_path, result = paper_dry_run
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


# (variable, what is taken out of its folder (NINCO: the images of one class folder), what its line must say)
DATA_PROBLEMS = [
    ("IMAGENET_R_DIR", "test", "has split folders ['train'] but no test or val/"),
    ("CIFAR100_DIR", "cifar-100-python/test", "has no test; put the CIFAR-100 python version"),
    ("FLOWERS_DIR", "imagelabels.mat", "has no imagelabels.mat; put the Oxford 102 Flowers files"),
    ("NINCO_DIR", "beta", "beta holds no image files"),
    ("DATA_DIR", "val", "has no val; put ImageNet class folders named by wnid"),
    ("PETS_DIR", "annotations/test.txt", "has no annotations/test.txt"),
]


def test_the_dry_run_looks_inside_each_data_folder_and_names_what_belongs_there(tmp_path):
    """Every data folder is read by its dataset's reader: a missing folder, split, class folder's images or
    split file is one line `missing: VAR=DIR: ...` each, and nothing runs."""
    env = script_env(tmp_path, STL10_DIR=str(tmp_path / "nowhere"))
    for var, taken, _ in DATA_PROBLEMS:
        target = tmp_path / var / taken
        if var == "NINCO_DIR":
            for image in target.iterdir():
                image.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh"), "--dry-run"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    problems = [line for line in result.stderr.splitlines() if line.startswith("missing:")]
    for var, _, says in DATA_PROBLEMS + [("STL10_DIR", None, "stl10_binary/class_names.txt")]:
        folder = env[var]
        mine = [line for line in problems if line.startswith(f"missing: {var}={folder}: ")]
        assert mine and any(says in line for line in mine), (var, problems)
    assert {line.split("=")[0] for line in problems} == {f"missing: {var}" for var, _, _ in DATA_PROBLEMS} | {
        "missing: STL10_DIR"}
    assert result.stderr.splitlines()[-1].startswith("set the data folders")


def test_setup_second_run_is_a_quick_no_op():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    again = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and again.stdout == ""


def test_every_paper_command_resolves_to_the_recipe_of_before_the_recipes_were_files(paper_dry_run):
    """The ten pretraining recipes moved from bash variables into configs/paper/*.yaml: every command of the
    dry run resolves, value by value, to the configuration the scripts gave before (tests/fixtures)."""
    before = json.loads((ROOT / "tests" / "fixtures" / "paper_commands.json").read_text())
    tmp_path, result = paper_dry_run
    assert result.returncode == 0, result.stderr
    lines = [shlex.split(line) for line in command_lines(result.stdout)]
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


# --------------------------------------------------------------------------- usage, arguments, variables

SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").rglob("*")
                 if p.suffix in (".sh", ".sbatch") and not p.name.startswith("_"))
PASS_ON = {"test.sh", "gpu_check.sh"}   # their arguments are pytest's, bench/gpu_check.py's


def header(script: str) -> str:
    """The comment block at the top of a script (after the #! line), as its usage prints it."""
    lines = []
    for line in (ROOT / script).read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        if line == "#" or line.startswith("# "):
            lines.append(line[2:])
    return "\n".join(lines) + "\n"


def run_script(script, *args, cwd, **env):
    full = {k: v for k, v in os.environ.items() if k not in CHAIN_VARS + PROTOCOL_VARS}
    return subprocess.run(["bash", str(ROOT / script), *args], cwd=cwd, env={**full, **env}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_prints_its_usage_for_help_and_refuses_an_unknown_argument(tmp_path, script):
    """--help and -h print the script's usage and run nothing (scripts/demo.sh used to run the whole demo
    with --overwrite, replacing runs/demo); an argument it does not take is one line and exit 2."""
    work = tmp_path / "work"
    work.mkdir()
    env = dict(RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "out"), BASE=str(tmp_path / "base"),
               SMOKE_DIR=str(tmp_path / "smoke"), WORK_DIR=str(tmp_path / "wd"))
    usage = header(script)
    assert usage.count("\n") >= 2 and "bash" in usage or "sbatch" in usage
    for flag in ("--help", "-h"):
        result = run_script(script, flag, cwd=work, **env)
        assert (result.returncode, result.stdout, result.stderr) == (0, usage, "")
    if Path(script).name not in PASS_ON:
        result = run_script(script, "bogus", cwd=work, **env)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {script} ")
        assert "'bogus'" in result.stderr and f"see bash {script} --help" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not any(work.iterdir())


def launch_help(**env):
    """`launch scripts/smoke_data.py --help` of scripts/_launch.sh: prints the command under DRY_RUN, else runs it."""
    command = f"source {shlex.quote(str(ROOT / 'scripts' / '_launch.sh'))}; launch scripts/smoke_data.py --help"
    full = {k: v for k, v in os.environ.items() if k not in CHAIN_VARS}
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env={**full, **env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("value,dry", [("1", True), ("true", True), ("YES", True), ("On", True), ("0", False),
                                       ("false", False), ("No", False), ("OFF", False), ("", False)])
def test_dry_run_takes_the_common_spellings_of_true_and_false(value, dry):
    result = launch_help(DRY_RUN=value)
    assert result.returncode == 0, result.stderr
    printed = shlex.split(result.stdout)
    assert (printed[-2:] == [str(ROOT / "scripts" / "smoke_data.py"), "--help"]) == dry
    assert ("usage: python scripts/smoke_data.py DEST" in result.stdout) == (not dry)


@pytest.mark.parametrize("var,value,says", [
    ("DRY_RUN", "maybe", "DRY_RUN must be 1/0, true/false, yes/no or on/off, got 'maybe'"),
    ("NPROC", "abc", "NPROC must be a whole number >= 1, got 'abc'"),
    ("NPROC", "0", "NPROC must be a whole number >= 1, got '0'"),
    ("NNODES", "-1", "NNODES must be a whole number >= 1, got '-1'"),
    ("WORKERS", "8.5", "WORKERS must be a whole number >= 0, got '8.5'"),
    ("MASTER_PORT", "port", "MASTER_PORT must be a whole number >= 1, got 'port'"),
])
def test_a_bad_launch_variable_is_refused_in_one_line(tmp_path, var, value, says):
    result = run_script("scripts/pretrain_vgg.sh", cwd=tmp_path, **{"DRY_RUN": "1", var: value})
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"error: {says}\n")


def test_node_rank_must_be_below_the_node_count_and_jobs_a_whole_number(tmp_path):
    result = run_script("scripts/pretrain_vgg.sh", cwd=tmp_path, DRY_RUN="1", NNODES="2", NODE_RANK="2",
                        MASTER_ADDR="node0")
    assert (result.returncode, result.stderr) == (2, "error: NODE_RANK must be 0..1 with NNODES=2, got '2'\n")
    for script in ("scripts/reproduce_embedded.sh", "scripts/sweep_embedded.sh"):
        result = run_script(script, cwd=tmp_path, DRY_RUN="1", JOBS="two")
        assert (result.returncode, result.stderr) == (2, "error: JOBS must be a whole number >= 1, got 'two'\n")
    result = run_script("scripts/reproduce_paper.sh", "--dry-run", cwd=tmp_path, ARCHS="resnet18 resnet50")
    assert result.returncode == 2 and result.stderr.startswith("error: ARCHS holds 'resnet50'")
