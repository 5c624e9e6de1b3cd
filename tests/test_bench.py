"""The benchmarks run (smoke settings) and print what the README quotes; bench_train measures the demo."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def run_bench(name, *args, timeout=300):
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_bench_gpu_tiny_on_the_cpu_names_the_device_on_every_line(tmp_path):
    lines = run_bench("bench_gpu.py", "--device", "cpu", "--tiny", "--json", str(tmp_path / "bench.json"))
    header = next(i for i, line in enumerate(lines) if line.startswith("device"))
    table = [line for line in lines[header + 1:] if not line.startswith("load average after")]
    assert len(table) == len(lines) - header - 2 and all(line.startswith("cpu (") for line in table)
    for arch in ("resnet18", "vit_tiny"):
        assert any(f"{arch} bare step" in line for line in table)
        assert any(f"{arch} our step" in line and "of bare" in line for line in table)
    for workers in ("1 worker ", "2 workers"):
        row = next(line for line in table if f"ImageFolder loader, {workers}" in line)
        assert re.search(r"\s(\d+\.\d)\s+\d+\.\d\s+32 px training transform", row)
    assert re.fullmatch(r"cpu \(.*\): ratio our step/bare step = resnet18 \d+\.\d\d, vit_tiny \d+\.\d\d "
                        r"\(target >= 0\.9: (PASS|MISS)\)", lines[-1])
    result = json.loads((tmp_path / "bench.json").read_text())  # what scripts/gpu_check.sh reports
    rows = [line for line in table if re.search(r"\s\d+\.\d\s+\d+\.\d\s", line)]
    assert [r["measured"] for r in result["rows"]] == [line[45:97].strip() for line in rows]
    assert result["verdict"] == lines[-1].rsplit(": ", 1)[1].rstrip(")")
    assert f"resnet18 {result['ratios']['resnet18']:.2f}" in lines[-1]
    assert set(result["loader"]) == {"1", "2"} and all(v > 0 for v in result["loader"].values())
    assert result["versions"]["torch"] == torch.__version__
    dali_line = [line for line in table if "DALI" in line]
    assert len(dali_line) == 1 and (result["dali"] is None) == ("left out" in dali_line[0])


def test_bench_train_smoke_ends_with_the_epoch_ratio():
    lines = run_bench("bench_train.py", "--smoke")
    assert lines[0].startswith("device cpu (") and "load average" in lines[0]
    assert re.fullmatch(r"ratio step/bare = \d+\.\d\d", lines[-2])
    assert re.fullmatch(r"ratio epoch/bare = \d+\.\d\d", lines[-1])
    assert any(line.startswith("pretrain.py: one epoch, wall clock") for line in lines)


def test_bench_train_runs_the_demo_settings():
    """bench_train's flags are scripts/demo.sh's pretraining defaults."""
    import bench_train

    demo = (ROOT / "scripts" / "demo.sh").read_text()
    default = {m[0]: m[1].strip('"') for m in re.findall(r"^(\w+)=\$\{\w+:-(.*?)\}", demo, flags=re.M)}
    common = re.search(r"COMMON=\((.*?)\)", demo, flags=re.S).group(1)
    assert "--config configs/embedded_cpu.yaml" in " ".join(common.split())
    expected = {"--seed": default["SEED"], "--epochs": default["EPOCHS"], "--image_size": default["IMAGE_SIZE"],
                "--max_per_class": default["TRAIN_PER_CLASS"]}
    flags = bench_train.DEMO_FLAGS
    assert Path(flags[flags.index("--config") + 1]) == ROOT / "configs" / "embedded_cpu.yaml"
    assert {k: flags[flags.index(k) + 1] for k in expected} == expected
    assert bench_train.DEMO_NC_FLAGS == ["--alpha", default["ALPHA"], *shlex.split(default["PROJECTOR_FLAGS"])]   # the arm 'ours'


def test_bench_ood_small_run_checks_scores_and_prints_both_speed_ups():
    lines = run_bench("bench_ood.py", "--train", "600", "--test", "300", "--dim", "16", "--classes", "6",
                      "--ddu-dims", "8", "16", "--ddu-per-class", "100", "--repeats", "1", "--search-per-class", "4")
    assert any("max relative difference" in line and "PASS" in line for line in lines)
    search = next(line for line in lines if line.startswith("parameter search"))
    assert re.search(r"all 22 scorers, \d+ candidates .* ratio search/extraction = \d+\.\d\d$", search)
    ddu = [line for line in lines if line.startswith("DDU algorithm")]
    assert len(ddu) == 2 and all("scores" in line and "PASS" in line for line in ddu)
    assert re.match(r"speed-up \(fit \+ score\): \d+\.\d\dx", lines[-1])


def test_bench_loader_tiny_prints_every_pipeline_and_ends_with_the_ratio():
    lines = run_bench("bench_loader.py", "--tiny")
    assert lines[0].startswith("cpu ") and "load average" in lines[0]
    assert "crops decoded at a reduced scale: 0.0%" in lines[1]  # 224-px crops of ImageNet-sized photographs
    for label in ("official (PIL", "ours, --no-fast_decode", "ours, fast decode (the default)", "decode only: simplejpeg"):
        row = next(line for line in lines if line.startswith(label))
        assert re.search(r"\s\d+\s+\d+\s+\d+$", row)
    assert re.fullmatch(r"ratio fast/official = \d+\.\d\d", lines[-1])


@pytest.mark.parametrize("name", ["bench_train.py", "bench_gpu.py", "bench_ood.py", "bench_nc.py", "bench_eval.py",
                                  "device_agreement.py", "gpu_check.py", "bench_loader.py"])
def test_every_benchmark_documents_its_command(name):
    text = (ROOT / "bench" / name).read_text()
    assert f"bench/{name}" in text
