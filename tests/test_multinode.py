"""Many nodes through torchrun, as scripts/_launch.sh starts them: a 2-node x 1-process CPU job on
127.0.0.1 (two torchrun launchers, gloo) ends with exactly the weights and log of the 2-process
single-node run; the launch commands for one node, static ranks and c10d rendezvous."""
import json
import os
import shlex
import socket
import subprocess
from pathlib import Path

import torch

from core.checkpoint import load_checkpoint
from tests.test_pretrain import NC, TINY, failure_excerpt

ROOT = Path(__file__).resolve().parents[1]
ARGS = [*TINY, *NC, "--max_per_class", "12", "--epochs", "2", "-b", "16", "--augmentation"]
TIMED = ("seconds", "img_per_s")


def launch(args, **env):
    """`launch pretrain.py ARGS` of scripts/_launch.sh with the given environment, started in the background."""
    command = f"source {shlex.quote(str(ROOT / 'scripts' / '_launch.sh'))}; launch pretrain.py {shlex.join(args)}"
    full_env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "NODE_RANK", "NPROC", "RDZV_ENDPOINT")}
    full_env.update(TQDM_DISABLE="1", OMP_NUM_THREADS="1", **env)
    return subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, failure_excerpt(err)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_without_times(folder):
    records = [json.loads(line) for line in (Path(folder) / "model.log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMED} for r in records]


def test_two_nodes_equal_two_processes_on_one_node(tmp_path):
    single = tmp_path / "one_node"
    assert "x 2 processes" in finish(launch(ARGS + ["--save_dir", str(single)], NPROC="2"))
    multi = tmp_path / "two_nodes"
    port = str(free_port())
    nodes = [launch(ARGS + ["--save_dir", str(multi)], NNODES="2", NODE_RANK=str(rank), NPROC="1",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for rank in (1, 0)]
    outputs = [finish(node) for node in nodes]
    assert "x 2 processes" in outputs[1]  # node 0 (started second) holds global rank 0
    a, b = load_checkpoint(single / "model.pth"), load_checkpoint(multi / "model.pth")
    assert a["epoch"] == b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert log_without_times(single) == log_without_times(multi)
    assert len(log_without_times(multi)) == 2


def dry_run(**env) -> tuple[int, list[str], str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "NODE_RANK", "NPROC", "RDZV_ENDPOINT",
                                                                 "MASTER_ADDR", "MASTER_PORT")}
    full_env.update(DRY_RUN="1", **env)
    command = f"source {shlex.quote(str(ROOT / 'scripts' / '_launch.sh'))}; launch pretrain.py --epochs 1"
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=30)
    return result.returncode, shlex.split(result.stdout), result.stderr


def test_launch_commands_for_one_and_many_nodes():
    code, cmd, _ = dry_run()
    assert code == 0 and "torch.distributed.run" not in cmd and cmd[-3:] == [str(ROOT / "pretrain.py"), "--epochs", "1"]
    code, cmd, _ = dry_run(NPROC="4")
    assert code == 0 and cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    code, cmd, _ = dry_run(NNODES="2", NPROC="4", NODE_RANK="1", MASTER_ADDR="node0", MASTER_PORT="1234")
    assert code == 0 and "--standalone" not in cmd
    assert {"--nnodes=2", "--nproc_per_node=4", "--node_rank=1", "--master_addr=node0", "--master_port=1234"} <= set(cmd)
    code, cmd, _ = dry_run(NNODES="2", RDZV_ENDPOINT="node0:29400")
    assert code == 0 and {"--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", "--rdzv_endpoint=node0:29400",
                          "--rdzv_id=ncood"} <= set(cmd)
    code, cmd, err = dry_run(NNODES="2", MASTER_ADDR="node0")
    assert code != 0 and "NODE_RANK" in err


def test_slurm_example_starts_one_torchrun_per_node(tmp_path):
    """The sbatch script under stand-ins for srun (one task per node, run here one after the other)
    and scontrol, in DRY_RUN mode: one torchrun command per node, node ranks 0 and 1, node 0 as master."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                                  'for node in 0 1; do SLURM_NODEID=$node "$@" || exit 1; done\n')
    (bin_dir / "scontrol").write_text('#!/usr/bin/env bash\nprintf "gpu-a\\ngpu-b\\n"\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    data_dir = tmp_path / "in100"
    (data_dir / "train").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NNODES", "NODE_RANK", "NPROC", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", DRY_RUN="1", DATA_DIR=str(data_dir), SLURM_JOB_NUM_NODES="2",
               SLURM_JOB_NODELIST="gpu-[a-b]", SLURM_GPUS_PER_NODE="a100:4", SLURM_CPUS_PER_TASK="32")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "pretrain.sbatch"), "scripts/pretrain_resnet_nc.sh",
                             "--epochs", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert len(commands) == 2
    for node, cmd in enumerate(commands):
        assert cmd[1:3] == ["-m", "torch.distributed.run"]
        assert {"--nnodes=2", "--nproc_per_node=4", f"--node_rank={node}", "--master_addr=gpu-a",
                "--master_port=29500"} <= set(cmd)
        assert cmd[-2:] == ["--epochs", "3"] and cmd[cmd.index("--workers") + 1] == "8"
