"""`.containerignore` / `.dockerignore` (toolkit.definitions.ignorefile) and the build
digest that honours them (toolkit.runtime.builds, issue 13 item 1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from toolkit.definitions.ignorefile import IgnoreRules, candidates
from toolkit.definitions.imageref import ImageError
from toolkit.definitions.model import Build
from toolkit.runtime import builds
from toolkit.runtime.builds import build_digest

# (ignore file, path relative to the context, excluded?)
TABLE = [
    ("foo", "foo", True),
    ("foo", "foo/bar/baz", True),  # a directory's contents go with it
    ("foo", "a/foo", False),  # not at any depth (gitignore would match)
    ("foo", "foobar", False),
    ("foo/", "foo/x", True),
    ("*.txt", "a.txt", True),
    ("*.txt", "d/a.txt", False),  # * does not cross a /
    ("*/*.txt", "d/a.txt", True),
    ("**/*.txt", "a.txt", True),
    ("**/*.txt", "d/e/a.txt", True),
    ("**/*.txt", "d/a.txt/inside", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/yb", False),
    ("a/**", "a", False),
    ("a/**", "a/x/y", True),
    ("**", "any/thing", True),
    ("?at", "cat", True),
    ("a?b", "a/b", False),
    ("[cb]at", "bat", True),
    ("[^c]at", "bat", True),
    ("[^c]at", "cat", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[\\]]x", "]x", True),
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("a\\?", "a?", True),
    ("a\\?", "ab", False),
    ("a.b", "axb", False),  # "." is literal
    ("a$", "a$", True),
    # buildah reads these as regular expressions (a+b excludes aab, not a+b): the
    # digest counts both; as an exception such a pattern re-includes everything
    ("a+b", "aab", False),
    ("a+b", "a+b", False),
    ("(x)|y", "(x)|y", False),
    ("x{2}", "xx", False),
    ("a^b", "a^b", False),
    ("\\d", "d", False),
    ("\\d", "1", False),
    ("*\n!x{2}", "anything/below", False),
    ("#foo", "#foo", False),  # a comment
    (" #foo", "#foo", True),  # not a comment: "#" is not the line's first character
    ("/foo", "foo", True),  # a leading / is dropped
    ("/foo/", "foo/x", True),
    (" /foo", "foo", False),  # buildah never matches it (module docstring)
    (".", "x", False),
    ("./foo", "foo", True),
    ("foo/../bar", "bar", True),
    ("foo/../bar", "foo", False),
    ("  foo \t\r", "foo", True),
    ("\ufefffoo", "foo", False),  # buildah keeps a byte order mark
    ("*\n!keep", "keep", False),
    ("*\n!keep", "other", True),
    ("!keep\n*", "keep", True),  # the last pattern that matches decides
    ("*\n! keep", "keep", False),
    ("a\n!a/b", "a/b/c", False),
    ("a\n!a/b", "a/c", True),
    ("node_modules\n!node_modules/keep\nnode_modules/keep/tmp", "node_modules/keep/tmp/x", True),
    ("*", ".", False),  # never the context itself
]


@pytest.mark.parametrize(("text", "path", "excluded"), TABLE)
def test_patterns(text: str, path: str, excluded: bool) -> None:
    assert IgnoreRules.parse(text, ".dockerignore").excluded(path) is excluded


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("[abc", 1, 1, "without its"),
        ("ok\n\n  a/[b", 3, 3, "without its"),
        ("a\\", 1, 1, "at the end"),
        ("[z-a]", 1, 1, "empty range"),
        ("[]a]", 1, 1, "character of a class"),
        ("[-a]", 1, 1, "character of a class"),
        ("!", 1, 1, "needs a pattern"),
        ("x\n  !  ", 2, 3, "needs a pattern"),
    ],
)
def test_bad_patterns_are_located(text: str, line: int, column: int, reason: str) -> None:
    with pytest.raises(ImageError, match=f"^ctx/.dockerignore:{line}:{column}: .*{reason}"):
        IgnoreRules.parse(text, "ctx/.dockerignore")


PATHS = [
    "a", "a/b", "a/b/c", "a/c", "a/c/keep", "a/x/y/keep", "a/x.md", "b", "b/keep",
    "node_modules", "node_modules/p/index.js", "node_modules/keep/x",
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "below", "expected"),
    [
        ("a\n!a/b", "a", True),
        ("a\n!a/b", "a/c", False),
        ("a\n!*.md", "a", False),  # *.md matches only at the top
        ("a\n!**/keep", "a/c", True),
        ("a\n!a/*/keep", "a/x", True),
        ("a\n!a/*/keep", "a/x/y", False),
        ("a\n![^x]/b", "a", True),  # a negated class may match "/": errs towards entering
        ("a\nb", "a", False),
        ("!x+\na", "a", True),  # errs towards entering
        ("node_modules\n!node_modules/keep", "node_modules", True),
    ],
)
def test_which_excluded_directories_a_walk_enters(text: str, below: str, expected: bool) -> None:
    rules = IgnoreRules.parse(text, ".dockerignore")
    assert rules.excluded(below)
    assert rules.may_reinclude_below(below) is expected
    if not expected:  # sound: nothing below it is kept
        assert all(rules.excluded(p) for p in PATHS if p.startswith(below + "/"))


def test_which_ignore_file() -> None:
    """buildah's order (pkg/parse.ContainerIgnoreFile): beside the Dockerfile first."""
    assert candidates("/c", "/d/Containerfile") == (
        "/d/Containerfile.dockerignore", "/d/Containerfile.containerignore",
        "/c/.containerignore", "/c/.dockerignore",
    )  # fmt: skip
    assert candidates("/c", None) == ("/c/.containerignore", "/c/.dockerignore")


def _context(tmp_path: Path, files: dict[str, str]) -> Build:
    context = tmp_path / "ctx"
    for name, text in {"Dockerfile": "FROM scratch\nCOPY . /\n", **files}.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    return Build(context=str(context))


def test_an_ignored_file_does_not_change_the_digest(tmp_path: Path) -> None:
    build = _context(tmp_path, {
        ".dockerignore": "# generated\n.git\nnode_modules\n!node_modules/keep\n*.log\n",
        "src/main.c": "int main;", ".git/HEAD": "ref", "node_modules/p/i.js": "1",
        "node_modules/keep/k.js": "1", "app.log": "1", "src/app.log": "1",
    })  # fmt: skip
    context = Path(build.context)
    first = build_digest(build)
    for name in (".git/HEAD", "node_modules/p/i.js", "app.log"):
        (context / name).write_text("changed")
    (context / ".git" / "objects").mkdir()
    assert build_digest(build) == first
    for name in ("src/main.c", "node_modules/keep/k.js", "src/app.log"):  # kept: count
        (context / name).write_text("changed")
        assert build_digest(build) != first
        first = build_digest(build)


def test_excluded_files_are_not_read_nor_their_directories_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = _context(tmp_path, {
        ".dockerignore": "node_modules\nsecret\n", "node_modules/p/i.js": "1",
        "secret": "s", "kept": "k",
    })  # fmt: skip
    scanned: list[str] = []
    opened: list[str] = []
    scandir, real_open = os.scandir, open

    def spy_scandir(path: Any) -> Any:
        scanned.append(os.fspath(path))
        return scandir(path)

    def spy_open(path: Any, *args: Any) -> Any:
        opened.append(os.fspath(path))
        return real_open(path, *args)

    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", spy_scandir)
        patch.setattr(builds, "open", spy_open, raising=False)
        build_digest(build)
    assert scanned == [build.context]
    assert sorted(Path(p).name for p in opened) == [".dockerignore", "Dockerfile", "kept"]


def test_the_dockerfile_and_the_ignore_file_count_even_when_ignored(tmp_path: Path) -> None:
    build = _context(tmp_path, {".dockerignore": "Dockerfile\n.dockerignore\n"})
    context = Path(build.context)
    first = build_digest(build)
    (context / "Dockerfile").write_text("FROM scratch\nLABEL a=b\n")
    second = build_digest(build)
    assert second != first
    (context / ".dockerignore").write_text("Dockerfile\n.dockerignore\n# a comment\n")
    assert build_digest(build) != second


def test_containerignore_wins_over_dockerignore(tmp_path: Path) -> None:
    build = _context(
        tmp_path, {".containerignore": "a\n", ".dockerignore": "b\n", "a": "", "b": ""}
    )
    context = Path(build.context)
    first = build_digest(build)
    (context / "a").write_text("changed")
    assert build_digest(build) == first
    (context / "b").write_text("changed")
    assert build_digest(build) != first


def test_an_ignore_file_beside_the_dockerfile_wins(tmp_path: Path) -> None:
    build = _context(tmp_path, {".containerignore": "a\n", "a": "", "b": ""})
    context = Path(build.context)
    outside = tmp_path / "app.Dockerfile"
    outside.write_text("FROM scratch\n")
    (tmp_path / "app.Dockerfile.containerignore").write_text("b\n")
    with_file = build._replace(dockerfile=str(outside))
    first = build_digest(with_file)
    (context / "b").write_text("changed")
    assert build_digest(with_file) == first
    (context / "a").write_text("changed")
    assert build_digest(with_file) != first
    # the context's own Dockerfile (no `dockerfile:`) has one too: Dockerfile.dockerignore
    (context / "Dockerfile.dockerignore").write_text("a\nb\n")
    first = build_digest(build)
    (context / "a").write_text("again")
    assert build_digest(build) == first


def test_an_unreadable_ignore_file_is_a_clear_error(tmp_path: Path) -> None:
    build = _context(tmp_path, {})
    ignore = Path(build.context) / ".dockerignore"
    os.mkfifo(ignore)  # reading it would block
    with pytest.raises(
        ImageError, match=r"ignore file .*/\.dockerignore: not a regular file \(a FIFO\)"
    ):
        build_digest(build)
    ignore.unlink()
    ignore.mkdir()
    with pytest.raises(ImageError, match=r"not a regular file \(a directory\)"):
        build_digest(build)
    ignore.rmdir()
    ignore.write_text("ok\n[oops\n")
    with pytest.raises(ImageError, match=rf"^{ignore}:2:1: invalid pattern '\[oops'"):
        build_digest(build)
