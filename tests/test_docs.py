"""The documentation stays short, linked and true to the code.

Fast and TensorFlow-free: it reads Markdown files and runs `imgcls config
--defaults` in-process (the config module imports no TensorFlow).

docs/config.md is generated. To regenerate it, from the repository root:

    python tests/test_docs.py --write-config
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIG_MD = DOCS / "config.md"
CI_RUN = ROOT / ".ci" / "run"

README_MAX_LINES = 200
REGENERATE = "python tests/test_docs.py --write-config"
CI_MARKER = "README's test command, verbatim:"

CONFIG_MD_HEAD = """\
# Config reference

Every key of an imgcls config, its default and what it means, as `imgcls
config --defaults` prints it. Only `data.dir` is required; a model's own
options sit beside `model.name` (`imgcls models` lists them), and any key can
be overridden with `--set section.key=value`. How the keys work together is
explained in [training.md](training.md#the-config-file) and
[data.md](data.md). This page is generated, do not edit it by hand:
`{regenerate}` rewrites it, and `tests/test_docs.py` checks it.

""".format(regenerate=REGENERATE)


# --------------------------------------------------------------------------- helpers


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def outside_code(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside ``` or ~~~ fenced blocks."""
    lines, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"^\s*(```+|~~~+)", line)
        if marker:
            if fence is None:
                fence = marker.group(1)
            elif marker.group(1).startswith(fence):
                fence = None
            continue
        if fence is None:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = text.lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_code(path.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path: Path) -> list[str]:
    """The targets of relative Markdown links in `path`, outside code blocks and inline code."""
    targets = []
    for line in outside_code(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
                continue
            targets.append(target)
    return targets


def config_defaults() -> str:
    """What `imgcls config --defaults` prints, run in-process."""
    from typer.testing import CliRunner

    from imgcls.cli import app

    result = CliRunner().invoke(app, ["config", "--defaults"])
    assert result.exit_code == 0, result.output
    return result.stdout


def yaml_block(text: str) -> str | None:
    """The content of the first ```yaml fenced block, with its final newline."""
    match = re.search(r"^```yaml\n(.*?)^```\s*$", text, re.DOTALL | re.MULTILINE)
    return match.group(1) if match else None


def write_config_md() -> None:
    CONFIG_MD.write_text(CONFIG_MD_HEAD + "```yaml\n" + config_defaults() + "```\n", encoding="utf-8")


# --------------------------------------------------------------------------- tests


def test_readme_is_the_front_door_not_the_manual():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move the detail into a page under docs/")


def test_every_relative_link_resolves_to_a_file_and_heading():
    broken = []
    for page in markdown_files():
        for target in relative_links(page):
            file_part, _, fragment = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no file {file_part}")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{where}: no heading #{fragment} in {linked.relative_to(ROOT)}")
            elif fragment and linked.suffix != ".md":
                broken.append(f"{where}: #{fragment} in a file that is not Markdown")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_config_reference_is_what_imgcls_config_defaults_prints():
    documented = yaml_block(CONFIG_MD.read_text(encoding="utf-8"))
    assert documented is not None, f"docs/config.md has no ```yaml block; regenerate it with: {REGENERATE}"
    assert documented == config_defaults(), (
        f"docs/config.md differs from `imgcls config --defaults`; regenerate it with: {REGENERATE}")


def test_readme_test_command_is_the_one_ci_runs():
    lines = CI_RUN.read_text(encoding="utf-8").splitlines()
    marker = [i for i, line in enumerate(lines) if CI_MARKER in line]
    assert marker, f".ci/run has no comment {CI_MARKER!r}"
    command = lines[marker[0] + 1].strip()
    assert command, f".ci/run: the line after {CI_MARKER!r} is empty"
    readme = README.read_text(encoding="utf-8").splitlines()
    assert command in [line.strip() for line in readme], (
        f"README.md does not give CI's test command verbatim on a line of its own: {command}")


def test_the_run_folder_contract_names_every_file_the_code_writes():
    """docs/runs.md is the one place the run folder is described; every name run/layout.py spells is in it."""
    from imgcls.run import layout

    contract = (DOCS / "runs.md").read_text(encoding="utf-8")
    names = [value for key, value in vars(layout).items() if key.isupper() and isinstance(value, str) and key != "LATEST"]
    missing = [name for name in names if f"`{name}" not in contract]
    assert not missing, f"docs/runs.md does not describe {missing}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-config"]:
        write_config_md()
        print(f"wrote {CONFIG_MD.relative_to(ROOT)}")
    else:
        sys.exit(f"usage: {REGENERATE}")
