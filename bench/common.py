"""What the benchmarks share: the bare training step they compare against, the device sync before
a timer is read, and the lines that say on which machine and under what load a figure was measured."""
from __future__ import annotations

import os
import platform
import subprocess

import torch


def bare_step(net, x, y, loss_fn, optimizer, amp: dict) -> None:
    """One training step with nothing around it: autocast forward, loss, backward, optimizer step."""
    with torch.autocast(**amp):
        out = net(x, return_all=True)
    loss, _, _ = loss_fn(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """``lscpu``'s model name (else the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} torch threads)"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"
