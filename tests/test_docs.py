"""The documentation's code samples run, and print what the documentation says they print.

Every ```python block in README.md and docs/**/*.md runs, except one preceded by
``<!-- no-run -->`` (kept for fragments that cannot stand alone).
The runnable blocks of one page run in order, in one fresh interpreter, in one
shared namespace (a page builds on its earlier blocks), in a temporary folder,
so ``sqlite:///runs.db`` lands in a throwaway file.
A ```text block preceded by ``<!-- expected-output -->`` is what the python
block just before it prints, exactly.
Logging is left unconfigured, as a reader's program leaves it: the library
prints nothing on stdout, so its lines never mix with the output a page shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

NO_RUN = "<!-- no-run -->"
EXPECTED = "<!-- expected-output -->"
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the first code line
    code: str
    marker: str | None  # the HTML comment just before the fence, if any


@dataclass
class Sample:
    line: int
    code: str
    expected: str | None = None


@dataclass
class Page:
    path: Path
    samples: list[Sample] = field(default_factory=list)
    skipped: int = 0


def _blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: str | None = None
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            stripped = lines[i].strip()
            if stripped.startswith("<!--") and stripped.endswith("-->"):
                marker = stripped
            elif stripped:
                marker = None
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        start = i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        blocks.append(Block(lang, start + 1, "\n".join(lines[start:i]) + "\n", marker))
        marker = None
        i += 1
    return blocks


def parse(path: Path) -> Page:
    page = Page(path)
    for block in _blocks(path.read_text(encoding="utf-8")):
        if block.lang == "python":
            if block.marker == NO_RUN:
                page.skipped += 1
            else:
                page.samples.append(Sample(block.line, block.code))
        elif block.marker == EXPECTED:
            assert page.samples, f"{path}:{block.line}: expected output with no python block before"
            assert page.samples[-1].expected is None, f"{path}:{block.line}: two expected outputs"
            page.samples[-1].expected = block.code
    return page


# Runs a page's samples in one namespace. Each sample is compiled with its real
# line numbers and file name, so a traceback points into the markdown file.
RUNNER = r"""
import json, sys, types
path, samples = sys.argv[1], json.loads(sys.stdin.read())
module = types.ModuleType("__main__")
module.__file__ = path
sys.modules["__main__"] = module
for i, (line, code) in enumerate(samples):
    print(f"\x1esample {i}", flush=True)
    exec(compile("\n" * (line - 1) + code, path, "exec"), module.__dict__)
print("\x1eend", flush=True)
"""


def _run(
    page: Page, cwd: Path, *, timeout: float = 120, env: dict[str, str] | None = None
) -> list[str]:
    where = page.path.relative_to(ROOT)
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-c", RUNNER, str(page.path)],
            input=json.dumps([[s.line, s.code] for s in page.samples]),
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        started = re.findall(r"\x1esample (\d+)", out)
        line = page.samples[int(started[-1])].line if started else 0
        pytest.fail(f"{where}:{line}: still running after {timeout}s (hung?)")
    assert proc.returncode == 0, f"{where} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Exception ignored" not in proc.stderr, f"{where}:\n{proc.stderr}"
    parts = proc.stdout.split("\x1e")
    assert parts[-1].startswith("end"), proc.stdout
    # parts[0] is empty; each later part is "sample i\n<its output>".
    return [p.split("\n", 1)[1] if "\n" in p else "" for p in parts[1:-1]]


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _check_outputs(page: Page, outputs: list[str], when: str = "") -> None:
    assert len(outputs) == len(page.samples)
    for sample, out in zip(page.samples, outputs, strict=True):
        if sample.expected is not None:
            got = "\n".join(line.rstrip() for line in out.rstrip().splitlines())
            want = "\n".join(line.rstrip() for line in sample.expected.rstrip().splitlines())
            assert got == want, f"{_page_id(page.path)}:{sample.line}: output differs{when}"


@pytest.mark.parametrize("path", [p for p in PAGES if parse(p).samples], ids=_page_id)
def test_page_samples_run_and_print_what_the_page_shows(path: Path, tmp_path: Path) -> None:
    page = parse(path)
    _check_outputs(page, _run(page, tmp_path))


@pytest.mark.parametrize("path", [p for p in PAGES if parse(p).samples], ids=_page_id)
def test_page_samples_run_again_in_the_same_folder(path: Path, tmp_path: Path) -> None:
    # A reader runs a page, then runs it again where they ran it: the files the
    # first run left (tutorial.db, runs.db, ...) must not make the second hang,
    # fail or print something other than the page shows. A hang fails at the timeout.
    page = parse(path)
    _check_outputs(page, _run(page, tmp_path, timeout=60), " on the first run")
    _check_outputs(page, _run(page, tmp_path, timeout=60), " when run again in the same folder")


def test_readme_sample_is_collected_and_runnable() -> None:
    readme = parse(ROOT / "README.md")
    assert any("@workflow" in s.code and "asyncio.run(main())" in s.code for s in readme.samples)


def test_only_a_few_samples_are_marked_no_run() -> None:
    pages = [parse(p) for p in PAGES]
    runnable = sum(len(p.samples) for p in pages)
    skipped = sum(p.skipped for p in pages)
    assert runnable >= 20
    assert skipped <= runnable // 4, "most samples must run; mark only true fragments no-run"


@pytest.mark.postgres
def test_transactional_steps_page_runs_on_postgres(pg_schema, tmp_path: Path) -> None:
    # The page's journal URL comes from SHOP_URL: the journal in one fresh schema,
    # the app's ledger (search_path) in another; both are dropped with the session's.
    dsn, schema = pg_schema
    url = f"{dsn}?schema={schema}_docs_journal&search_path={schema}_docs_shop"
    page = parse(ROOT / "docs" / "howto" / "transactional-steps.md")
    for when in (" on Postgres", " on Postgres, run again"):
        _check_outputs(page, _run(page, tmp_path, timeout=60, env={"SHOP_URL": url}), when)


def test_adapter_howto_conformance_sample_passes_under_pytest(tmp_path: Path) -> None:
    # The how-to's test module, written where a reader would keep it and run with
    # pytest outside this repository's configuration (pytest-asyncio's default,
    # strict mode): every test of the shipped suite runs, none is skipped.
    page = parse(ROOT / "docs" / "howto" / "write-a-journal-adapter.md")
    [sample] = [s for s in page.samples if "JournalConformance" in s.code]
    (tmp_path / "test_my_journal.py").write_text(sample.code, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "test_my_journal.py",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), summary
    assert int(summary.split()[0]) >= 80, summary


# continuum-py is not published on a package index, so `pip install continuum-py`
# fails: every install command a page gives must install from the checkout.
PUBLISHED_INSTALL = re.compile(r"pip install\s+['\"]?continuum[-_]py", re.I)


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_install_commands_install_from_the_checkout(path: Path) -> None:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert not PUBLISHED_INSTALL.search(line), f"{_page_id(path)}:{n}: {line.strip()}"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_relative_links_point_to_existing_files(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        assert file.exists(), f"{_page_id(path)} links to missing {target}"


def test_parser_reads_markers_and_expected_output(tmp_path: Path) -> None:
    md = tmp_path / "p.md"
    md.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n<!-- expected-output -->\n```text\n1\n```\n\n"
        "<!-- no-run -->\n```python\nraise SystemExit(1)\n```\n\n```python\nx = 2\n```\n"
    )
    page = parse(md)
    assert [(s.line, s.code, s.expected) for s in page.samples] == [
        (4, "print(1)\n", "1\n"),
        (18, "x = 2\n", None),
    ]
    assert page.skipped == 1
