"""A real two-node Ray cluster on loopback that loses a node mid-grid: the lost runs are retried on
the head and the grid equals the local backend's.

Every Ray process the test starts is ended by the test, by process id (never ``ray stop``, which
kills every Ray process on the machine, other users' included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from ray_results import assert_clean, free_port, results

# The cluster test's nodes and driver share a throwaway token (token authentication on, ~/.ray untouched).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex, "RAY_USAGE_STATS_ENABLED": "0"}


def session_pids(sids: set[int]) -> list[int]:
    """Processes in the given sessions (Ray workers change their process group, not their session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) in sids:
                pids.append(int(entry.name))
    return pids


def end_sessions(sids: set[int]) -> None:
    deadline = time.time() + 20
    while (pids := session_pids(sids)) and time.time() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert not session_pids(sids), "Ray processes left behind"


def ray_start(args: list[str], env: dict[str, str], sids: set[int]) -> int:
    """``ray start`` in a session of its own, added to ``sids``; returns the session id its daemons keep."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    proc = subprocess.Popen([ray_bin, "start", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    sids.add(proc.pid)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-2000:]
    return proc.pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the second node's processes")
def test_two_node_cluster_loses_a_node_mid_grid(long_runs: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    spec_path, reference = long_runs
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    # Fast failure detection, so the lost node's runs are retried within seconds.
    fast = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}  # fmt: skip
    env = {**os.environ, **AUTH, **fast}
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    sids: set[int] = set()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, temp, ignore_errors=True)
        stack.callback(end_sessions, sids)  # every process the test started, by session id
        # Ray 2.60 advertises the host's primary address instead of 127.0.0.1 (and listens on all interfaces).
        head = ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={temp}/head",
                "--include-dashboard=false", f"--ray-client-server-port={free_port()}"]  # fmt: skip
        # Ports that default to fixed numbers get free ones: other Ray instances may run on this machine.
        ray_start([*head, *common, f"--dashboard-agent-listen-port={free_port()}"], env, sids)
        joiner = [
            f"--address=127.0.0.1:{port}",
            f"--temp-dir={temp}/second",
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        second = ray_start([*joiner, *common], env, sids)
        out = tmp_path / "exp"
        stderr = stack.enter_context((tmp_path / "stderr").open("w"))
        driver = subprocess.Popen(
            [sys.executable, "-m", "rltransfer.cli", "run", str(spec_path), "--out", str(out),
             "--backend", "ray", "--address", f"127.0.0.1:{port}", "--quiet"],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        sids.add(driver.pid)
        killed = False
        deadline = time.time() + 120
        while not killed and driver.poll() is None and time.time() < deadline:
            # Kill the second node (raylet, agents, workers) once it is training one of the grid's runs.
            for pid in session_pids({second}):
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if title.startswith(b"ray::_run_task"):
                    end_sessions({second})
                    killed = True
                    break
            time.sleep(0.05)
        assert killed, "the second node never ran a grid task"
        assert driver.wait(timeout=180) == 0, (tmp_path / "stderr").read_text()[-3000:]
        assert results(out) == results(reference)
        assert_clean(out)
