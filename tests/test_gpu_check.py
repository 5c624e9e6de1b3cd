"""scripts/gpu_check.sh through its CPU path: the no-CUDA exit, the device-agreement check (CPU against
CPU passes, a forced disagreement fails), and the one report with PASS / FAIL / SKIP per check."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import device_agreement  # noqa: E402
import gpu_check  # noqa: E402

MISSING_SMOKE = "bash scripts/no_such_script.sh --smoke"  # what an absent smoke chain looks like


def test_gpu_check_without_cuda_is_one_line_and_exit_2():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no CUDA device, even on a GPU machine
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no CUDA device here")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    return device_agreement.make_checkpoint("resnet18", tmp_path_factory.mktemp("agreement"), torch.device("cpu"),
                                            tiny=True)


def test_agreement_of_the_cpu_with_itself_passes(tiny_checkpoint, tmp_path):
    out = tmp_path / "agreement.json"
    assert device_agreement.main(["--devices", "cpu", "cpu", "--checkpoint", str(tiny_checkpoint), "--tiny",
                                  "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    layers = result["results"]["checkpoint"]["layers"]
    assert result["verdict"] == "PASS" and result["tf32"] is False
    assert {"layer1", "last_conv", "encoder", "projector_raw", "projector", "classifier"} <= set(layers)
    for r in layers.values():
        assert r["feature_error"] == 0 and r["metric_error"] == 0 and r["pass"]
        assert 0 < r["float32_rounding"] < device_agreement.FEATURE_TOL  # float32 against float64, measured
        assert {"nc1", "vci"} <= set(r["metrics"])


def test_a_forced_disagreement_fails(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "agreement.json"
    with pytest.raises(SystemExit) as exit_info:
        device_agreement.main(["--devices", "cpu", "cpu", "--checkpoint", str(tiny_checkpoint), "--tiny",
                               "--perturb", "1e-2", "--json", str(out)])
    assert exit_info.value.code == 1
    result = json.loads(out.read_text())
    layers = result["results"]["checkpoint"]["layers"]
    assert result["verdict"] == "FAIL" and not any(r["pass"] for r in layers.values())
    assert all(r["feature_error"] > device_agreement.FEATURE_TOL for r in layers.values())
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(": FAIL")


def test_feature_error_is_relative_to_the_feature_scale():
    import torch

    a = torch.tensor([[3.0, -4.0], [0.0, 5.0]], dtype=torch.float64)  # rms = sqrt(50 / 4)
    b = a.clone()
    b[1, 1] += 1e-3
    assert device_agreement.feature_error(a, b) == pytest.approx(1e-3 / (50 / 4) ** 0.5)
    assert device_agreement.feature_error(a, a * float("nan")) != device_agreement.feature_error(a, a * float("nan"))
    assert not device_agreement.compare_layer(a, a * float("nan"), torch.tensor([0, 1]), 2)["pass"]


def report_of(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    for c in report["checks"]:
        assert f"| {c['name']} | **{c['status']}** |" in markdown
    assert {"torch", "cuda", "cudnn", "driver", "timm", "torchvision"} <= set(report["versions"])
    return report


def test_report_has_a_line_per_check_and_a_missing_smoke_chain_is_a_fail(tmp_path):
    args = ["--device", "cpu", "--tiny", "--parts", "smoke", "ddp", "--out", str(tmp_path)]
    assert gpu_check.main(args + ["--smoke_command", MISSING_SMOKE]) == 1
    report = report_of(tmp_path)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["verdict"] == "FAIL" and set(checks) == {"smoke chain", "ddp"}
    assert checks["smoke chain"]["status"] == "FAIL" and "exit 127" in checks["smoke chain"]["detail"]
    assert checks["ddp"]["status"] == "SKIP" and "2 or more GPUs" in checks["ddp"]["detail"]
    assert "no_such_script.sh" in (tmp_path / "smoke.log").read_text()
    assert gpu_check.main(args + ["--smoke_command", "echo smoke done on {device}"]) == 0
    report = report_of(tmp_path)
    assert report["verdict"] == "PASS" and [(c["name"], c["status"]) for c in report["checks"]] == [
        ("ddp", "SKIP"), ("smoke chain", "PASS")]  # the smoke chain last
    assert "smoke done on cpu" in (tmp_path / "smoke.log").read_text()


def test_a_part_whose_results_cannot_be_read_is_a_fail_line(tmp_path, monkeypatch):
    def broken(args, out):
        raise KeyError("ratios")
    monkeypatch.setitem(gpu_check.PARTS, "bench", broken)
    assert gpu_check.main(["--device", "cpu", "--parts", "bench", "ddp", "--out", str(tmp_path)]) == 1
    checks = report_of(tmp_path)["checks"]
    assert [(c["name"], c["status"]) for c in checks] == [("bench", "FAIL"), ("ddp", "SKIP")]
    assert "KeyError" in checks[0]["detail"]


def test_the_parts_time_limits_keep_the_check_under_8_minutes():
    assert set(gpu_check.LIMITS) == set(gpu_check.PARTS) and list(gpu_check.PARTS)[-1] == "smoke"
    elapsed = 0.0
    for part in gpu_check.PARTS:  # every part running to its limit
        elapsed += gpu_check.part_limit(part, elapsed, gpu_check.LIMITS, gpu_check.BUDGET)
    assert elapsed <= gpu_check.BUDGET <= 8 * 60 - 20  # 20 s left for start-up and the report
    # the smoke chain, last, gets what the others left
    assert gpu_check.part_limit("smoke", 100, gpu_check.LIMITS, gpu_check.BUDGET) == gpu_check.BUDGET - 100


def test_a_part_past_its_time_limit_is_killed_and_fails(tmp_path):
    start = time.perf_counter()
    assert gpu_check.main(["--device", "cpu", "--parts", "smoke", "--out", str(tmp_path), "--limit", "smoke=1",
                           "--smoke_command", "sleep 60 & sleep 60"]) == 1
    assert time.perf_counter() - start < 30
    check = report_of(tmp_path)["checks"][0]
    assert check["status"] == "FAIL" and "timed out after 1 s" in check["detail"]


@pytest.mark.slow
def test_every_part_runs_in_tiny_mode_on_the_cpu(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny",
                             "--ddp", "always", "--out", str(tmp_path), "--smoke_command", MISSING_SMOKE],
                            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    report = report_of(tmp_path)
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status == {"step resnet18": status["step resnet18"], "step vit_tiny": status["step vit_tiny"],
                      "loader": "PASS", "dali": status["dali"], "smoke chain": "FAIL", "agreement resnet18": "PASS",
                      "ddp": "PASS"}
    assert {status["step resnet18"], status["step vit_tiny"]} <= {"PASS", "FAIL"}
    assert report["parts"]["bench"]["rows"] and report["parts"]["agreement"]["verdict"] == "PASS"
    ddp = next(c for c in report["checks"] if c["name"] == "ddp")
    assert ddp["figures"]["epochs"] == 2 and ddp["figures"]["tensorboard_writers"] == 1  # rank 0 alone
    markdown = (tmp_path / "report.md").read_text()
    assert "## Benchmark rows" in markdown and "## Device agreement per layer" in markdown
    assert result.stdout.strip().splitlines()[-1].startswith("gpu_check: FAIL (")
