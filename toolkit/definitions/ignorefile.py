"""`.containerignore` / `.dockerignore`: which files of a build context a build sees.

Pure: the build digest (toolkit.runtime.builds) reads the file and walks the context.
It implements the rules of containers-ignore(5) and Docker's "dockerignore file"
reference as buildah computes them (checked against buildah 1.28.2, Debian's, and its
current source: pkg/parse.ContainerIgnoreFile, openshift/imagebuilder.ParseIgnore,
containers/storage pkg/fileutils, copier; moby/patternmatcher for Docker):

- Which file (`candidates`): beside the Dockerfile, `<Dockerfile>.dockerignore`, else
  `<Dockerfile>.containerignore` (buildah's code lets the `.dockerignore` one win
  although its comment says otherwise); else `.containerignore` in the context, else
  `.dockerignore` there. The first that exists is the only one read.
- Syntax: one pattern a line; a line starting with `#` is a comment; blanks around a
  pattern are trimmed; `!` makes an exception that re-includes what it matches; the
  pattern is cleaned like Go's filepath.Clean and a leading `/` dropped; an empty `!`
  or a pattern that Go's filepath.Match rejects (an unterminated `[`, a range such as
  `[z-a]` or `[-a]`, a trailing `\\`) is an error, as buildah's build fails on it.
- Matching: Go filepath.Match syntax: `*` (no `/`), `?` (one character but `/`),
  `[...]` / `[^...]` (a class; a negated one may match `/`), `\\x` (x itself; `*` and
  `?` inside a class are literal, which Docker's translation garbles); `**`
  matches any number of directories (`**/` counts as `**`, a trailing `**` matches
  everything below). A pattern matches a path or any path below one it matches, so
  excluding a directory excludes its contents; the last pattern that matches a path
  decides (an exception after an exclusion re-includes). The context itself is never
  excluded.

The result must never leave out a file that buildah copies (a missed rebuild), while
leaving in one it skips costs only a needless rebuild. So where buildah and Docker
differ, or buildah does something else than the syntax says, the digest counts the
file:
- buildah (containers/storage) turns a pattern into a regular expression escaping
  only `.` and `$`: `a+b` excludes `aab` and not `a+b`, `\\d` a digit, `p|q` all that
  starts with `p`. A pattern with `+ ( ) | { } ^` outside a class or a `\\` before a
  letter or digit therefore excludes nothing here, and as an exception re-includes
  everything;
- an exception under an excluded directory re-includes also where buildah does not
  enter the directory (it enters only when the exception starts with its path);
- an exclusion written with blanks before its leading `/` (` /tmp`) matches
  nothing, as in buildah; `! x` is the exception `x`, as in Docker; a UTF-8 byte
  order mark is kept (Docker strips it, and so does Debian's buildah 1.28.2), so a
  first pattern starting with one matches nothing.

Python's `pathspec` implements gitignore, whose rules differ (a pattern without `/`
matches at any depth, a trailing `/` matches only directories, `**` rules), so it was
not used.
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple

from toolkit.definitions.imageref import ImageError

# Go's unicode.IsSpace, which strings.TrimSpace trims
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)


def candidates(context: str, dockerfile: str | None) -> tuple[str, ...]:
    """The ignore files buildah looks for, in order of precedence: the first one that
    exists is used. `dockerfile`: the `--file` given, or the one found in the context."""
    beside = (f"{dockerfile}.dockerignore", f"{dockerfile}.containerignore") if dockerfile else ()
    return (
        *beside,
        posixpath.join(context, ".containerignore"),
        posixpath.join(context, ".dockerignore"),
    )


class _BadPattern(ValueError):
    pass


def _bound(pattern: str, index: int) -> tuple[str, int]:
    """One end of a class range, as Go's filepath getEsc reads it."""
    if index >= len(pattern):
        raise _BadPattern('a "[" without its "]"')
    if pattern[index] in "-]":
        raise _BadPattern(f'a "{pattern[index]}" where a character of a class is expected')
    if pattern[index] == "\\":
        index += 1
        if index >= len(pattern):
            raise _BadPattern('a "[" without its "]"')
    if index + 1 >= len(pattern):
        raise _BadPattern('a "[" without its "]"')
    return pattern[index], index + 1


def _character_class(pattern: str, index: int) -> tuple[str, int]:
    """The regular expression of the class that starts after the `[` at index-1."""
    negated = index < len(pattern) and pattern[index] == "^"
    index += negated
    ranges: list[str] = []
    while True:
        if index < len(pattern) and pattern[index] == "]" and ranges:
            return "[" + "^" * negated + "".join(ranges) + "]", index + 1
        low, index = _bound(pattern, index)
        high = low
        if pattern[index] == "-":
            high, index = _bound(pattern, index + 1)
        if low > high:
            raise _BadPattern(f"the empty range {low}-{high}")
        ranges.append(re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}")


_REGEX_ONLY = frozenset("+()|{}^")  # what buildah leaves unescaped (module docstring)


def _translate(pattern: str) -> tuple[str, bool, bool]:
    """The regular expression of a cleaned pattern (full match); whether a part of it
    other than a literal `/` can match `/` (`**`, or a class such as `[^a]`); whether
    buildah reads it otherwise, as a regular expression (module docstring)."""
    parts: list[str] = []
    crosses = regex_like = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*" and pattern.startswith("*", index):
            index += 1 + pattern.startswith("/", index + 1)
            parts.append(".*" if index >= len(pattern) else "(?:.*/)?")
            crosses = True
        elif char == "*":
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        elif char == "\\":
            if index >= len(pattern):
                raise _BadPattern('a "\\" at the end')
            regex_like = regex_like or (pattern[index].isascii() and pattern[index].isalnum())
            parts.append(re.escape(pattern[index]))
            index += 1
        elif char == "[":
            expression, index = _character_class(pattern, index)
            crosses = crosses or re.fullmatch(expression, "/") is not None
            parts.append(expression)
        else:
            regex_like = regex_like or char in _REGEX_ONLY
            parts.append(re.escape(char))
    return "".join(parts), crosses, regex_like


def _segment(text: str) -> re.Pattern[str] | None:
    """One `/`-separated part of a pattern; None when it may match more than one
    component of a path (or means something only with its neighbours: `a\\/b`)."""
    try:
        expression, crosses, _ = _translate(text)
    except _BadPattern:
        return None
    return None if crosses else re.compile(expression)


class Pattern(NamedTuple):
    """One line of an ignore file."""

    text: str  # cleaned, without the `!`
    exception: bool  # `!`: re-includes what it matches
    regex: re.Pattern[str]  # full match: the path, or a path below one that matches
    segments: tuple[re.Pattern[str] | None, ...]  # per component; None: may cross a `/`


def _clean(text: str) -> str:
    """Go's filepath.Clean (posixpath.normpath keeps a leading `//`)."""
    cleaned = posixpath.normpath(text)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _pattern(text: str, exception: bool) -> Pattern:
    expression, _, regex_like = _translate(text)
    if regex_like:  # buildah's reading is another: exclude nothing, re-include everything
        return Pattern(text, exception, re.compile("(?s:.*)" if exception else "(?!)"), (None,))
    return Pattern(
        text, exception, re.compile(expression + "(?:/.*)?"),
        tuple(_segment(part) for part in text.split("/")),
    )  # fmt: skip


class IgnoreRules:
    """The patterns of one ignore file, and the questions a walk of the context asks."""

    def __init__(self, patterns: tuple[Pattern, ...]) -> None:
        self.patterns = patterns
        self._exceptions = tuple(p for p in patterns if p.exception)

    @classmethod
    def parse(cls, text: str, source: str) -> IgnoreRules:
        """The rules of an ignore file's text; a bad pattern is an ImageError located
        `SOURCE:LINE:COLUMN`."""
        patterns: list[Pattern] = []
        for number, line in enumerate(text.split("\n"), 1):
            stripped = line.strip(_GO_SPACE)
            if line.startswith("#") or not stripped:
                continue
            column = len(line) - len(line.lstrip(_GO_SPACE)) + 1
            exception = stripped.startswith("!")
            body = stripped[1:].strip(_GO_SPACE) if exception else stripped
            if not body:
                raise ImageError(
                    f'{source}:{number}:{column}: an exception "!" needs a pattern',
                    hint="the syntax is containers-ignore(5)'s (Docker's .dockerignore)",
                )
            if not exception and body.startswith("/") and line[0] in _GO_SPACE:
                continue  # buildah trims "/" before blanks: it never matches (module docstring)
            body = _clean(body)
            if len(body) > 1 and body.startswith("/"):
                body = body[1:]
            try:
                patterns.append(_pattern(body, exception))
            except _BadPattern as error:
                raise ImageError(
                    f"{source}:{number}:{column}: invalid pattern {stripped!r}: {error}",
                    hint="patterns follow Go's filepath.Match: * ? [class] \\x, and ** "
                    "(containers-ignore(5))",
                ) from None
        return cls(tuple(patterns))

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative to the context, `/`-separated) is left out."""
        verdict = False
        for pattern in self.patterns:
            if pattern.exception == verdict and pattern.regex.fullmatch(path):
                verdict = not pattern.exception
        return verdict and path != "."

    def may_reinclude_below(self, directory: str) -> bool:
        """Whether an exception may re-include something below the excluded `directory`:
        when not, a walk need not enter it. Errs towards True."""
        components = directory.split("/")
        return any(_may_match_below(p.segments, components) for p in self._exceptions)


def _may_match_below(segments: tuple[re.Pattern[str] | None, ...], components: list[str]) -> bool:
    for index, component in enumerate(components):
        if index == len(segments):
            return False
        segment = segments[index]
        if segment is None:
            return True
        if not segment.fullmatch(component):
            return False
    return len(segments) > len(components)
