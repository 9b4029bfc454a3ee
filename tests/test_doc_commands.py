"""Every command in README.md and docs/*.md runs: the docs cannot go stale.

Each ```bash, ```sh or ```console block (in console blocks, the lines after a `$ ` prompt) of a
document is run by bash, in order, in one scratch folder per document that holds links to the
repository's files (not `docs/`, `runs/` or `data/`, so nothing the commands write lands in the
checkout). The commands run as written, except:

- `path/to/dataset` exists: it is a small synthetic dataset in the course layout.
- A line that trains (`cvae_dist/train.py`, `-m cvae_dist.train`, `cvae-train`, `launch/*.sh`)
  gets TINY_FLAGS appended, which win over the flags before them: the tiny preset, one epoch,
  short windows and the small dataset.
- `tensorboard --logdir DIR` starts a server, so it is checked, not started: DIR must exist.
- A block right after `<!-- doc-test: skip (REASON) -->` is not run. Keep these rare: only for
  commands that need a GPU or a cluster, or that are CI's own (`make demo`, `make test`: a block
  that holds them must be marked, and this test fails if it is not).

A command that fails, or a module that does not exist, fails the test, naming the file and line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import REPO, TINY_RUN, run_env

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "console"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
SKIP = re.compile(r"^<!--\s*doc-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->$")
TRAINS = re.compile(r"cvae_dist/train\.py|-m\s+cvae_dist\.train\b|\bcvae-train\b|\blaunch/[\w.-]+\.sh\b")
CI_OWN = re.compile(r"\bmake\s+(demo|test)\b")
COMMENT = re.compile(r"\s+#\s.*$")
# Repository entries the scratch folder does not link: outputs the commands write, and the VCS.
NOT_LINKED = {".git", "docs", "runs", "data", ".venv", ".pytest_cache"}
# Only a guard against a hung command: under other developers' load a tiny training can take minutes.
BLOCK_TIMEOUT = 900


def tiny_flags(dataset: Path) -> list[str]:
    return [*TINY_RUN, "--num_epoch", "1", "--DR", str(dataset)]


@dataclass
class Block:
    document: Path
    line: int
    """Line of the opening fence, 1-based."""
    language: str
    text: str
    skip_reason: str | None

    def where(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"


def shell_blocks(document: Path) -> list[Block]:
    blocks, lines = [], document.read_text().splitlines()
    number, previous = 0, ""
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if not opening:
            if lines[number].strip():
                previous = lines[number].strip()
            number += 1
            continue
        end = next((i for i in range(number + 1, len(lines)) if lines[i].startswith("```")), len(lines))
        language = opening.group(1).lower()
        if language in SHELL_LANGUAGES:
            marker = SKIP.match(previous)
            text = "\n".join(lines[number + 1 : end])
            blocks.append(Block(document, number + 1, language, text, marker.group("reason") if marker else None))
        previous, number = "", end + 1
    return blocks


def commands(block: Block) -> list[str]:
    """The block's logical command lines: continuations joined, comments and console output dropped."""
    raw = block.text.splitlines()
    if block.language == "console":
        kept, continuing = [], False
        for line in raw:
            if line.startswith("$ ") or continuing:
                kept.append(line[2:] if line.startswith("$ ") else line)
                continuing = line.endswith("\\")
        raw = kept
    logical, pending = [], ""
    for line in raw:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [COMMENT.sub("", line).rstrip() for line in logical if line.strip() and not line.lstrip().startswith("#")]


def rewrite(command: str, dataset: Path) -> str:
    if TRAINS.search(command):
        if re.search(r"&&|\|\||[|;]", command):
            raise ValueError(f"put a training command on a line of its own, so tiny flags can follow it: {command}")
        return command + " " + shlex.join(tiny_flags(dataset))
    words = shlex.split(command)
    if words[:1] == ["tensorboard"] and "--logdir" in words:
        return f"test -d {shlex.quote(words[words.index('--logdir') + 1])}"
    return command


def scratch_folder(root: Path, dataset: Path) -> Path:
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED and not entry.name.startswith(".pytest"):
            (root / entry.name).symlink_to(entry)
    (root / "path" / "to").mkdir(parents=True)
    (root / "path" / "to" / "dataset").symlink_to(dataset)
    return root


def environment() -> dict[str, str]:
    env = run_env()
    env["MPLBACKEND"] = "Agg"
    return env


def test_documents_are_found_and_hold_commands():
    names = {p.relative_to(REPO).as_posix() for p in DOCUMENTS}
    assert {"README.md", "docs/method.md", "docs/from-the-course-code.md"} <= names
    runnable = [b for doc in DOCUMENTS for b in shell_blocks(doc) if b.skip_reason is None]
    assert len(runnable) >= 5


def test_ci_commands_and_skips_are_marked():
    for document in DOCUMENTS:
        for block in shell_blocks(document):
            if CI_OWN.search(block.text):
                assert block.skip_reason, f"{block.where()}: mark blocks with make demo/make test <!-- doc-test: skip (...) -->"


def test_block_parsing_and_rewriting(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n<!-- doc-test: skip (needs a GPU) -->\n```bash\nnvidia-smi\n```\n\n"
        "```console\n$ accelerate launch cvae_dist/train.py \\\n    --lr 0.01   # faster\nsome output\n"
        "$ tensorboard --logdir runs/x\n```\n\n```python\nprint(1)\n```\n"
    )
    skipped, console = shell_blocks(doc)
    assert (skipped.skip_reason, skipped.line) == ("needs a GPU", 4)
    assert console.skip_reason is None
    lines = commands(console)
    assert lines == ["accelerate launch cvae_dist/train.py      --lr 0.01", "tensorboard --logdir runs/x"]
    dataset = tmp_path / "ds"
    assert rewrite(lines[0], dataset).endswith(shlex.join(tiny_flags(dataset)))
    assert rewrite(lines[1], dataset) == "test -d runs/x"
    assert rewrite("python -m cvae_dist.evaluate --ckpt x", dataset) == "python -m cvae_dist.evaluate --ckpt x"
    with pytest.raises(ValueError):
        rewrite("accelerate launch cvae_dist/train.py && echo done", dataset)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_in_the_document_runs(document, dataset_root, tmp_path):
    scratch = scratch_folder(tmp_path, dataset_root)
    env = environment()
    for block in shell_blocks(document):
        if block.skip_reason is not None:
            continue
        script = "\n".join(rewrite(command, dataset_root) for command in commands(block))
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert done.returncode == 0, (
            f"{block.where()}: exit {done.returncode}\n--- ran ---\n{script}\n--- output ---\n{(done.stdout + done.stderr)[-3000:]}"
        )
