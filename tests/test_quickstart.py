"""docs/quickstart.py as a user runs it: logs on stderr, Ctrl-C exits cleanly, the run resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parent.parent / "docs" / "quickstart.py"

pytestmark = pytest.mark.slow


def test_ctrl_c_exits_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(QUICKSTART)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        if "'charge card' running" in line:
            proc.send_signal(signal.SIGINT)  # Ctrl-C while the second step runs
            break
    rest, err = proc.communicate(timeout=60)
    stdout = "".join(out) + rest
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.rstrip().splitlines()[-1] == (
        "interrupted: run quickstart is recorded and resumes when you run this command again"
    )
    assert " run.started run_id=quickstart " in err  # the engine's lines go to stderr ...
    assert "run." not in stdout  # ... never mixed with the program's own output

    again = subprocess.run(
        [sys.executable, str(QUICKSTART)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert " run.resumed run_id=quickstart " in again.stderr
    assert "'reserve stock' running" not in again.stdout  # recorded: it does not run again
    assert "'charge card' running (attempt 2)" in again.stdout
    assert again.stdout.splitlines()[-1] == "history holds 5 completed steps"
