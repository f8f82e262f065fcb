"""engine.start's argument check: counting decides only where bind() would agree."""

from __future__ import annotations

import inspect

import pytest

from continuum_py import Context, workflow


async def plain(ctx: Context, a: int, b: int) -> None: ...
async def defaults(ctx: Context, a: int, b: int = 1, c: int = 2) -> None: ...
async def star(ctx: Context, a: int, *rest: int) -> None: ...
async def kw_required(ctx: Context, a: int, *, k: int) -> None: ...
async def kw_default(ctx: Context, a: int, *, k: int = 0, **more: int) -> None: ...
async def nothing(ctx: Context) -> None: ...
async def positional_only(ctx: Context, a: int, /, b: int) -> None: ...


@pytest.mark.parametrize(
    "fn", [plain, defaults, star, kw_required, kw_default, nothing, positional_only]
)
@pytest.mark.parametrize("n", range(6))
def test_check_args_refuses_exactly_what_bind_refuses(fn, n):
    wf = workflow(name=f"args.{fn.__name__}")(fn)
    args = tuple(range(n))
    try:
        inspect.signature(fn).bind(None, *args)
        fits = True
    except TypeError:
        fits = False
    if fits:
        wf.check_args(args)
    else:
        with pytest.raises(TypeError):
            wf.check_args(args)
