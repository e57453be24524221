"""Every command the docs show runs, or at least names what exists.

Reads the fenced code blocks (and the inline code) of README.md and
docs/**/*.md:

- every `python -m MODULE` names a module of this repository;
- every `--flag` shown for a command-line tool is one its parser accepts
  (read from its `--help`, or from its `add_argument` calls for the
  benchmarks, whose `--help` imports Keras: ~11 s each);
- every `--config NAME` names a file of training/configs/, every
  `make TARGET` a target of the Makefile, every relative link of README.md
  an existing file (the docs' own links are checked by `mkdocs build
  --strict`, `make docs`);
- every `python` block parses;
- the blocks marked runnable run: each command in a subprocess that must exit
  0. A block is marked by `<!-- runnable -->` on the line before its fence.
  The rule, enforced here: only commands that finish in seconds and need no
  data go in such a block, i.e. `--help` and `--list`. A command that trains
  (`--smoke` included), exports, benchmarks or downloads goes in an ordinary
  block, where it is checked as above and not run.

The docs do not depend on the backend: the TensorFlow pass runs this file.
"""

import ast
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.contract import BACKEND

pytestmark = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="the docs are the same under every KERAS_BACKEND; checked on the TensorFlow pass"
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = [os.path.join(REPO, "README.md")] + sorted(
    glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
)
RUNNABLE_MARK = "<!-- runnable -->"
# The command-line tools whose flags are read from `--help` (each starts in
# well under a second, but keras_smallvit.export, which imports Keras).
HELP_MODULES = (
    "training.train",
    "training.predict",
    "training.figures",
    "training.compare_backends",
    "keras_smallvit.export",
    "benchmarks.gpu_check",
)
# What a command in a runnable block must ask for: something that prints and exits.
CHEAP_FLAGS = ("--help", "-h", "--list")
COMMAND_TIMEOUT_S = 120
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def relative(path):
    return os.path.relpath(path, REPO)


def parse_markdown(text):
    """`(blocks, prose)`: the fenced blocks as `(language, code, runnable, line)`
    and the text outside them (for inline code)."""
    blocks, prose = [], []
    lines = text.split("\n")
    previous = ""  # the last non-blank line outside a block
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose.append(lines[i])
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, fence, info = match.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        language = info.strip().split()[0].lower() if info.strip() else ""
        blocks.append((language, "\n".join(body), previous == RUNNABLE_MARK, start))
        previous = ""
        i += 1
    return blocks, "\n".join(prose)


def shell_commands(code):
    """The commands of a shell block: continuation lines joined, comments
    dropped, `$ ` prompts removed; each as its list of words."""
    commands = []
    for line in code.replace("\\\n", " ").split("\n"):
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def inline_commands(prose):
    """Inline code that is a `python -m` command (a span may wrap lines)."""
    paragraphs_joined = re.sub(r"\s*\n\s*", " ", prose)
    spans = re.findall(r"(?<!`)`([^`]+)`(?!`)", paragraphs_joined)
    commands = []
    for span in spans:
        if "python -m " in span:
            try:
                commands.append(shlex.split(span, comments=True))
            except ValueError:
                continue
    return commands


def collect():
    """Every command and python block of the docs, with where it is."""
    commands, python_blocks = [], []
    for path in DOC_FILES:
        blocks, prose = parse_markdown(read(path))
        for language, code, runnable, line in blocks:
            where = f"{relative(path)}:{line}"
            if language in SHELL_BLOCKS:
                for words in shell_commands(code):
                    commands.append((where, words, runnable))
            elif language in ("python", "py"):
                python_blocks.append((where, code))
        for words in inline_commands(prose):
            commands.append((f"{relative(path)} (inline)", words, False))
    return commands, python_blocks


COMMANDS, PYTHON_BLOCKS = collect()


def split_env(words):
    """Leading `NAME=value` words as an environment, and the rest."""
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, value = words[0].split("=", 1)
        env[name] = value
        words = words[1:]
    return env, words


def python_module_calls(words):
    """`(module, arguments)` of each `python -m MODULE ...` in a command
    (arguments up to a `|`, `;`, `&&` or `||`)."""
    calls = []
    for i, word in enumerate(words):
        if os.path.basename(word).startswith("python") and words[i + 1:i + 2] == ["-m"] and i + 2 < len(words):
            arguments = []
            for argument in words[i + 3:]:
                if argument in ("|", ";", "&&", "||"):
                    break
                arguments.append(argument)
            calls.append((words[i + 2], arguments))
    return calls


def module_exists(module):
    """A module of this repository (found as a file, nothing imported), or an
    installed tool the docs run (`python -m pytest`)."""
    base = os.path.join(REPO, *module.split("."))
    if os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__main__.py")):
        return True
    top = module.split(".")[0]
    return not os.path.exists(os.path.join(REPO, top)) and importlib.util.find_spec(module) is not None


def shown_flags(arguments):
    return sorted({a.split("=", 1)[0] for a in arguments if re.match(r"^--[A-Za-z0-9]", a)})


def flags_from_help(text):
    """The flags of the `options:` section of an argparse `--help`."""
    flags = set()
    section = re.split(r"^(?:options|optional arguments):\s*$", text, maxsplit=1, flags=re.M)
    assert len(section) == 2, f"no options section in:\n{text}"
    for line in section[1].split("\n"):
        stripped = line.strip()
        if stripped.startswith("-"):
            invocation = re.split(r"\s{2,}", stripped)[0]
            flags.update(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", invocation))
    return flags


def flags_from_source(module):
    """The string flags of every `add_argument(...)` call in a module's file."""
    path = os.path.join(REPO, *module.split(".")) + ".py"
    flags = {"--help", "-h"}
    for node in ast.walk(ast.parse(read(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for argument in node.args:
                if isinstance(argument, ast.Constant) and str(argument.value).startswith("-"):
                    flags.add(argument.value)
    return flags


def run(words, env=None):
    """Runs a command from the docs with this interpreter for `python`."""
    words = [sys.executable if w == "python" else w for w in words]
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    try:
        done = subprocess.run(words, cwd=REPO, env=full_env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {COMMAND_TIMEOUT_S} s"
    return done.returncode, done.stdout + done.stderr


def test_the_docs_show_commands():
    # The parser itself: a change that found nothing would pass every test below.
    assert len(COMMANDS) > 40 and len(PYTHON_BLOCKS) > 5
    runnable = [words for _, words, marked in COMMANDS if marked]
    assert ["python", "-m", "training.train", "--help"] in runnable


def test_every_module_shown_exists():
    missing = [
        f"{where}: python -m {module}"
        for where, words, _ in COMMANDS
        for module, _ in python_module_calls(words)
        if not module_exists(module)
    ]
    assert not missing, "modules the docs name that do not exist:\n" + "\n".join(missing)


def test_every_config_shown_exists():
    configs = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "training", "configs", "*.py"))}
    wrong = []
    for where, words, _ in COMMANDS:
        for i, word in enumerate(words):
            name = words[i + 1] if word == "--config" and i + 1 < len(words) else None
            if word.startswith("--config="):
                name = word.split("=", 1)[1]
            if name is not None and name not in configs:
                wrong.append(f"{where}: --config {name}")
    assert not wrong, "configs the docs name that training/configs/ lacks:\n" + "\n".join(wrong)


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", read(os.path.join(REPO, "Makefile")), flags=re.M))
    wrong = []
    for where, words, _ in COMMANDS:
        _, words = split_env(words)
        if words and words[0] == "make":
            for word in words[1:]:
                if "=" not in word and not word.startswith("-") and word not in targets:
                    wrong.append(f"{where}: make {word}")
    assert not wrong, "make targets the docs name that the Makefile lacks:\n" + "\n".join(wrong)


def test_python_blocks_parse():
    broken = []
    for where, code in PYTHON_BLOCKS:
        try:
            ast.parse(textwrap.dedent(code))
        except SyntaxError as error:
            broken.append(f"{where}: {error}")
    assert not broken, "python blocks that do not parse:\n" + "\n".join(broken)


def test_readme_links_exist():
    readme = read(os.path.join(REPO, "README.md"))
    wrong = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
        if "://" not in target and not os.path.exists(os.path.join(REPO, target))
    ]
    assert not wrong, f"README.md links to files that do not exist: {wrong}"


def test_runnable_blocks_hold_only_cheap_commands():
    slow = [
        f"{where}: {shlex.join(words)}"
        for where, words, marked in COMMANDS
        if marked and not any(flag in words for flag in CHEAP_FLAGS)
    ]
    assert not slow, (
        f"a {RUNNABLE_MARK} block runs in the tests: only --help/--list commands belong there "
        "(move the others to an ordinary block):\n" + "\n".join(slow)
    )


def test_runnable_commands_run_and_shown_flags_exist():
    """One test (not two): both need the `--help` runs, done once, in parallel."""
    jobs = {}  # command words -> (environment, first place shown)
    for where, words, marked in COMMANDS:
        if marked:
            env, rest = split_env(words)
            jobs.setdefault(tuple(rest), (env, where))
    for module in HELP_MODULES:
        jobs.setdefault(("python", "-m", module, "--help"), ({}, "HELP_MODULES"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(jobs, pool.map(lambda item: run(list(item[0]), item[1][0]), jobs.items())))

    failed = [
        f"{where}: {shlex.join(words)} -> exit {code}\n{output[-2000:]}"
        for words, (_, where) in jobs.items()
        for code, output in [results[words]]
        if code != 0
    ]
    assert not failed, "documented commands that fail:\n" + "\n".join(failed)

    parser_flags = {module: flags_from_help(results[("python", "-m", module, "--help")][1]) for module in HELP_MODULES}
    unknown = []
    for where, words, _ in COMMANDS:
        for module, arguments in python_module_calls(words):
            if module in parser_flags:
                flags = parser_flags[module]
            elif module.startswith("benchmarks.") and module_exists(module):
                flags = flags_from_source(module)
            else:
                continue
            unknown += [f"{where}: python -m {module} {flag}" for flag in shown_flags(arguments) if flag not in flags]
    assert not unknown, "flags the docs show that the parser does not accept:\n" + "\n".join(unknown)
