"""The README and docs/ show commands that exist: every `simsiam-hub` command and option, every
config a command names, every script, `make` target and linked file. A renamed option or a
removed config fails here rather than on a reader's machine."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from simsiam_hub.cli import build_parser
from simsiam_hub.resources import shipped_configs

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_KIND = {"pretrain": "pretrain", "lincls": "lincls", "ablate-stopgrad": "pretrain", "demo": "pretrain"}


def shell_lines(page: Path) -> list[str]:
    """The command lines of a page's un-labelled and shell code blocks, continuations joined,
    comments dropped."""
    lines, in_block, lang = [], False, ""
    for raw in page.read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            in_block, lang = (not in_block), raw[3:].strip()
            continue
        if in_block and lang in ("", "sh", "bash", "shell", "console"):
            lines.append(raw)
    text = "\n".join(lines).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def cli_invocations(line: str) -> list[list[str]]:
    """The argument lists after `simsiam-hub` or `-m simsiam_hub.cli` in a command line."""
    try:
        words = shlex.split(line)
    except ValueError:
        return []
    found = []
    for i, word in enumerate(words):
        if word == "simsiam-hub" or (word == "simsiam_hub.cli" and i and words[i - 1] == "-m"):
            rest = words[i + 1 :]
            cut = next((j for j, w in enumerate(rest) if w in ("|", "&&", ";")), len(rest))
            found.append(rest[:cut])
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_and_options_exist(page):
    commands = subcommands()
    problems = []
    for line in shell_lines(page):
        for args in cli_invocations(line):
            if not args or args[0].startswith("-"):
                continue
            name = args[0]
            if name not in commands:
                problems.append(f"{line!r}: no command {name!r}")
                continue
            options = {s for a in commands[name]._actions for s in a.option_strings}
            for word in args[1:]:
                option = word.split("=")[0]
                if option.startswith("--") and option not in options:
                    problems.append(f"{line!r}: `{name}` has no option {option}")
            if "--config" in args and name in CONFIG_KIND:
                config = args[args.index("--config") + 1]
                if config not in shipped_configs(CONFIG_KIND[name]) and not (ROOT / config).is_file():
                    problems.append(f"{line!r}: no {CONFIG_KIND[name]} config {config!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_scripts_configs_make_targets_and_links_exist(page):
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    problems = []
    for line in shell_lines(page):
        for path in re.findall(r"(?:^|\s)((?:transfer|bench|configs|tests)/[\w./-]+\.(?:py|sh|yaml))", line):
            if not (ROOT / path).is_file():
                problems.append(f"{line!r}: {path} does not exist")
        make = re.match(r"make ([\w-]+)", line)
        if make and make.group(1) not in targets:
            problems.append(f"{line!r}: the Makefile has no target {make.group(1)!r}")
    for link in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
        if not (page.parent / link).exists():
            problems.append(f"link to {link}: not found beside {page.name}")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_wrong_option_and_a_missing_config(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```\nsimsiam-hub knn ./model --no-such-option\nsimsiam-hub pretrain --config no_such_config\n"
        "make no-such-target\n```\n[gone](nowhere.md)\n"
    )
    with pytest.raises(AssertionError, match="has no option --no-such-option") as err:
        test_commands_and_options_exist(page)
    assert "no pretrain config 'no_such_config'" in str(err.value)
    with pytest.raises(AssertionError, match="no target 'no-such-target'") as err:
        test_scripts_configs_make_targets_and_links_exist(page)
    assert "link to nowhere.md" in str(err.value)
