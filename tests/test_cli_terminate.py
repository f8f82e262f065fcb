"""`continuum cancel` and `continuum terminate`: end runs from a shell."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from continuum_py import Context, Engine, Registry, RunStatus, workflow

reg = Registry()


@workflow(registry=reg, name="waits")
async def waits(ctx: Context) -> str:
    return await ctx.wait_for_signal("never")


def continuum(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "continuum_py", *args], cwd=cwd, capture_output=True, text=True
    )


def _start(url: str, *run_ids: str) -> None:
    async def main() -> None:
        async with Engine(url, registry=reg, worker=False) as client:
            for rid in run_ids:
                await client.start(waits, run_id=rid)

    asyncio.run(main())


def _status(url: str, run_id: str) -> tuple[RunStatus, str | None]:
    async def main():
        async with Engine(url, registry=reg, worker=False) as client:
            rec = await (await client.get(run_id)).record()
            return rec.status, rec.reason

    return asyncio.run(main())


def test_terminate_and_cancel_from_the_command_line(tmp_path):
    url = f"sqlite:///{tmp_path}/j.db"
    _start(url, "a", "b")
    out = continuum("terminate", "a", "--reason", "stuck since Tuesday", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "run a terminated: stuck since Tuesday" in out.stdout
    assert _status(url, "a") == (RunStatus.CANCELLED, "stuck since Tuesday")
    out = continuum("cancel", "b", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # No worker ran: the cancel waits in the run's inbox for one.
    assert _status(url, "b")[0] == RunStatus.PENDING


def test_bad_input_is_one_line_and_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/j.db"
    _start(url, "a")
    continuum("terminate", "a", "--url", url, cwd=tmp_path)
    for args in (
        ("terminate", "a", "--url", url),  # already finished
        ("terminate", "ghost", "--url", url),
        ("cancel", "ghost", "--url", url),
        ("terminate", "a", "--url", f"sqlite:///{tmp_path}/typo.db"),
    ):
        out = continuum(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "typo.db").exists()
    assert _status(url, "a")[0] == RunStatus.CANCELLED
