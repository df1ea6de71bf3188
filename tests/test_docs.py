"""The documentation holds together: every relative link in README.md, CONTRIBUTING.md and docs/*.md
points to a file that exists (and, with a #fragment into a Markdown file, to one of its headings), and
the README stays a front page."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path) -> list[Path]:
    """The Markdown files whose links are checked: README.md, CONTRIBUTING.md and docs/*.md."""
    return [p for p in [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "docs").glob("*.md"))]
            if p.exists()]


def link_targets(markdown: str) -> list[str]:
    """The targets of inline links, images and reference definitions, outside code blocks and spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def broken_links(root: Path) -> list[str]:
    """'file: target (why)' for every relative link under root that does not resolve."""
    broken = []
    for doc in doc_files(root):
        for target in link_targets(doc.read_text(encoding="utf-8")):
            if SCHEME.match(target) or target.startswith("//"):
                continue  # another host: not checked offline
            path_part, _, fragment = target.partition("#")
            path = (doc.parent / path_part).resolve() if path_part else doc
            where = f"{doc.relative_to(root)}: {target}"
            if not path.exists():
                broken.append(f"{where} (no such file)")
                continue
            if fragment and path.suffix == ".md" and fragment not in anchors(path.read_text(encoding="utf-8")):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


def test_every_relative_link_resolves():
    assert broken_links(ROOT) == []


def test_the_checker_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## The 5.0 % target: what's left\n\n## Notes\n\n## Notes\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#the-50--target-whats-left) [ok](docs/a.md#notes-1)\n"
        "[web](https://example.org/x.md) `[in code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n"
        "[gone](docs/gone.md) [bad anchor](docs/a.md#notes-2) [self](#no-such-heading)\n"
        "![missing picture](docs/missing.png)\n")
    assert broken_links(tmp_path) == [
        "README.md: docs/gone.md (no such file)",
        "README.md: docs/a.md#notes-2 (no heading with that anchor)",
        "README.md: #no-such-heading (no heading with that anchor)",
        "README.md: docs/missing.png (no such file)",
    ]


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the details belong in docs/"
