"""The default worker id: unique among live processes, the same again after a crash.

Two live processes with the same id would take each other's runs (LESSONS: the
host name as default id did that); a restarted process must get its old id back
to take its runs at once rather than after their leases expire.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from continuum_py import Engine, Registry

HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def _own_runtime_dir(tmp_path, monkeypatch):
    # Slots of this test only: other processes on the machine take their own.
    monkeypatch.setenv("CONTINUUM_RUNTIME_DIR", str(tmp_path / "runtime"))


async def test_live_engines_get_distinct_ids_and_a_closed_ones_id_is_reused():
    a = Engine("memory://", registry=Registry())
    b = Engine("memory://", registry=Registry())
    assert (a.worker_id, b.worker_id) == (f"{HOST}-0", f"{HOST}-1")
    async with a:
        pass
    c = Engine("memory://", registry=Registry())
    assert c.worker_id == f"{HOST}-0"
    async with b, c:
        pass


def test_a_client_or_an_explicit_id_takes_no_slot():
    client = Engine("memory://", registry=Registry(), worker=False)
    assert client.worker_id == f"{HOST}-pid{os.getpid()}"
    named = Engine("memory://", registry=Registry(), worker_id="w-explicit")
    assert named.worker_id == "w-explicit"
    worker = Engine("memory://", registry=Registry())
    assert worker.worker_id == f"{HOST}-0"


APP = """
import asyncio, sys
from continuum_py import Context, Engine, step, workflow

@step
async def slow(i: int) -> int:
    print("step", i, "attempt", __import__("continuum_py").StepInfo.current().attempt, flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    return i

@workflow
async def job(ctx: Context) -> int:
    return await slow(1)

async def main():
    # A lease far longer than the test: only taking its own run back finishes it in time.
    async with Engine(sys.argv[1], lease_ttl=600) as engine:
        print("id", engine.worker_id, flush=True)
        h = await engine.start(job, run_id="job-1")
        print("result", await h.result(timeout=60), flush=True)

asyncio.run(main())
"""


def test_a_process_restarted_after_sigkill_gets_its_id_and_its_run_back(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    url = f"sqlite:///{tmp_path}/j.db"
    env = {**os.environ, "CONTINUUM_RUNTIME_DIR": str(tmp_path / "runtime")}
    first = subprocess.Popen(
        [sys.executable, "app.py", url, "60"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None
    lines = [first.stdout.readline().strip(), first.stdout.readline().strip()]
    assert lines == [f"id {HOST}-0", "step 1 attempt 1"]
    # A second live process gets another id.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from continuum_py import Engine; print(Engine('memory://').worker_id)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == f"{HOST}-1"
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    started = time.monotonic()
    again = subprocess.run(
        [sys.executable, "app.py", url, "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    out = again.stdout.split("\n")
    assert out[0] == f"id {HOST}-0"
    assert "step 1 attempt 2" in out and "result 1" in out
    assert time.monotonic() - started < 600  # not after the old lease expired


def test_without_a_usable_runtime_folder_the_id_is_unique_to_the_process(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CONTINUUM_RUNTIME_DIR", str(blocker / "runtime"))
    assert Engine("memory://", registry=Registry()).worker_id == f"{HOST}-pid{os.getpid()}"
