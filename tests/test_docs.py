"""The README and docs/*.md against the code: every command and flag they show exists, the README stays a short
front door, and every relative link resolves.

Flags come from each script's `--help`, run in a subprocess from the repository root (the scripts are not
imported), so the check follows whatever the argparse parsers accept today.
"""
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("main.py", "save_vgg_feature.py", "bench.py")
README = os.path.join(ROOT, "README.md")
README_MAX_BYTES = 15_500
FIRST_SCREEN_LINES = 60
FIRST_SCREEN_COMMANDS = ("python main.py --do_train --do_eval", "python save_vgg_feature.py")

FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")
FENCE = re.compile(r"^\s*(```|~~~)")
COMMAND = re.compile(r"\bpython3?\s+(?:\./)?(" + "|".join(re.escape(s) for s in SCRIPTS) + r")(?=\s|$)")
SHELL_SEPARATORS = {"&", "&&", ";", "|", "||", ";;"}
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)


def doc_files():
    docs = os.path.join(ROOT, "docs")
    pages = sorted(os.path.join(docs, name) for name in os.listdir(docs) if name.endswith(".md")) \
        if os.path.isdir(docs) else []
    return [README] + pages


def rel(path):
    return os.path.relpath(path, ROOT)


@functools.lru_cache(maxsize=None)
def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def split_blocks(text):
    """(code, prose): [(line number, line)] inside fenced code blocks, and the prose lines outside them."""
    code, prose, fence = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match and (fence is None or line.strip().startswith(fence)):
            fence = match.group(1) if fence is None else None
            continue
        (code if fence else prose).append((number, line))
    return code, prose


CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def paragraphs(prose):
    """[(first line number, text)]: runs of prose lines joined, so that a `code span` may wrap onto the next line;
    each table row and each heading stands alone."""
    units, run = [], []
    for number, line in prose + [(None, "")]:
        alone = line.lstrip().startswith(("|", "#"))
        if not line.strip() or alone:
            if run:
                units.append((run[0][0], "\n".join(text for _, text in run)))
                run = []
            if alone:
                units.append((number, line))
        else:
            run.append((number, line))
    return units


def inline_code(text):
    """[(offset, contents)] of the `code spans` of a piece of prose."""
    return [(m.start(), m.group(2).replace("\n", " ")) for m in CODE_SPAN.finditer(text)]


def strip_inline_code(text):
    return CODE_SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), text)


@functools.lru_cache(maxsize=None)
def script_flags(script):
    """The option strings of `python <script> --help`, read from the help's options section."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`python {script} --help` did not finish within 300 s")
    if result.returncode != 0:
        pytest.fail(f"`python {script} --help` failed with exit code {result.returncode}, so its flags are "
                    f"unknown:\n{(result.stderr or result.stdout)[-3000:]}")
    lines = result.stdout.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"^(options|optional arguments|positional arguments)\s*:", line)), None)
    if start is None:
        pytest.fail(f"`python {script} --help` has no options section:\n{result.stdout[:2000]}")
    flags = set()
    for line in lines[start:]:
        if not re.match(r"^ {1,4}-", line):  # an option line, not the wrapped text of a help string
            continue
        invocation = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        for part in invocation.split(", "):
            token = part.split()[0] if part.split() else ""
            if token.startswith("--"):
                flags.add(token.split("=", 1)[0])
    if "--help" not in flags or len(flags) < 3:
        pytest.fail(f"could not read the flags of `python {script} --help`; found {sorted(flags)}")
    return frozenset(flags)


def all_flags():
    return frozenset().union(*(script_flags(script) for script in SCRIPTS))


def commands_in(path):
    """[(line number, script, [arguments])] of every `python <script> ...` in the fenced code blocks of a file."""
    code, _ = split_blocks(read(path))
    commands = []
    for number, line in code:
        for match in COMMAND.finditer(line):  # each command of `a & b; c`, up to its shell separator
            script, rest = match.group(1), line[match.end():]
            try:
                tokens = shlex.split(rest, comments=True)
            except ValueError as error:
                pytest.fail(f"{rel(path)}:{number}: cannot split the command `{line.strip()}`: {error}")
            arguments = []
            for token in tokens:
                if token in SHELL_SEPARATORS:
                    break
                if token.endswith(";"):  # `... --flag value; done`
                    arguments.append(token.rstrip(";"))
                    break
                arguments.append(token)
            commands.append((number, script, arguments))
    return commands


def test_every_doc_page_is_read():
    names = [rel(path) for path in doc_files()]
    assert names[0] == "README.md" and len(names) > 1, f"expected README.md and docs/*.md, found {names}"


def test_commands_use_only_flags_the_scripts_accept():
    problems, seen = [], {script: 0 for script in SCRIPTS}
    for path in doc_files():
        for number, script, arguments in commands_in(path):
            seen[script] += 1
            accepted = script_flags(script)
            for argument in arguments:
                if not argument.startswith("--"):
                    continue
                flag = argument.split("=", 1)[0]
                if flag not in accepted:
                    problems.append(f"{rel(path)}:{number}: `python {script} {' '.join(arguments)}` uses {flag}, "
                                    f"which `python {script} --help` does not list")
    assert not problems, "commands in the docs use unknown flags:\n" + "\n".join(problems)
    missing = [script for script, count in seen.items() if count == 0]
    assert not missing, f"no command found for {missing} in README.md or docs/: is the extraction broken?"


def test_flags_in_prose_exist():
    problems = []
    for path in doc_files():
        _, prose = split_blocks(read(path))
        for first, text in paragraphs(prose):
            for offset, span in inline_code(text):
                number = first + text.count("\n", 0, offset)
                named = re.match(r"^(?:python3?\s+)?(" + "|".join(re.escape(s) for s in SCRIPTS) + r")\b", span)
                accepted = script_flags(named.group(1)) if named else all_flags()
                where = f"`python {named.group(1)} --help`" if named else "the --help of " + ", ".join(SCRIPTS)
                for flag in FLAG.findall(span):
                    if flag not in accepted:
                        problems.append(f"{rel(path)}:{number}: `{span}` names {flag}, not in {where}")
    assert not problems, "flags named in the docs' prose do not exist:\n" + "\n".join(problems)


def test_readme_is_a_short_front_door():
    size = os.path.getsize(README)
    assert size <= README_MAX_BYTES, (f"README.md is {size:,} bytes, over {README_MAX_BYTES:,}: move detail into "
                                      f"docs/ and link to it")
    first_lines = read(README).splitlines()[:FIRST_SCREEN_LINES]
    commands = {line.split(" #", 1)[0].strip() for line in first_lines}
    missing = [command for command in FIRST_SCREEN_COMMANDS if command not in commands]
    assert not missing, (f"README.md must show these commands as lines of their own within its first "
                         f"{FIRST_SCREEN_LINES} lines: {missing}")


def slug(heading):
    """GitHub's anchor of a heading: links and emphasis reduced to text, lower case, punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path):
    _, prose = split_blocks(read(path))
    found, counts = set(), {}
    for _, line in prose:
        found.update(HTML_ANCHOR.findall(line))
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = counts.get(base, 0)
            counts[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def test_relative_links_resolve():
    problems = []
    for path in doc_files():
        _, prose = split_blocks(read(path))
        for first, paragraph in paragraphs(prose):
            text = strip_inline_code(paragraph)  # a link shown as code is not a link
            for match in sorted([*LINK.finditer(text), *IMAGE_LINK.finditer(text)], key=lambda m: m.start()):
                target, number = match.group(1), first + text.count("\n", 0, match.start())
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                    continue  # http:, https:, mailto:, ...
                file_part, _, anchor = target.partition("#")
                linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
                if not os.path.exists(linked):
                    problems.append(f"{rel(path)}:{number}: link ({target}) points to {rel(linked)}, which does "
                                    f"not exist")
                elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
                    problems.append(f"{rel(path)}:{number}: link ({target}): {rel(linked)} has no heading or "
                                    f"anchor `#{anchor}`")
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)
