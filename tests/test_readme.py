"""The documentation's examples work as written.

* every ```python block of README.md and docs/usage.md runs, in a folder holding a small
  ``photo.png`` (the file name the examples use);
* every ``alr ...`` command line of the README, docs/ and the model cards (code blocks, and
  inline ``alr ...`` examples in table rows) parses with the command's own parser
  (:func:`alr.cli.build_parser`, or :func:`alr.bench.experiments.bench_parser` for ``alr bench``);
* relative links between the pages point at files that exist, and every test a page names
  (``test_file.py::test_name`` or a bare ``test_name``) is defined;
* the README stays short, with restoring an image in its first screen;
* the README's results table is the mean of the per-image rows kept in docs/results/.
"""
from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import pytest

from alr import pretrained
from alr.bench.experiments import bench_parser
from alr.cli import build_parser
from alr.critic import PatchCritic
from alr.data import add_noise
from alr.images import write_image
from alr.settings import opponent_by_default

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "docs" / "models" / "table1" / "README.md",
         ROOT / "src" / "alr" / "models" / "README.md", ROOT / "research" / "README.md"]
RUN_PYTHON = [README, ROOT / "docs" / "usage.md"]
#: Pages that other work adds beside this one; a link to them may point nowhere until it lands.
PENDING: set[str] = set()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == "python"]


def command_lines(path: Path) -> list[str]:
    """The ``alr`` command lines of a page: code lines (fenced, or indented by 4 spaces outside a
    fence) that start with ``alr`` once continuation backslashes are joined, and inline
    ``alr ...`` spans with an option in table rows (a span without one names a command)."""
    lines, out, fenced, pending = path.read_text().splitlines(), [], None, ""
    for line in lines:
        if line.startswith("```"):
            fenced = None if fenced is not None else line[3:]
            continue
        code = fenced not in (None, "python") or (fenced is None and line.startswith("    "))
        if code:
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text.startswith("alr "):
                out.append(text)
        elif line.lstrip().startswith("|"):
            out += [s for s in re.findall(r"`(alr [^`]+)`", line) if " -" in s]
    return out


def parse(command: str) -> None:
    """Parse one command line with alr's parsers; SystemExit (argparse's error) fails the test."""
    argv = shlex.split(command, comments=True)[1:]
    if argv[:1] == ["bench"]:
        bench_parser().parse_args(argv[1:])
    else:
        build_parser().parse_args(argv)


def _cases(paths, collect):
    return [pytest.param(path, item, id=f"{path.relative_to(ROOT)}:{i}")
            for path in paths for i, item in enumerate(collect(path))]


@pytest.fixture()
def photo_dir(tmp_path, camera, monkeypatch):
    """The working folder of the examples: it holds ``photo.png``, a 48x48 crop of scikit-image's
    camera with noise of std 0.1. Shipped models load there as width-8 critics that keep the
    model's tables: the examples are checked for running as written, in seconds (what the real
    models restore is tested in test_solver.py and test_cli.py)."""
    real = pretrained.load_model

    def narrow(path):
        model = real(path)
        small = PatchCritic(in_channels=model.in_channels, width=8)
        small.meta = model.meta
        return small

    monkeypatch.setattr(pretrained, "load_model", narrow)
    write_image(tmp_path / "photo.png", add_noise(camera[..., 200:248, 200:248], 0.1, seed=0, clip=True))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("path,block", _cases(RUN_PYTHON, python_blocks))
def test_python_examples_run(path, block, photo_dir):
    line, code = block
    if re.search(r"^import .*\bdeepinv\b", code, re.M):  # run by tests/interop/ in the DeepInverse venv
        pytest.importorskip("deepinv", reason="the DeepInverse example runs in make test-deepinv")
    exec(compile(code, f"{path.name}, block at line {line}", "exec"), {"__name__": "__doc_example__"})


@pytest.mark.parametrize("path,command", _cases(PAGES, command_lines))
def test_commands_parse(path, command, capsys):
    try:
        parse(command)
    except SystemExit as e:
        if e.code:  # argparse's error, printed to stderr
            pytest.fail(f"{path.name}: `{command}` does not parse: {capsys.readouterr().err.strip()}")


def test_every_page_has_commands():
    """The extraction itself works: the pages that show commands yield some."""
    assert len(command_lines(README)) >= 10
    assert len(command_lines(ROOT / "docs" / "usage.md")) >= 50
    assert python_blocks(README)


def test_links_point_at_files():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            file = (page.parent / target).resolve()
            if not file.exists() and str(file.relative_to(ROOT)) not in PENDING:
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_the_tests_a_page_names_exist():
    """docs/reliability.md and the results pages cite tests as evidence: a renamed test must not
    leave a promise pointing at nothing."""
    defined = {(f.name, name) for f in (ROOT / "tests").rglob("test_*.py")
               for name in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
    cited, missing = 0, []
    for page in PAGES:
        for file, name in re.findall(r"`(?:(test_\w+\.py)::)?(test_\w+)(?:\[[^\]`]*\])?`", page.read_text()):
            cited += 1
            if not any(name == n and file in ("", f) for f, n in defined):
                missing.append(f"{page.relative_to(ROOT)}: {file + '::' if file else ''}{name}")
    assert cited > 30 and not missing, missing


def test_readme_is_short_and_starts_with_restoring():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("alr restore"))
    assert first < 40, "restoring an image should be in the README's first screen"


#: The README results table's columns: (per-image CSV in docs/results/, method at a noise level).
#: The CBSD68 default column follows the library's own rule (:func:`alr.settings.opponent_by_default`).
RESULT_COLUMNS = {
    "BSD68 noisy": ("table2_standard_per_image.csv", lambda s: "input"),
    "BSD68 ALR (`gray`)": ("table2_standard_per_image.csv", lambda s: "alr"),
    "BSD68 BM3D": ("table2_standard_per_image.csv", lambda s: "bm3d"),
    "CBSD68 noisy": ("table2_color_standard_per_image.csv", lambda s: "input"),
    "CBSD68 ALR (default)": ("table2_color_standard_per_image.csv",
                             lambda s: "alr-opponent" if opponent_by_default(s) else "alr"),
    "CBSD68 CBM3D": ("table2_color_standard_per_image.csv", lambda s: "bm3d"),
}


def test_readme_results_are_the_committed_per_image_means():
    """Each cell of the README's results table is the mean PSNR of the 68 per-image rows kept in
    docs/results/ (which the commands beside the table write)."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| sigma | BSD68 noisy"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    header, _, *rows = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in lines[start:end]]
    assert set(header[1:]) == set(RESULT_COLUMNS), header
    assert len(rows) == 3
    tables = {name: list(csv.DictReader((ROOT / "docs" / "results" / name).read_text().splitlines()))
              for name, _ in RESULT_COLUMNS.values()}
    for row in rows:
        sigma = float(row[0])
        for col, cell in zip(header[1:], row[1:]):
            name, method = RESULT_COLUMNS[col]
            psnr = [float(r["psnr"]) for r in tables[name]
                    if r["protocol"] == "standard" and float(r["sigma"]) == sigma and r["method"] == method(sigma)]
            assert len(psnr) == 68, (col, sigma, len(psnr))
            assert f"{sum(psnr) / len(psnr):.2f}" == cell, (col, sigma, cell)
