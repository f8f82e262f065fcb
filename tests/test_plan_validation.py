"""Bad plans are refused before anything runs; a bad state value fails at its write.

Also the previews: ``rollback_order`` and ``to_mermaid``.
"""

from __future__ import annotations

import pytest

from continuum_py import (
    ConfigurationError,
    EncodingError,
    Engine,
    Plan,
    PlanError,
    PlanFailed,
    PlanState,
    Registry,
    RetryPolicy,
)


async def ok(state: PlanState) -> str:
    return "ok"


async def undo(state: PlanState) -> None:
    return None


def plan(name: str = "p") -> Plan:
    return Plan(name, registry=Registry())


def test_a_duplicate_branch_name_is_refused_at_once():
    p = plan()
    p.add("db", ok)
    with pytest.raises(PlanError, match="duplicate branch name 'db'"):
        p.add("db", ok)
    assert list(p.branches) == ["db"]


def test_a_cycle_is_named_branch_by_branch():
    p = plan()
    p.add("a", ok, after=["c"])
    p.add("b", ok, after=["a"])
    p.add("c", ok, after=["b"])
    p.add("d", ok)
    with pytest.raises(PlanError, match=r"cycle a -> c -> b -> a"):
        p.check()


def test_a_branch_depending_on_itself_is_a_cycle():
    with pytest.raises(PlanError, match="cycle x -> x"):
        plan().add("x", ok, after=["x"])


def test_a_dependency_on_an_unknown_branch_is_refused():
    p = plan()
    p.add("app", ok, after=["db"])
    with pytest.raises(PlanError, match="branch 'app' depends on unknown branch 'db'"):
        p.check()
    p.add("db", ok)  # added later: forward references are fine
    p.check()


def test_a_pause_after_an_unknown_branch_is_refused():
    p = plan()
    p.add("a", ok)
    p.pause("b", 10)
    with pytest.raises(PlanError, match="pause after unknown branch 'b'"):
        p.check()
    with pytest.raises(PlanError, match="already set"):
        p.pause("b", 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"after": "db"}, "after must be a list of branch names"),
        ({"after": [3]}, "not a branch name"),
        ({"rollback": lambda s: None}, "rollback must be an async def"),
        ({"on_error": 5}, "on_error must be callable"),
    ],
)
def test_bad_branch_options_are_refused(kwargs, message):
    with pytest.raises(PlanError, match=message):
        plan().add("b", ok, **kwargs)


def test_bad_option_values_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="timeout"):
        Plan("p", timeout=-1, registry=Registry())
    with pytest.raises(ConfigurationError, match="continue_on_error"):
        Plan("p", continue_on_error="yes", registry=Registry())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry"):
        plan().add("b", ok, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="pause"):
        plan().pause("b", float("nan"))
    with pytest.raises(PlanError, match="must be an async def"):
        plan().add("b", "not a function")  # type: ignore[arg-type]


async def test_starting_a_bad_plan_records_nothing():
    reg = Registry()
    p = Plan("broken", registry=reg)
    p.add("a", ok, after=["b"])
    p.add("b", ok, after=["a"])
    async with Engine("memory://", registry=reg) as eng:
        with pytest.raises(PlanError, match="cycle"):
            await eng.start(p, run_id="never")
        assert await eng.list_runs() == []
    with pytest.raises(PlanError, match="no branches"):
        plan().check()


async def test_an_unencodable_state_value_fails_at_its_write_naming_the_key():
    reg = Registry()
    where: list[str] = []

    async def writes(state: PlanState) -> str:
        try:
            state["conn"] = object()
        except EncodingError as exc:
            where.append(str(exc))
            raise
        return "unreachable"

    p = Plan("bad-state", registry=reg)
    p.add("a", writes, retry=RetryPolicy(max_attempts=3, initial_interval=0))
    async with Engine("memory://", registry=reg) as eng:
        with pytest.raises(PlanFailed) as info:
            await (await eng.start(p)).result(timeout=5)
    assert len(where) == 1  # not retried: it would fail the same way again
    assert "PlanState['conn']" in where[0]
    assert info.value.failures["a"].type == "continuum_py.errors.EncodingError"
    assert "PlanState['conn']" in info.value.failures["a"].message


def test_state_keys_are_strings_and_on_error_state_is_read_only():
    state = PlanState((), {}, {"a": 1})
    with pytest.raises(PlanError, match="non-empty strings"):
        state[3] = "x"  # type: ignore[index]
    read_only = PlanState((), {}, {}, writable=False)
    with pytest.raises(PlanError, match="read-only"):
        read_only["k"] = 1
    assert state["a"] == 1 and state.get("b", 2) == 2 and "a" in state


def test_rollback_order_previews_the_worst_case_in_reverse_dependency_order():
    p = plan()
    p.add("net", ok, rollback=undo)
    p.add("db", ok, after=["net"], rollback=undo)
    p.add("cache", ok, after=["net"], rollback=undo)
    p.add("app", ok, after=["db", "cache"], rollback=undo)
    p.add("dns", ok)  # no rollback: nothing to preview
    assert p.rollback_order(failed="app") == ["cache", "db", "net"]
    assert p.rollback_order(failed=["db"]) == ["cache", "net"]
    assert p.rollback_order() == ["app", "cache", "db", "net"]
    with pytest.raises(PlanError, match="unknown branch 'nope'"):
        p.rollback_order(failed="nope")


def test_to_mermaid_draws_edges_pauses_and_hooks():
    p = plan()
    p.add("net", ok, rollback=undo)
    p.add("db", ok, after=["net"])
    p.pause("net", 30)
    assert p.to_mermaid() == (
        "graph TD\n"
        '    b0["net<br/><small>rollback</small>"]\n'
        '    b1["db"]\n'
        "    b0 -->|pause 30s| b1\n"
    )


def test_two_plans_of_one_name_are_refused_and_a_plan_is_not_a_plain_call():
    reg = Registry()
    Plan("twin", registry=reg).add("a", ok)
    with pytest.raises(ConfigurationError, match="two plans are named 'twin'"):
        Plan("twin", registry=reg)
    p = plan()
    p.add("a", ok)
    with pytest.raises(PlanError, match=r"start it with engine.start\(plan"):
        p()
