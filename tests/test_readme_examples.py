"""README's example outputs are what the example fleet really prints.

README marks every example that shows a command and its output with an HTML comment
directly before a ```console block:

    <!-- readme-example: NAME -->            (or `... NAME setup=SETUP -->`)
    ```console
    $ edgefleet validate fleet
    fleet: valid (...)
    ```

In a block, a line starting with `$ ` is a command (a trailing `\\` continues it on the next
line); the lines after it are what it prints, stdout and stderr as a terminal shows them.
A line that is exactly `...` stands for any number of lines README leaves out. The commands
of all blocks run with bash, in README order (build → explain → compile depend on each
other), in one work folder holding a fresh copy of `fleet/`, with `$D` a fresh temporary
folder. A block with `setup=SETUP` runs in its own folder that SETUPS[SETUP] prepares (the
edit the README's prose describes).

Output is compared line by line after normalising only what is genuinely not deterministic
(`normalise`, each rule named there); everything else must match exactly, so an edited
README line or a changed output fails the test, with a diff. README's laid-out desired state
of a device (`<!-- readme-desired-state: EXAMPLE DEVICE -->` before a ```json block) is
compared field by field with what `edgefleet verify` printed in that example.

`PYTHONPATH=compiler:. python3 tests/test_readme_examples.py [NAME...]` prints what the
examples print now (normalised), to update README from.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_FLEET, ROOT

README = ROOT / "README.md"

_BLOCK = re.compile(
    r"<!-- readme-example: (?P<name>[a-z0-9-]+)(?: setup=(?P<setup>[a-z0-9-]+))? -->\n"
    r"```console\n(?P<body>.*?)^```$",
    re.S | re.M,
)
ELISION = "..."


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    name: str
    setup: str | None
    line: int  # README line of the ```console fence, for messages
    steps: tuple[Step, ...] = field(default=())


def parse_readme(text: str) -> list[Example]:
    examples = []
    for match in _BLOCK.finditer(text):
        steps: list[Step] = []
        command: list[str] | None = None
        expected: list[str] = []
        continuing = False
        for raw in match["body"].splitlines():
            if continuing:
                command.append(raw)
                continuing = raw.endswith("\\")
                continue
            if raw.startswith("$ "):
                if command is not None:
                    steps.append(Step("\n".join(command), tuple(expected)))
                command, expected = [raw[2:]], []
                continuing = raw.endswith("\\")
            elif command is None:
                raise AssertionError(f"README example {match['name']!r}: output before the first `$ ` command")
            else:
                expected.append(raw)
        if command is not None:
            steps.append(Step("\n".join(command), tuple(expected)))
        line = text.count("\n", 0, match.start()) + 2
        examples.append(Example(match["name"], match["setup"], line, tuple(steps)))
    return examples


# --- normalisation: only what differs between runs or hosts -------------------------------

_SECONDS = re.compile(r"\bin \d+(?:\.\d+)?s\b")  # build's wall time per artifact ("in 3.1s")
_KEY_ID = re.compile(r"^(  (?:root|targets|snapshot|timestamp|bins) +)[0-9a-f]{64}$")  # fresh keys each run
_LATENCY_RATIO = re.compile(r"\blatency_ratio \d+(?:\.\d+)?\b")  # a measured latency


def normalise(line: str, temp: dict[str, str]) -> str:
    # Temporary folders: the test's own paths print as README's names for them ($D, the work folder).
    for path, name in temp.items():
        line = line.replace(path, name)
    line = _SECONDS.sub("in <seconds>s", line)
    line = _LATENCY_RATIO.sub("latency_ratio <measured>", line)
    return _KEY_ID.sub(r"\1<key id>", line)


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-by-line equality, where an expected `...` line matches any run of actual lines."""
    memo: dict[tuple[int, int], bool] = {}

    def at(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(expected):
                result = j == len(actual)
            elif expected[i] == ELISION:
                result = any(at(i + 1, k) for k in range(j, len(actual) + 1))
            else:
                result = j < len(actual) and expected[i] == actual[j] and at(i + 1, j + 1)
            memo[(i, j)] = result
        return memo[(i, j)]

    return at(0, 0)


# --- the setups README's prose describes ----------------------------------------------------


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} is not there exactly once"
    path.write_text(text.replace(old, new))


def _setup_two_mistakes(work: Path) -> None:
    """README "Diagnostics": `ram_mb: lots` in one class and a wave share that goes down."""
    fleet = work / "fleet"
    _replace(fleet / "hardware/jetson-vision-standard.yaml", "ram_mb: 16384", "ram_mb: lots")
    _replace(fleet / "rollouts/meter-digits-1-1.yaml", "percent: 50", "percent: 5")


def _latency_limit(work: Path, recipes: int) -> None:
    """README "Building artifacts": `max_latency_ratio: 0.01` on the first N recipes of medical-cart-cpu."""
    path = work / "fleet/hardware/medical-cart-cpu.yaml"
    lines = path.read_text().splitlines(keepends=True)
    out, seen = [], 0
    for line in lines:
        out.append(line)
        if line.startswith("    - name: ") and seen < recipes:
            out.append("      max_latency_ratio: 0.01\n")
            seen += 1
    assert seen == recipes, f"{path}: fewer than {recipes} recipes"
    path.write_text("".join(out))


def _setup_half_live(work: Path, main: Path) -> None:
    """README "Previewing a change": the example fleet committed and built; in the work tree its
    rollout's status moves on to the second wave."""
    git = ["git", "-c", "commit.gpgsign=false", "-c", "user.name=readme", "-c", "user.email=readme@example.invalid"]
    (work / ".gitignore").write_text(".edgefleet/\n")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "the example fleet"], check=True)
    # the builds of the main work folder (README builds there first), so sizes are exact
    shutil.copytree(main / "fleet/.edgefleet/artifacts", work / "fleet/.edgefleet/artifacts")
    rollout = work / "fleet/rollouts/meter-digits-1-1.yaml"
    _replace(rollout, "  current_wave: 0\n", "  current_wave: 1\n")
    _replace(rollout, '    canary: "2026-11-20T08:00:00Z"\n',
             '    canary: "2026-11-20T08:00:00Z"\n    half: "2026-11-21T08:00:00Z"\n')


SETUPS = {
    "two-mistakes": lambda work, main: _setup_two_mistakes(work),
    "latency-limit-first": lambda work, main: _latency_limit(work, 1),
    "latency-limit-all": lambda work, main: _latency_limit(work, 3),
    "half-live": _setup_half_live,
}


# --- running ----------------------------------------------------------------------------------


@dataclass
class Run:
    example: Example
    outputs: list[list[str]]  # one list of normalised lines per step


def _workspace(base: Path, name: str) -> tuple[Path, Path]:
    work, d = base / name / "work", base / name / "d"
    d.mkdir(parents=True)
    shutil.copytree(EXAMPLE_FLEET, work / "fleet", ignore=shutil.ignore_patterns(".edgefleet", "__pycache__"))
    return work, d


def _env(base: Path, d: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EDGEFLEET_KEY_") and k not in {"GITHUB_ACTIONS", "EDGEFLEET_DEBUG"}}
    bin_dir = base / "bin"
    if not bin_dir.exists():
        # `edgefleet` is this checkout run by this interpreter (conftest puts compiler/ on PYTHONPATH).
        bin_dir.mkdir()
        script = bin_dir / "edgefleet"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edgefleet "$@"\n')
        script.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["D"] = str(d)
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    return env


def run_examples(base: Path, examples: list[Example]) -> dict[str, Run]:
    main_work, main_d = _workspace(base, "main")
    runs = {}
    for example in examples:
        work, d = (main_work, main_d)
        if example.setup:
            work, d = _workspace(base, example.name)
            SETUPS[example.setup](work, main_work)
        env = _env(base, d)
        temp = {str(d): "$D", str(work) + "/": ""}
        outputs = []
        for step in example.steps:
            proc = subprocess.run(["bash", "-c", step.command], cwd=work, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=600)
            outputs.append([normalise(line, temp) for line in proc.stdout.splitlines()])
        runs[example.name] = Run(example, outputs)
    return runs


EXAMPLES = parse_readme(README.read_text())


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory) -> dict[str, Run]:
    """Every README example run once, in README order, sharing one work folder and one build."""
    return run_examples(tmp_path_factory.mktemp("readme"), EXAMPLES)


# --- tests ------------------------------------------------------------------------------------

# README's laid-out desired state (`<!-- readme-desired-state: EXAMPLE DEVICE -->` before a ```json
# block) is compared with the JSON `edgefleet verify --device DEVICE` printed in that example.
# `…` is README's elision: `, …}` more keys, `, …]` more items, `"abc…"` a string starting so.
_DESIRED = re.compile(r"<!-- readme-desired-state: (?P<example>[a-z0-9-]+) (?P<device>\S+) -->\n```json\n(?P<body>.*?)^```$",
                      re.S | re.M)
MORE = "\u2026"


def elided_json(text: str):
    text = re.sub(r",\s*…\s*\}", f', "{MORE}": true}}', text)
    return json.loads(re.sub(r",\s*…\s*\]", f', "{MORE}"]', text))


def json_mismatches(shown, real, where: str = "$") -> list[str]:
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return [f"{where}: README shows an object, the real value is {real!r}"]
        keys = set(shown) - {MORE}
        problems = [f"{where}.{k}: not in the real desired state" for k in sorted(keys - set(real))]
        if MORE not in shown:
            problems += [f"{where}.{k}: in the real desired state, not in README" for k in sorted(set(real) - keys)]
        return problems + [p for k in sorted(keys & set(real)) for p in json_mismatches(shown[k], real[k], f"{where}.{k}")]
    if isinstance(shown, list):
        open_ended = bool(shown) and shown[-1] == MORE
        items = shown[:-1] if open_ended else shown
        if not isinstance(real, list) or len(real) < len(items) or (not open_ended and len(real) != len(items)):
            return [f"{where}: README shows {len(items)} item(s), the real value is {real!r}"]
        return [p for i, item in enumerate(items) for p in json_mismatches(item, real[i], f"{where}[{i}]")]
    if isinstance(shown, str) and shown.endswith(MORE) and isinstance(real, str):
        return [] if real.startswith(shown[:-1]) else [f"{where}: README {shown!r}, real {real!r}"]
    return [] if shown == real and type(shown) is type(real) else [f"{where}: README {shown!r}, real {real!r}"]


def test_elided_json_comparison_refuses_drift():
    real = {"a": 1, "b": {"c": "abcdef", "d": [1, 2, 3]}, "e": None}
    assert json_mismatches(elided_json('{"a": 1, "b": {"c": "abc…", "d": [1, …]}, …}'), real) == []
    assert json_mismatches(elided_json('{"a": 1, "b": {"c": "abcdef", "d": [1, 2, 3]}, "e": null}'), real) == []
    assert json_mismatches(elided_json('{"a": 2, …}'), real)                 # a changed value
    assert json_mismatches(elided_json('{"a": 1, "b": {"c": "abc…", "d": [1, …]}}'), real)  # "e" left out unmarked
    assert json_mismatches(elided_json('{"a": 1, "x": 0, …}'), real)         # a field that does not exist
    assert json_mismatches(elided_json('{"b": {"c": "abd…", …}, …}'), real)  # a wrong prefix
    assert json_mismatches(elided_json('{"b": {"d": [1, 2]}, …}'), real)     # a list cut without `…`


@pytest.mark.slow
def test_readme_desired_state_is_what_verify_prints(example_runs):
    blocks = list(_DESIRED.finditer(README.read_text()))
    assert blocks, "README lost its <!-- readme-desired-state: ... --> block"
    for block in blocks:
        run = example_runs[block["example"]]
        (printed,) = [line for step, lines in zip(run.example.steps, run.outputs)
                      if step.command.startswith("edgefleet verify") and f"--device {block['device']}" in step.command
                      for line in lines if line.startswith("{")]
        problems = json_mismatches(elided_json(block["body"]), json.loads(printed))
        assert not problems, f"README's desired state of {block['device']} is stale:\n" + "\n".join(problems)


def test_readme_marks_its_examples():
    names = [e.name for e in EXAMPLES]
    assert len(names) == len(set(names)), f"two README examples share a name: {names}"
    # The examples this test exists for: the quick start, explain, build, compile and a diagnostic.
    assert {"quickstart", "explain", "build-again", "compile-again", "diagnostics", "plan"} <= set(names)
    for example in EXAMPLES:
        assert example.steps, f"README.md:{example.line}: example {example.name!r} has no `$ ` command"
        assert example.setup is None or example.setup in SETUPS, f"unknown setup {example.setup!r}"
    # A console block without a marker would silently go untested.
    assert README.read_text().count("```console\n$ edgefleet") == len(EXAMPLES)


def test_matcher_refuses_drift():
    """The comparison itself: an elision covers lines, but a changed, missing or extra line fails."""
    actual = ["a", "b", "c", "d"]
    assert matches(["a", "...", "d"], actual)
    assert matches(["a", "b", "c", "d", "..."], actual)
    assert not matches(["a", "b", "x", "d"], actual)
    assert not matches(["a", "b", "c"], actual)
    assert not matches(["a", "b", "c", "d", "e"], actual)
    assert not matches(["...", "e"], actual)
    temp = {"/tmp/pytest-1/readme/main/d": "$D"}
    assert normalise("compiled 48 devices into /tmp/pytest-1/readme/main/d/desired-state: x", temp) == \
        "compiled 48 devices into $D/desired-state: x"
    assert normalise("built  a: b in 12.25s", {}) == normalise("built  a: b in 0.6s", {})
    assert normalise("built  a: b in 12.25s", {}) != normalise("built  a: c in 0.6s", {})


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in EXAMPLES])
def test_readme_example_output(example_runs, name):
    run = example_runs[name]
    problems = []
    for step, actual in zip(run.example.steps, run.outputs):
        expected = [normalise(line, {}) for line in step.expected]
        if not matches(expected, actual):
            diff = "\n".join(difflib.unified_diff(expected, actual, "README", "actual", lineterm="", n=2))
            problems.append(f"$ {step.command}\n{diff}")
    assert not problems, (f"README.md:{run.example.line}: example {name!r} no longer matches what it prints "
                          "(fix README, or the code):\n" + "\n\n".join(problems))


if __name__ == "__main__":
    # `python tests/test_readme_examples.py [NAME...]` prints what the examples print now, normalised,
    # ready to paste into README.
    import tempfile

    wanted = set(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in run_examples(Path(tmp), EXAMPLES).items():
            if wanted and name not in wanted:
                continue
            print(f"<!-- readme-example: {name} -->")
            for step, lines in zip(run.example.steps, run.outputs):
                print(f"$ {step.command}", *lines, sep="\n")
            print()
