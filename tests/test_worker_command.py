"""`continuum worker`: runs the runs it can import, and shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from helpers import wait_until

from continuum_py import Engine, RunStatus

FLOWS = textwrap.dedent(
    """
    import asyncio, os
    from continuum_py import Context, step, workflow

    @step
    async def slow(x: int) -> int:
        # A file per attempt lets the test see the step is running.
        open(os.path.join(os.environ["MARKS"], f"slow-{x}"), "a").close()
        await asyncio.sleep(float(os.environ.get("SLOW", "0")))
        return x + 1

    @workflow
    async def chain(ctx: Context, x: int) -> int:
        a = await slow(x)
        return await slow(a * 100)
    """
)


def _worker(tmp_path, url: str, *extra: str, slow: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "MARKS": str(tmp_path), "SLOW": str(slow), "PYTHONPATH": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "continuum_py", "worker", "--url", url, "--import", "flows", *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_worker_runs_started_runs_and_stops_on_sigterm(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    url = f"sqlite:///{tmp_path}/j.db"
    proc = _worker(tmp_path, url, "--concurrency", "4")
    try:
        async with Engine(url, worker=False) as client:
            handles = [await client.start("chain", i, run_id=f"r{i}") for i in range(5)]
            assert [await h.result(timeout=30) for h in handles] == [
                (i + 1) * 100 + 1 for i in range(5)
            ]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "worker.started" in err and "worker.stopped" in err


async def test_sigterm_lets_the_running_step_finish_then_releases_the_run(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    url = f"sqlite:///{tmp_path}/j.db"
    proc = _worker(tmp_path, url, "--worker-id", "w1", "--grace", "20", slow=1.0)
    try:
        async with Engine(url, worker=False) as client:
            h = await client.start("chain", 1, run_id="g")

            async def running() -> bool:
                return (tmp_path / "slow-1").exists()

            await wait_until(running, timeout=30)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 0, err
            rec = await h.record()
            # The step that was running finished and was recorded; the next was not
            # started; the run was handed back for any worker.
            assert rec.status == RunStatus.PENDING and rec.lease_owner is None
            statuses = [(s.step, s.status, s.attempts) for s in await h.steps()]
            assert statuses == [("slow", "completed", 1)]
            assert not (tmp_path / "slow-200").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    # Another worker finishes it without running the first step again.
    proc2 = _worker(tmp_path, url)
    try:
        async with Engine(url, worker=False) as client:
            assert await (await client.get("g")).result(timeout=30) == 201
            assert [s.attempts for s in await (await client.get("g")).steps()] == [1, 1]
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.communicate(timeout=30)


def test_worker_with_a_missing_module_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "continuum_py", "worker", "--import", "no_such_mod"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "cannot import 'no_such_mod'" in out.stderr


STDLIB_LOGGING = textwrap.dedent(
    """
    import logging, sys
    import structlog

    # An application that sends structlog through the standard library.
    logging.basicConfig(stream=sys.stderr, format="%(name)s|%(message)s", level=logging.INFO)
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    """
)


async def test_worker_lines_log_under_the_continuum_py_logger(tmp_path):
    # One name scheme: the worker command's own lines are under continuum_py
    # too, so `logging.getLogger("continuum_py")` governs them.
    (tmp_path / "flows.py").write_text(STDLIB_LOGGING + FLOWS)
    url = f"sqlite:///{tmp_path}/j.db"
    proc = _worker(tmp_path, url)
    try:
        async with Engine(url, worker=False) as client:
            assert await (await client.start("chain", 1)).result(timeout=30) == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    started = [line for line in err.splitlines() if "worker.started" in line]
    assert [line.split("|")[0] for line in started] == ["continuum_py.worker"], err
