#!/usr/bin/env python3
"""Rewrites the README's file map ("Which file holds what") from the sources: every tracked Rust
file, grouped by folder, with the first sentence of its opening `//!` doc comment. Run it after
adding, moving or re-documenting a file: `python3 infra/file-map.py` (`--check` exits 1 when the
README is stale, without writing)."""

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "<details><summary>The file map (click to open)</summary>"
END = "</details>"
LIMIT = 110


def first_sentence(path: Path) -> str:
    """The opening `//!` block's first sentence (up to '. ' or the block's end), on one line."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("//!"):
            text = stripped[3:].strip()
            if not text and lines:
                break  # a blank doc line ends the first paragraph
            if text:
                lines.append(text)
        elif stripped.startswith("#![") or (not stripped and not lines):
            continue
        else:
            break
    paragraph = " ".join(lines)
    # A sentence ends at '. ', '.' at the end, or ':' followed by a blank line; keep code spans whole.
    match = re.search(r"(?<!e\.g)(?<!i\.e)(?<!\bvs)\.(\s|$)", paragraph)
    sentence = (paragraph[: match.start()] if match else paragraph).strip()
    # One line each: a long sentence is cut at its last clause boundary within the limit.
    if len(sentence) > LIMIT:
        cuts = [m.start() for m in re.finditer(r" \(| — |; |: |, ", sentence) if m.start() >= 20]
        within = [c for c in cuts if c <= LIMIT]
        if within or cuts:
            sentence = sentence[: max(within) if within else min(cuts)]
    return sentence.strip().rstrip(":;,")


def file_map() -> str:
    tracked = subprocess.run(
        ["git", "ls-files", "*.rs"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    folders = defaultdict(list)
    for name in tracked:
        p = Path(name)
        folders[str(p.parent) + "/"].append(p.name)
    out = [START, ""]
    for folder in sorted(folders):
        out.append(f"- **`{folder}`**")
        for name in sorted(folders[folder]):
            words = first_sentence(ROOT / folder / name)
            out.append(f"  - `{name}` — {words}" if words else f"  - `{name}`")
    out += ["", END]
    return "\n".join(out)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index(START)
    end = text.index(END, start) + len(END)
    new = text[:start] + file_map() + text[end:]
    if "--check" in sys.argv:
        if new != text:
            print("README.md's file map is stale: run python3 infra/file-map.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
