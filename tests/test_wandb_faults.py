"""W&B cannot take a run down: a server that refuses, never answers, rejects the key or stops mid-run, and a
wandb-core that dies, each cost at most a bounded wait and one line, never the run.

Nothing here reaches the internet: W&B is pointed at 127.0.0.1, at a closed port, at a listener that accepts and
never replies, or at a small stand-in server in this process (tests/wandb_servers.py). Keys are fake and go only into a subprocess's
environment or through monkeypatch (conftest strips them from this process). The runs that start wandb online run
in subprocesses, because wandb keeps its settings for the life of a process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genzoo.errors import GenzooError
from genzoo.run.wandb_server import server_unreachable, wandb_mode

from wandb_servers import DEAD_SERVERS, closed_port, silent_listener, stand_in_wandb

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
SMALL = ("debug=smoke", "model.net.channels=8", "model.net.blocks=1", "model.net.head_channels=16")
HYDRA_FRAME = ("Error executing job with overrides", "Set the environment variable HYDRA_FULL_ERROR")


def online_env(url: str, tmp_path) -> dict[str, str | None]:
    """A fake key for ``url``, no WANDB_MODE (conftest's offline default), no .netrc of this machine."""
    return {"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": url, "WANDB_MODE": None,
            "NETRC": str(tmp_path / "no-netrc")}


def run_python(cli, tmp_path, code: str, env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=cli.env(tmp_path, env),
                          capture_output=True, text=True, timeout=timeout)


def lines_with(text: str, fragment: str) -> list[str]:
    return [line for line in text.splitlines() if fragment in line]


# ---- the probe and the mode ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dead", DEAD_SERVERS)
def test_the_probe_of_a_dead_server_gives_up_within_its_timeout_and_says_why(dead):
    with DEAD_SERVERS[dead]() as url:
        start = time.monotonic()
        why = server_unreachable(url, timeout=3)
        took = time.monotonic() - start
    assert took < 10, f"the probe waited {took:.1f} s with a 3 s timeout"
    assert why == ("no answer within 3 s" if dead == "silent_listener" else "Connection refused"), why


def test_any_http_answer_counts_as_reachable_even_404_or_a_redirect_to_a_dead_host(tmp_path):
    class Answers(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", dead_url)  # followed, it would be refused
            else:
                self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with closed_port() as dead_url:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            assert server_unreachable(base, timeout=3) is None
            assert server_unreachable(base + "/moved", timeout=3) is None
        finally:
            server.shutdown()
            server.server_close()


def test_auto_mode_with_a_key_and_a_dead_server_goes_offline_with_one_warning_naming_the_sync(
        monkeypatch, caplog, tmp_path):
    with closed_port() as url:
        for key, value in online_env(url, tmp_path).items():
            monkeypatch.setenv(key, value) if value else monkeypatch.delenv(key, raising=False)
        with caplog.at_level(logging.WARNING):
            assert wandb_mode("auto", save_dir="RUN", run_id="ab12cd34", probe_timeout=1) == "offline"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"The W&B server {url} does not answer (Connection refused)" in warning
    assert warning.endswith("upload it later with `wandb sync RUN/wandb/offline-run-*-ab12cd34`.")


@pytest.mark.parametrize("forced", ["logger", "env"])
def test_forced_online_with_a_dead_server_is_refused_in_one_sentence(forced, monkeypatch, tmp_path):
    with closed_port() as url:
        for key, value in online_env(url, tmp_path).items():
            monkeypatch.setenv(key, value) if value else monkeypatch.delenv(key, raising=False)
        if forced == "env":
            monkeypatch.setenv("WANDB_MODE", "online")
        with pytest.raises(GenzooError) as refused:
            wandb_mode("online" if forced == "logger" else "auto", probe_timeout=1)
    message = str(refused.value)
    who = "logger.wandb.mode=online" if forced == "logger" else "WANDB_MODE=online"
    assert message.startswith(f"{who} but the W&B server {url} does not answer (Connection refused)"), message
    assert ("logger.wandb.mode=offline" if forced == "logger" else "WANDB_MODE=offline") in message
    assert "\n" not in message and message.endswith(".")


def test_forced_online_without_credentials_is_refused_in_one_sentence(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never asked: no credentials stops it first
    assert wandb_mode("auto") == "offline"
    with pytest.raises(GenzooError, match=r"^logger\.wandb\.mode=online but W&B has no credentials for "
                                          r"http://127\.0\.0\.1:9.*`wandb login` or set WANDB_API_KEY.*offline\.$"):
        wandb_mode("online")


# ---- the installed genzoo-train ------------------------------------------------------------------------------------
def test_forced_online_with_a_dead_server_stops_before_the_run_folder_has_any_file(cli, tmp_path):
    with closed_port() as url:
        run = cli.train(*SMALL, "logger.wandb.mode=online", workdir=tmp_path, extra_env=online_env(url, tmp_path))
    assert run.returncode != 0, run.tail()
    assert "Traceback" not in run.output, run.tail()
    message = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith(HYDRA_FRAME)]
    assert len(message) == 1 and "does not answer (Connection refused)" in message[0], run.tail()
    assert run.run_dirs() == [], "a refused run left its config.yaml"
    assert not list(run.output_dir.rglob("env.json")) and not list(run.output_dir.rglob("*.ckpt")), run.tail()
    assert not list(run.output_dir.rglob("wandb")), run.tail()


@pytest.mark.slow
def test_a_run_with_a_key_and_a_silent_server_trains_offline_with_the_metrics_of_an_offline_run(cli, tmp_path):
    asked = []
    with silent_listener(asked) as url:
        run = cli.train(*SMALL, workdir=tmp_path / "silent", extra_env=online_env(url, tmp_path))
        # Only the probe asked: no online wandb.init, and none of wandb's telemetry waiting for an answer at exit.
        assert len(asked) == 1, run.tail()
    offline = cli.train(*SMALL, workdir=tmp_path / "offline")
    assert run.returncode == 0 and offline.returncode == 0, run.tail() + offline.tail()
    assert "Traceback" not in run.output, run.tail()
    (warning,) = lines_with(run.output, "does not answer")
    assert f"The W&B server {url} does not answer (no answer within 3 s)" in warning and "wandb sync" in warning
    run_dir = run.run_dir()
    (wandb_run,) = run_dir.glob("wandb/offline-run-*")
    assert list(wandb_run.glob("run-*.wandb")), "the run logged to an offline W&B run"
    assert not list(run_dir.glob("wandb/run-*")), "no online W&B run was attempted"
    timings = ("best_checkpoint", "time_s", "fit_time_s")
    metrics = {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in timings}
    expected = {k: v for k, v in json.loads((offline.run_dir() / "metrics.json").read_text()).items()
                if k not in timings}
    # the fidelity protocols (mappings of names and sizes) equal exactly; the numbers to float rounding
    protocols = {k: metrics.pop(k) for k in list(metrics) if k.endswith("/fidelity_protocol")}
    assert protocols == {k: expected.pop(k) for k in list(expected) if k.endswith("/fidelity_protocol")}
    assert metrics == pytest.approx(expected, rel=1e-6, abs=1e-9)


# ---- wandb.init, wandb.log and finish against servers that fail in other ways ------------------------------------
START = """
import json, sys, time
from genzoo.errors import GenzooError
from genzoo.run.loggers import finish_wandb, wandb_logger
logger = wandb_logger(save_dir=sys.argv[1], mode=sys.argv[2], id=sys.argv[3], finish_timeout=2)
try:
    logger.log_hyperparams({"lr": 0.1})
except GenzooError as e:
    print("REFUSED", e, flush=True)
    raise SystemExit(0)
print("MODE", logger.experiment.settings.mode, flush=True)
"""


@pytest.mark.parametrize("mode", ["auto", "online"])
def test_a_server_that_rejects_the_key_sends_auto_offline_and_stops_a_forced_online_run(mode, cli, tmp_path):
    with stand_in_wandb(status=403) as (url, _):
        done = run_python(cli, tmp_path, START + "finish_wandb(False)\n", online_env(url, tmp_path),
                          str(tmp_path / "run"), mode, "rejected1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    if mode == "online":
        (refused,) = lines_with(done.stdout, "REFUSED")
        assert refused.startswith("REFUSED logger.wandb.mode=online but W&B could not start the run online (CommError")
        return
    assert "MODE offline" in done.stdout, done.stdout + done.stderr
    (warning,) = lines_with(done.stderr, "could not start the run online")
    assert "(CommError: " in warning and "403" in warning and "wandb sync " in warning, warning
    assert list((tmp_path / "run").glob("wandb/offline-run-*-rejected1/run-*.wandb"))


STALLED_MID_RUN = START + """
sys.stdin.readline()  # the server stops answering now
worst = 0.0
for step in range(300):
    started = time.monotonic()
    logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    worst = max(worst, time.monotonic() - started)
started = time.monotonic()
finish_wandb(failed=False)
print("RESULT", json.dumps({"worst_log_s": worst, "finish_s": time.monotonic() - started}), flush=True)
"""


def test_a_server_that_stops_answering_mid_run_never_blocks_a_log_call_and_finish_gives_up_in_time(cli, tmp_path):
    with stand_in_wandb() as (url, stall):
        proc = subprocess.Popen([sys.executable, "-c", STALLED_MID_RUN, str(tmp_path / "run"), "online", "stall001"],
                                cwd=tmp_path, env=cli.env(tmp_path, online_env(url, tmp_path)), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(tmp_path / "err", "w"))
        try:
            assert proc.stdout.readline().strip() == "MODE online", (tmp_path / "err").read_text()
            stall.set()
            proc.stdin.write("\n")
            proc.stdin.flush()
            out = proc.stdout.read()
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 0 and "Traceback" not in err, out + err
    (result,) = lines_with(out, "RESULT")
    result = json.loads(result.split(" ", 1)[1])
    # A call that waited on the silent server would wait for its HTTP timeout at least (tens of seconds).
    assert result["worst_log_s"] < 2, result
    assert result["finish_s"] < 2 + 10, result  # finish_timeout=2, plus wandb's grace for the last records
    (warning,) = lines_with(err, "W&B did not finish uploading within 2 s")
    folder = warning.split("wandb sync ")[1].rstrip("`.")
    assert list((tmp_path / "run" / "wandb").glob("run-*-stall001/run-*.wandb")), err
    assert folder.endswith("-stall001") and list(tmp_path.glob(f"run/wandb/{folder.rsplit('/', 1)[1]}"))


KILLED_CORE = START + """
import os, signal, time
def parent(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError:
        return None
core = [int(p) for p in os.listdir("/proc") if p.isdigit() and parent(p) == str(os.getpid())
        and open(f"/proc/{p}/comm").read().strip() == "wandb-core"]
assert core, "wandb-core is not a child of this process"
for pid in core:
    os.kill(pid, signal.SIGKILL)
time.sleep(1)
for step in range(5):
    logger.log_metrics({"train/loss": 1.0}, step=step)
finish_wandb(failed=False)
print("DONE", flush=True)
"""


def test_a_killed_wandb_core_costs_one_warning_and_the_run_goes_on(cli, tmp_path):
    done = run_python(cli, tmp_path, KILLED_CORE, {}, str(tmp_path / "run"), "offline", "killed01")
    assert done.returncode == 0 and "DONE" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert len(lines_with(done.stderr, "W&B stopped working (ConnectionResetError")) == 1, done.stderr
    (finish,) = lines_with(done.stderr, "W&B could not finish the run")
    assert "wandb sync " in finish and "offline-run-" in finish, finish
