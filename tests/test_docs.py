"""The docs name only commands and options the CLI has.

Every ``disentangle <command> ... --option`` written in a code span or code block of
README.md or docs/*.md must be a command of click's tree (walked from
``disentangle.cli.main``) and an option of that command; every code span that is an
option on its own (```--beta```) must be an option of some ``disentangle`` command, of
``python -m disentangle.demo``, or of the benchmark script it belongs to. Options of other
tools are listed in OTHER_TOOLS with the tool's name.
"""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from disentangle.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *[p for p in (ROOT / "data" / "README.md", ROOT / "results" / "README.md") if p.exists()]]

# Options a doc may name that belong to another tool (option -> tool). Keep it short.
OTHER_TOOLS = {
    "--no-index": "pip",
    "--no-deps": "pip",
}

# A command line ends at a shell operator or a comment.
STOP = {"#", "|", "||", "&&", ";", ">", ">>", "<", "2>&1", "&"}
# "..." stands for any subcommand of a group (`disentangle plot ... --dpi 90`).
ANY = "..."


def command_tree(command: click.Command = main, path: tuple[str, ...] = ()) -> dict[tuple, set[str]]:
    """{command path: its option names (long and short, secondary included)}, every node."""
    options = {"--help"}
    # get_params: the options a command builds from the configuration's fields too
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option):
            options.update(param.opts)
            options.update(param.secondary_opts)
    tree = {path: options}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            tree.update(command_tree(sub, path + (name,)))
    return tree


def script_options(path: Path) -> set[str]:
    """Long options an argparse script declares (``add_argument("--x"``)."""
    return set(re.findall(r"add_argument\(\s*[\"'](--[\w-]+)", path.read_text()))


def code_texts(markdown: str) -> list[str]:
    """The code of a Markdown text: fenced blocks, indented blocks (4 spaces after a
    blank line), inline code spans (which may wrap a line)."""
    texts, prose, lines = [], [], markdown.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            texts.append("\n".join(lines[i + 1:j]))
            i = j + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            texts.append("\n".join(lines[i:j]))
            i = j
            continue
        prose.append(line)
        i += 1
    # escaped pipes inside table cells (`--format markdown\|csv`) are one pipe
    texts += [span.replace("\\|", "|") for span in re.findall(r"`([^`]+)`", "\n".join(prose))]
    return texts


def _tokens(text: str) -> list[str]:
    return text.replace("\\\n", " ").split()


def _option_name(token: str) -> str | None:
    token = token.strip("[](){},'\"")
    match = re.match(r"(--[A-Za-z][\w-]*)", token)
    return match.group(1) if match else None


def check_text(text: str, tree: dict | None = None, extra_options: set[str] = frozenset()) -> list[str]:
    """Problems with the commands and options one Markdown text names (empty: none)."""
    tree = command_tree() if tree is None else tree
    every_option = set().union(*tree.values()) | set(extra_options) | set(OTHER_TOOLS)
    problems = []
    for code in code_texts(text):
        tokens = _tokens(code)
        commands = [k for k, t in enumerate(tokens) if t == "disentangle"]
        for k in commands:
            path, rest = (), tokens[k + 1:]
            while rest and rest[0] not in STOP:
                head = rest[0]
                subcommands = {p[-1] for p in tree if len(p) == len(path) + 1 and p[:-1] == path}
                if head in subcommands:
                    path, rest = path + (head,), rest[1:]
                elif head == ANY and subcommands:
                    path, rest = path + (ANY,), rest[1:]
                    break
                else:
                    break
            if ANY in path:
                options = set().union(*(o for p, o in tree.items() if len(p) == len(path) and p[:-1] == path[:-1]))
            else:
                options = tree[path]
            if not path and rest and rest[0] not in STOP and not rest[0].startswith("-"):
                problems.append(f"`disentangle {rest[0]}`: no such command")
                continue
            for token in rest:
                if token in STOP or token.startswith("#") or token == "disentangle":
                    break
                name = _option_name(token)
                if name and name not in options:
                    shown = " ".join(path) or "(top level)"
                    problems.append(f"`disentangle {shown}` has no option {name}")
        if not commands and code.lstrip().startswith("--"):
            # an option on its own: some command must have it
            for token in tokens:
                name = _option_name(token)
                if name and name not in every_option:
                    problems.append(f"option {name} (in `{code.strip()}`) belongs to no command")
    return problems


def _extra_options() -> set[str]:
    """Options of what docs name besides `disentangle`: the demo and the benchmarks."""
    extra = script_options(ROOT / "disentangle" / "demo.py")
    for script in (ROOT / "benchmarks").glob("*.py"):
        extra |= script_options(script)
    return extra


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_existing_commands_and_options(doc):
    problems = check_text(doc.read_text(), command_tree(), _extra_options())
    assert not problems, f"{doc.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_the_walk_sees_every_command():
    tree = command_tree()
    for path in [("train",), ("evaluate",), ("data", "render"), ("sweep", "status"), ("plot", "traversal")]:
        assert path in tree
    assert "--objective" in tree[("train",)] and "--method" in tree[("train",)]
    assert "--pos-y-bottom" in tree[("data", "render")]


def test_check_text_catches_a_missing_option_and_command():
    tree = command_tree()
    good = """Train with `disentangle train --beta 4 --seed 0` or

    disentangle evaluate results/x --metric mig \\
        --param mig.num_train=1000       # a comment --not-an-option
    disentangle plot ... --dpi 90
    disentangle sweep status results/study

and `--lambda-od`; `[--out data/x.h5]`."""
    assert check_text(good, tree) == []
    bad_option = "Run `disentangle train --beta 4 --no-such-option 3`."
    assert check_text(bad_option, tree) == ["`disentangle train` has no option --no-such-option"]
    # an option of another command is not enough: --metric is evaluate's, not train's
    assert check_text("    disentangle train --metric mig\n", tree) == [
        "`disentangle train` has no option --metric"]
    assert check_text("```\ndisentangle sweep --beta 1 \\\n  --bogus 2\n```", tree) == [
        "`disentangle sweep` has no option --bogus"]
    assert check_text("`disentangle trian --beta 4`", tree) == ["`disentangle trian`: no such command"]
    assert check_text("Use `--gama 5`.", tree) == ["option --gama (in `--gama 5`) belongs to no command"]
    assert check_text("Use `--blocks 5`.", tree, extra_options={"--blocks"}) == []
