"""genzoo's scripts run in this process through their real ``main``: Hydra's app, its exit codes and its output,
at a fraction of a subprocess's cost (the imports are paid once)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import genzoo.eval
import genzoo.report
import genzoo.sample
import genzoo.train

MAINS = {"genzoo-train": genzoo.train.main, "genzoo-eval": genzoo.eval.main,
         "genzoo-sample": genzoo.sample.main, "genzoo-report": genzoo.report.main}
HYDRA_LINES = ("Error executing job with overrides", "Set the environment variable HYDRA_FULL_ERROR")
LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[\w+\] - ")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_main(script: str, args: list[str], work: Path, capsys=None) -> Result:
    """``script``'s real main with ``args``, in ``work``, with its data in ``work/data`` and its cache in
    ``work/../cache`` (shared by the cases of one test); ``capsys``: pytest's, to hand back the output."""
    saved = sys.argv, os.getcwd(), {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("GENZOO_")}
    os.environ.update(GENZOO_DATA_DIR=str(work / "data"), GENZOO_CACHE_DIR=str(work.parent / "cache"))
    os.chdir(work)
    code = 0
    try:
        if script == "genzoo-report":
            code = MAINS[script](args) or 0
        else:
            sys.argv = [script, *args]
            MAINS[script]()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        for k in ("GENZOO_DATA_DIR", "GENZOO_CACHE_DIR"):
            os.environ.pop(k, None)
        os.environ.update(saved[2])
    out = capsys.readouterr() if capsys is not None else None
    return Result(code, out.out if out else "", out.err if out else "")


def sentences(text: str) -> list[str]:
    """The lines of output that are neither Hydra's frame around an error nor log records."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith(HYDRA_LINES)
            and not LOG_LINE.match(line) and not line.startswith(("Seed set", "GPU available", "TPU available"))]


