"""`continuum replay` as a debugging tool, and `continuum diff`.

Each test runs the installed console script in a subprocess, against a SQLite
journal and (with CONTINUUM_TEST_PG_DSN) a Postgres one. The runs are recorded
once per journal by a subprocess running `shop.py`; other versions of the
workflow code are other modules defining the same workflow name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).with_name("continuum"))

SHOP = """
from continuum_py import Context, RetryPolicy, step, workflow


@step
async def price(item: str) -> int:
    return {"book": 1200, "pen": 300}[item]


@step
async def charge(item: str, cents: int) -> str:
    return "declined" if cents > 1000 else "paid"


@step
async def ship(item: str) -> str:
    return f"shipped {item}"


@step
async def refund(item: str) -> str:
    return f"refunded {item}"


@workflow(name="order")
async def order(ctx: Context, item: str) -> str:
    cents = await price(item)
    status = await charge(item, cents)
    note = f"{item} at {cents}"
    if status == "paid":
        when = ctx.now()
        await ctx.sleep(60)
        return await ship(item)
    return await refund(item)


@step
async def release(reservation: str, item: str) -> None:
    return None


@step(compensate=release)
async def reserve(item: str) -> str:
    return f"r-{item}"


@step(retry=RetryPolicy(max_attempts=1))
async def pay(item: str) -> str:
    if item == "book":
        raise ValueError("card declined")
    return "paid"


@workflow(name="saga")
async def saga(ctx: Context, item: str) -> str:
    await reserve(item)
    return await pay(item)


@workflow(name="approval")
async def approval(ctx: Context, item: str) -> str:
    cents = await price(item)
    ok = await ctx.wait_for_signal("approve")
    return f"{item}: {ok}"
"""

RECORD = """
import asyncio, sys
import shop
from continuum_py import Engine, RunFailed, RunStatus
from continuum_py.testing import VirtualClock

async def main():
    async with Engine(sys.argv[1], clock=VirtualClock()) as engine:
        for run_id, item in [("pen-1", "pen"), ("pen-2", "pen"), ("book-1", "book"), ("pen-3", "pen")]:
            await (await engine.start(shop.order, item, run_id=run_id)).result(timeout=30)
        await (await engine.start(shop.saga, "pen", run_id="saga-pen")).result(timeout=30)
        try:
            await (await engine.start(shop.saga, "book", run_id="saga-book")).result(timeout=30)
        except RunFailed:
            pass
        await engine.start(shop.approval, "pen", run_id="wait-1")
        for _ in range(400):
            if await (await engine.get("wait-1")).status() == RunStatus.SUSPENDED:
                return
            await asyncio.sleep(0.025)
        raise SystemExit("wait-1 never suspended")

asyncio.run(main())
"""


def _variant(old: str, new: str) -> str:
    assert old in SHOP
    return SHOP.replace(old, new)


# A new step before charge: every run of `order` parts at position 2.
V2 = _variant(
    "    status = await charge(item, cents)\n",
    "    await price(item)  # checked twice now\n    status = await charge(item, cents)\n",
)
# Only the declined path changed: refund became refund_card.
V3 = _variant("return await refund(item)", "return await refund_card(item)") + textwrap.dedent(
    """

    @step
    async def refund_card(item: str) -> str:
        return f"refunded {item}"
    """
)
# The same code with a breakpoint after the charge.
DEBUG = _variant(
    "        await ctx.sleep(60)\n", "        breakpoint()\n        await ctx.sleep(60)\n"
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shop(request, tmp_path_factory) -> tuple[Path, str]:
    """(folder with the code, journal URL) holding four finished orders and one waiting run."""
    folder = tmp_path_factory.mktemp("shop")
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        url = f"{dsn}?schema={schema}_{uuid.uuid4().hex[:8]}"
    else:
        url = f"sqlite:///{folder}/j.db"
    for name, code in [
        ("shop", SHOP),
        ("shop_v2", V2),
        ("shop_v3", V3),
        ("shop_debug", DEBUG),
        ("other", "X = 1\n"),
    ]:
        (folder / f"{name}.py").write_text(code)
    (folder / "record.py").write_text(RECORD)
    done = subprocess.run(
        [sys.executable, "record.py", url], cwd=folder, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return folder, url


def continuum(*args: str, cwd: Path, stdin: str | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("CONTINUUM_URL", "PYTHONBREAKPOINT")}
    return subprocess.run(
        [SCRIPT, *args],
        cwd=cwd,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def line_of(code: str, text: str) -> int:
    """The 1-based line number of the line of ``code`` holding ``text``."""
    return next(i for i, line in enumerate(code.splitlines(), 1) if text in line)


def replay_json(*args: str, cwd: Path) -> tuple[int, dict]:
    out = continuum("replay", *args, "--json", cwd=cwd)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


# ---- naming the workflow code ----


def test_the_code_can_be_named_by_its_file_path(shop):
    cwd, url = shop
    out = continuum(
        "replay", "pen-1", "--url", url, "--import", str(cwd / "shop.py"), cwd=cwd.parent
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "OK"


def test_replay_without_the_code_says_how_to_name_it_in_one_line(shop):
    cwd, url = shop
    out = continuum("replay", "pen-1", "--url", url, cwd=cwd)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert "WorkflowNotRegistered: workflow 'order' is not registered" in out.stderr
    assert "--import MODULE or --import path/to/file.py" in out.stderr


def test_a_missing_or_clashing_file_is_one_line_and_nothing_runs(shop):
    cwd, url = shop
    before = continuum("history", "pen-1", "--url", url, cwd=cwd).stdout
    missing = continuum("replay", "pen-1", "--url", url, "--import", "nope/shop.py", cwd=cwd)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == "continuum: --import 'nope/shop.py': no such file\n"
    clashing = cwd / "json.py"
    clashing.write_text("raise SystemExit('must not run')\n")
    try:
        clash = continuum("replay", "pen-1", "--url", url, "--import", "json.py", cwd=cwd)
    finally:
        clashing.unlink()
    assert clash.returncode == 2
    assert "a module named 'json' is already loaded" in clash.stderr
    assert continuum("history", "pen-1", "--url", url, cwd=cwd).stdout == before


# ---- point 3: replay one run, or every run of a workflow ----


def test_a_replay_that_passes_says_ok_and_what_the_run_returned(shop):
    cwd, url = shop
    out = continuum("replay", "pen-1", "--url", url, "--import", "shop", cwd=cwd)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "run pen-1 (order): 12 events, finished"
    assert lines[1:] == ["returned 'shipped pen'", "OK"]
    code, doc = replay_json("book-1", "--url", url, "--import", "shop", cwd=cwd)
    assert code == 0
    assert doc["ok"] and doc["finished"] and doc["result"] == "refunded book"
    assert doc["divergence"] is None


def test_a_waiting_run_replays_to_what_it_waits_on(shop):
    cwd, url = shop
    code, doc = replay_json("wait-1", "--url", url, "--import", "shop", cwd=cwd)
    assert code == 0 and not doc["finished"]
    assert doc["waiting_on"] == ["SignalWaitStarted(approve)"]
    assert doc["locals"] == {
        "ctx": "Context(run_id='wait-1', workflow='approval')",
        "item": "'pen'",
        "cents": "300",
    }
    assert [w["text"] for w in doc["where"]] == ['ok = await ctx.wait_for_signal("approve")']


def test_a_replay_after_a_code_change_names_position_events_and_source_line(shop):
    cwd, url = shop
    out = continuum("replay", "pen-1", "--url", url, "--import", "shop_v2", cwd=cwd)
    assert out.returncode == 1 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "run pen-1 (order): 3 events, then DIVERGED at position 2 (seq 4)"
    assert lines[1].startswith("  history has  StepScheduled(charge)  position=2 step=charge")
    assert lines[2] == "  code asked   StepScheduled(price)"
    # Shown relative to the folder the command runs in.
    where = f"shop_v2.py:{line_of(V2, 'checked twice')} in order"
    assert lines[3] == f"  asked at     {where}: await price(item)  # checked twice now"
    assert "a worker running this code would park the run" in lines[4]
    code, doc = replay_json("pen-1", "--url", url, "--import", "shop_v2", cwd=cwd)
    div = doc["divergence"]
    assert code == 1 and not doc["ok"]
    assert (div["position"], div["seq"], div["recorded"], div["requested"]) == (
        2,
        4,
        "StepScheduled(charge)",
        "StepScheduled(price)",
    )
    assert div["event"]["kind"] == "StepScheduled" and div["event"]["args"] == ["pen", 300]
    assert div["source"]["line"] == line_of(V2, "checked twice")


def test_a_history_file_replays_the_same_as_the_run(shop):
    cwd, url = shop
    hist = continuum("history", "book-1", "--url", url, cwd=cwd)
    (cwd / "book-1.json").write_text(hist.stdout)
    out = continuum("replay", "book-1.json", "--import", "shop_v3", cwd=cwd)
    assert out.returncode == 1
    assert "history has  StepScheduled(refund)" in out.stdout
    assert "code asked   StepScheduled(refund_card)" in out.stdout


def test_replay_all_summarises_every_run_of_the_workflow(shop):
    cwd, url = shop
    out = continuum(
        "replay", "--all", "--workflow", "order", "--url", url, "--import", "shop", cwd=cwd
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["4 runs of order: 4 ok, 0 diverged"]
    assert "replayed 4/4 runs of order" in out.stderr
    out = continuum(
        "replay", "--all", "--workflow", "order", "--url", url, "--import", "shop_v3", cwd=cwd
    )
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0] == "4 runs of order: 3 ok, 1 diverged"
    assert lines[1].startswith("  book-1: position 3 (seq 6): history has StepScheduled(refund)")
    assert f"shop_v3.py:{line_of(V3, 'refund_card(item)')} in order" in lines[1]
    code, doc = replay_json(
        "--all", "--workflow", "order", "--url", url, "--import", "shop_v3", cwd=cwd
    )
    assert code == 1
    assert (doc["runs"], doc["ok"], doc["failed"]) == (4, 3, [])
    assert [d["run_id"] for d in doc["diverged"]] == ["book-1"]
    assert doc["diverged"][0]["divergence"]["requested"] == "StepScheduled(refund_card)"


# ---- point 4: stop and look ----


def test_until_shows_the_workflow_locals_and_what_it_waits_on(shop):
    cwd, url = shop
    # seq 5 is charge's result: the code runs on to the sleep and waits there.
    code, doc = replay_json("pen-1", "--until", "5", "--url", url, "--import", "shop", cwd=cwd)
    assert code == 0 and doc["stopped_at"] == 5 and not doc["finished"]
    assert doc["locals"] == {
        "ctx": "Context(run_id='pen-1', workflow='order')",
        "item": "'pen'",
        "cents": "300",
        "status": "'paid'",
        "note": "'pen at 300'",
        "when": doc["locals"]["when"],
    }
    assert doc["locals"]["when"].startswith("datetime.datetime(")
    assert [w["text"] for w in doc["where"]] == ["await ctx.sleep(60)"]
    assert [a["what"] for a in doc["asks"]] == ["TimerStarted"]
    out = continuum("replay", "pen-1", "--until", "3", "--url", url, "--import", "shop", cwd=cwd)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "run pen-1 (order): 3 events, stopped after seq 3",
        f"at shop.py:{line_of(SHOP, 'await charge(')} in order: status = await charge(item, cents)",
        "asks for StepScheduled(charge) with ('pen', 300) (position 2) at shop.py:"
        f"{line_of(SHOP, 'await charge(')} in order: status = await charge(item, cents)",
        "locals:",
        "  ctx = Context(run_id='pen-1', workflow='order')",
        "  item = 'pen'",
        "  cents = 300",
        "OK",
    ]


def test_step_walks_event_by_event_from_stdin(shop):
    cwd, url = shop
    # Enter three times, then q: events 1 to 4 are shown, then the replay stops.
    out = continuum(
        "replay", "book-1", "--step", "--url", url, "--import", "shop", cwd=cwd, stdin="\n\n\nq\n"
    )
    assert out.returncode == 0, out.stderr
    shown = [line.split("  ")[0] for line in out.stdout.splitlines() if line.startswith("seq ")]
    assert shown == ["seq 1", "seq 2", "seq 3", "seq 4"]
    assert "  locals: ctx=Context(run_id='book-1', workflow='order'), item='book', cents=1200" in (
        out.stdout
    )
    assert "run book-1 (order): 4 events, stopped after seq 4" in out.stdout
    assert out.stderr.count("[Enter] next") == 4
    # c runs on to the end without asking again.
    out = continuum(
        "replay", "book-1", "--step", "--url", url, "--import", "shop", cwd=cwd, stdin="c\n"
    )
    assert out.returncode == 0
    assert out.stderr.count("[Enter] next") == 1
    assert out.stdout.splitlines()[-2:] == ["returned 'refunded book'", "OK"]


def test_breakpoint_in_workflow_code_stops_the_replay_with_recorded_time(shop):
    cwd, url = shop
    hist = json.loads(continuum("history", "pen-2", "--url", url, cwd=cwd).stdout)
    recorded = next(e["value"] for e in hist if e["kind"] == "SideEffectRecorded")
    recorded_now = dt.datetime.fromtimestamp(recorded, dt.UTC).isoformat()
    out = continuum(
        "replay",
        "pen-2",
        "--url",
        url,
        "--import",
        "shop_debug",
        cwd=cwd,
        stdin="p status, cents\np when.isoformat()\nc\n",
    )
    assert out.returncode == 0, out.stderr
    assert "('paid', 300)" in out.stdout
    # ctx.now() gave the time recorded in the history, not the time of the replay.
    assert f"\n(Pdb) {recorded_now!r}\n" in out.stdout
    assert out.stdout.splitlines()[-2:] == ["returned 'shipped pen'", "OK"]
    # q at the prompt (reached after seq 5, charge's result) ends the replay there:
    # no divergence, no traceback.
    out = continuum("replay", "pen-2", "--url", url, "--import", "shop_debug", cwd=cwd, stdin="q\n")
    assert out.returncode == 0, out.stderr
    assert "run pen-2 (order): 5 events, stopped after seq 5: the debugger quit" in out.stdout


# ---- point 6: what if, and diff ----


def test_what_if_a_step_had_returned_otherwise_takes_the_other_branch(shop):
    cwd, url = shop
    out = continuum(
        "replay", "pen-1", "--what-if", '2="declined"', "--url", url, "--import", "shop", cwd=cwd
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == 'what if position 2 (charge) had given "declined":'
    assert lines[1] == (
        "the code leaves the recorded path at position 3 (seq 6): history has "
        "SideEffectRecorded(now), the code asks for StepScheduled(refund)"
    )
    assert any(
        line.startswith("asks for StepScheduled(refund) with ('pen') (position 3)")
        for line in lines
    )
    assert "  status = 'declined'" in lines
    code, doc = replay_json(
        "book-1", "--what-if", '2="paid"', "--url", url, "--import", "shop", cwd=cwd
    )
    assert code == 0 and doc["what_if"] == {"2": "paid"}
    assert [a["what"] for a in doc["asks"]] == ["SideEffectRecorded(now)", "TimerStarted"]
    assert doc["divergence"]["recorded"] == "StepScheduled(refund)"


def test_diff_names_the_first_differing_event(shop):
    cwd, url = shop
    same = continuum("diff", "pen-1", "pen-2", "--url", url, cwd=cwd)
    assert same.returncode == 0, same.stderr
    assert "took the same path (5 positions) to the same end: completed" in same.stdout
    out = continuum("diff", "pen-1", "book-1", "--url", url, cwd=cwd)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines() == [
        "runs pen-1 and book-1 (order)",
        '  input      a: ["pen"]',
        '             b: ["book"]',
        "first difference at position 1 (input differs), after 0 positions alike:",
        '  a  step price with ["pen"] -> returned 300',
        '  b  step price with ["book"] -> returned 1200',
        "the paths part at position 3:",
        f"  a  ctx.now() -> gave {json.dumps(out_now(cwd, url, 'pen-1'))}",
        '  b  step refund with ["book"] -> returned "refunded book"',
        '  a ended  completed "shipped pen"',
        '  b ended  completed "refunded book"',
    ]
    doc = json.loads(continuum("diff", "pen-1", "book-1", "--url", url, "--json", cwd=cwd).stdout)
    assert doc["first_difference"]["position"] == 1
    assert doc["first_difference"]["what"] == "input"
    assert doc["paths_part"]["position"] == 3
    assert doc["paths_part"]["b"]["command"] == "step refund"
    assert doc["end"]["b"] == {"status": "completed", "value": "refunded book"}
    # A history file stands for a run, as in replay.
    (cwd / "pen-2.json").write_text(continuum("history", "pen-2", "--url", url, cwd=cwd).stdout)
    same = continuum("diff", "pen-1", "pen-2.json", "--url", url, "--json", cwd=cwd)
    assert same.returncode == 0 and json.loads(same.stdout)["same"], same.stderr


def test_diff_and_replay_of_a_saga_show_the_compensation(shop):
    cwd, url = shop
    out = continuum("diff", "saga-pen", "saga-book", "--url", url, cwd=cwd)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert "the paths part at position 3:" in lines
    parted = lines.index("the paths part at position 3:")
    assert lines[parted + 1 : parted + 3] == [
        "  a  nothing at this position",
        '  b  compensate -> started "failed"',
    ]
    assert lines[-1].startswith("  b ended  failed \"ValueError: step 'pay' (position 2) failed")
    rep = continuum("replay", "saga-book", "--url", url, "--import", "shop", cwd=cwd)
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.splitlines()[-2:] == [
        "raised StepError: step 'pay' (position 2) failed after 1 attempt(s): "
        "ValueError: card declined",
        "OK",
    ]


def out_now(cwd: Path, url: str, run_id: str) -> float:
    hist = json.loads(continuum("history", run_id, "--url", url, cwd=cwd).stdout)
    return next(e["value"] for e in hist if e["kind"] == "SideEffectRecorded")


# ---- bad input: one line, exit 2 ----


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["replay", "nope", "--import", "shop"], "no run with run_id 'nope'"),
        (["replay", "pen-1", "--import", "other"], "workflow 'order' is not registered"),
        (
            ["replay", "--all", "--workflow", "order", "--import", "other"],
            "workflow 'order' is not registered",
        ),
        (["replay", "pen-1", "--import", "shop", "--what-if", "2:paid"], "POSITION=JSON"),
        (["replay", "pen-1", "--import", "shop", "--what-if", "2=paid"], "the value is not JSON"),
        (["replay", "pen-1", "--import", "shop", "--what-if", "4=1"], "holds no step"),
        (["replay", "pen-1", "--import", "shop", "--what-if", "2=5"], "does not fit"),
        (["replay", "pen-1", "--import", "shop", "--until", "99"], "beyond the history"),
        (["replay", "pen-1", "--import", "shop", "--until", "x"], "--until takes"),
        (["replay", "--all", "--import", "shop"], "--all needs --workflow"),
        (["replay", "pen-1", "--import", "no_such_module"], "cannot import 'no_such_module'"),
        (["diff", "pen-1", "nope"], "no run with run_id 'nope'"),
        (["diff", "pen-1", "wait-1"], "different workflows"),
    ],
)
def test_bad_input_is_one_line(shop, args, says):
    cwd, url = shop
    line = one_line_error(continuum(*args, "--url", url, cwd=cwd))
    assert says in line, line
