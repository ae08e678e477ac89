"""How long W&B holds up a run that has an API key but no server to talk to (a cluster node without internet).

    python benchmarks/wandb_offline.py

Runs the same small ``genzoo-train debug=smoke`` three times, each in its own process: with ``WANDB_MODE=offline``
(the baseline), and with a key and ``WANDB_BASE_URL`` pointed at a closed port and at a listener that never
replies. Prints, for each, the seconds from launch until training starts (Lightning's model summary) and in total,
the extra seconds against the baseline of this same run, and whether the final metrics equal the baseline's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SMALL = ["debug=smoke", "logger=wandb", "model.net.channels=8", "model.net.blocks=1", "model.net.head_channels=16"]
KEY = "0123456789abcdef" * 2 + "01234567"
NOT_METRICS = {"best_checkpoint", "time_s", "fit_time_s"}


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def silent_port(held: list) -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held.append(sock)
    threading.Thread(target=lambda: [held.append(sock.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    return sock.getsockname()[1]


def run(root: Path, name: str, env_extra: dict[str, str]) -> tuple[float, float, dict, int]:
    work = root / name
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "GENZOO_"))}
    home = str(work / "wandb-home")
    env.update(OMP_NUM_THREADS="1", NETRC=str(work / "no-netrc"), WANDB_CONFIG_DIR=home, WANDB_CACHE_DIR=home,
               WANDB_DATA_DIR=home, **env_extra)
    command = [str(Path(sys.executable).parent / "genzoo-train"), *SMALL, f"paths.data_dir={root / 'data'}",
               f"paths.cache_dir={work / 'cache'}"]
    start, training = time.monotonic(), float("nan")
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if training != training and "Trainable params" in line:
            training = time.monotonic() - start
    process.wait()
    total = time.monotonic() - start
    (run_dir,) = [c.parent for c in work.glob("outputs/runs/*/config.yaml")]
    metrics = {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in NOT_METRICS}
    return training, total, metrics, process.returncode


def main() -> None:
    root, held = Path(tempfile.mkdtemp(prefix="genzoo-wandb-")), []
    base_training, base_total, base_metrics, code = run(root, "offline", {"WANDB_MODE": "offline"})
    print(f"{'WANDB_MODE=offline':20s} exit {code}  training starts {base_training:5.1f} s  total {base_total:5.1f} s")
    for name, port in (("closed port", closed_port()), ("silent listener", silent_port(held))):
        training, total, metrics, code = run(root, name.replace(" ", "_"),
                                             {"WANDB_API_KEY": KEY, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
        print(f"{name:20s} exit {code}  training starts {training:5.1f} s (+{training - base_training:4.1f})  "
              f"total {total:5.1f} s (+{total - base_total:4.1f})  metrics equal: {metrics == base_metrics}")


if __name__ == "__main__":
    main()
