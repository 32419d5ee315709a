"""Find the S3 and RDS SDK calls in lifeboat's Rust sources.

The AWS SDK for Rust is used through fluent builders:

    client.put_object().bucket(b).key(k).object_lock_mode(m).body(x).send().await

    let mut req = client.delete_object().bucket(b).key(k);
    if let Some(id) = version { req = req.version_id(id); }
    req.send().await?;

so a call is a method named after an SDK operation (`.put_object(`, also
`Client::put_object(`), and the parameters that change which IAM action S3
authorizes (`.version_id(v)`, `.object_lock_mode(m)`, `.bypass_governance_retention(b)`)
are setters on its builder: on the same statement, or on later `req = req.x(..)`
statements of the variable the builder was bound to, up to `req.send()`. Setters
take an argument; output getters of the same name (`v.version_id()`) do not, and
are not setters. Reading `.object_lock_mode()` / `.object_lock_retain_until_date()`
from an output is noticed too: S3 returns those headers only to callers holding
s3:GetObjectRetention.

A setter that cannot be tied to one call (a builder handed to a helper function)
applies to every call of its file: that can only ask for more permissions than
needed, never fewer.

Comments and string literals are blanked out first, so that a doc comment
mentioning `.delete_object()` is not a call. S3 operations are looked for in
files that name the `aws_sdk_s3` crate, RDS operations in files that name
`aws_sdk_rds`. The operation names (every S3 and RDS operation, so that a call
the IAM map does not know is caught) come from sdk_operations.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SDK_OPERATIONS = json.loads(Path(__file__).with_name("sdk_operations.json").read_text())

_RAW_STRING = re.compile(r'b?r(#*)"')
_CHAR = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'")
_CALL = re.compile(r"(?:\.|::)\s*([a-z][a-z0-9_]*)\s*(?:::\s*<[^>]*>\s*)?\(")

# Builder setters (called with an argument) that change what IAM checks.
SETTERS = {
    "version_id": "version_id",
    "object_lock_mode": "retention",
    "object_lock_retain_until_date": "retention",
    "object_lock_legal_hold_status": "legal_hold",
    "bypass_governance_retention": "bypass",
    "prefix": "prefix",
}
# Output getters (called without one) whose answer depends on a permission.
GETTERS = {
    "object_lock_mode": "reads_retention",
    "object_lock_retain_until_date": "reads_retention",
    "object_lock_legal_hold_status": "reads_legal_hold",
}
_METHOD = re.compile(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*(\))?")
_FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
_LET = re.compile(r"let\s+(?:mut\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=;]*)?=")


@dataclass
class Call:
    file: str
    line: int
    service: str  # "s3" or "rds"
    operation: str  # snake case, as the Rust SDK names the method
    function: str = ""  # the enclosing `fn`
    flags: set[str] = field(default_factory=set)  # setters seen on this call's builder

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class FileScan:
    file: str
    services: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    flags: dict[str, int] = field(default_factory=dict)  # file-level flag -> first line


def strip_comments_and_strings(src: str) -> str:
    """Blank out comments, string and char literals, keeping every newline (and so line numbers)."""
    out = []
    i, n = 0, len(src)

    def blank(text: str) -> str:
        return "".join("\n" if ch == "\n" else " " for ch in text)

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j == -1 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        elif c in "br" and (m := _RAW_STRING.match(src, i)) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = src.find('"' + m.group(1), m.end())
            j = n if end == -1 else end + 1 + len(m.group(1))
            out.append('"' + blank(src[i + 1 : j - 1]) + '"')
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append('"' + blank(src[i + 1 : j - 1]) + '"')
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a, 'static).
            m = _CHAR.match(src, i)
            if m:
                out.append("' '")
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _statement_end(code: str, start: int) -> int:
    """Index of the `;` ending the statement that contains `start`, or of the `}` closing its block."""
    depth = 0
    for i in range(start, len(code)):
        ch = code[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return i
        elif ch == ";" and depth == 0:
            return i
    return len(code)


def _statement_start(code: str, pos: int) -> int:
    depth = 0
    for i in range(pos - 1, -1, -1):
        ch = code[i]
        if ch == "}" and depth == 0:
            return i + 1  # a block statement (if, for, ...) ends right before
        if ch in ")]}":
            depth += 1
        elif ch in "([{":
            if depth == 0:
                return i + 1
            depth -= 1
        elif ch == ";" and depth == 0:
            return i + 1
    return 0


def _builder_spans(code: str, pos: int) -> list[tuple[int, int]]:
    """Text spans holding the setters of the builder an operation call at `pos` creates:
    the rest of its statement and, if the builder is bound with `let`, every later
    `x = x...` statement of the block up to `x.send()`."""
    end = _statement_end(code, pos)
    spans = [(pos, end)]
    bound = _LET.match(code[_statement_start(code, pos) : pos].strip())
    if not bound or end >= len(code) or code[end] != ";":
        return spans
    var = re.escape(bound.group(1))
    block_end = _statement_end(code, end + 1)
    while block_end < len(code) and code[block_end] == ";":  # skip to the block's closing brace
        block_end = _statement_end(code, block_end + 1)
    send = re.compile(rf"\b{var}\s*\.\s*(?:send|into_paginator|customize)\s*\(")
    m = send.search(code, end, block_end)
    stop = m.start() if m else block_end
    for m in re.finditer(rf"\b{var}\s*=\s*{var}\b", code[end:stop]):
        at = end + m.start()
        spans.append((at, _statement_end(code, at)))
    return spans


def scan_source(path: str, text: str) -> FileScan:
    scan = FileScan(file=path)
    if re.search(r"\baws_sdk_s3\b", text):
        scan.services.add("s3")
    if re.search(r"\baws_sdk_rds\b", text):
        scan.services.add("rds")
    if not scan.services:
        return scan
    code = strip_comments_and_strings(text)

    def line_of(pos: int) -> int:
        return code.count("\n", 0, pos) + 1

    spans = []  # (start, end, call)
    for m in _CALL.finditer(code):
        name = m.group(1)
        for service in sorted(scan.services):
            if name in SDK_OPERATIONS[service]:
                fns = _FN.findall(code, 0, m.start())
                call = Call(path, line_of(m.start()), service, name, function=fns[-1] if fns else "")
                scan.calls.append(call)
                spans += [(a, b, call) for a, b in _builder_spans(code, m.start())]

    for m in _METHOD.finditer(code):
        name, no_args = m.group(1), m.group(2) is not None
        if no_args:
            if name in GETTERS:
                scan.flags.setdefault(GETTERS[name], line_of(m.start()))
            continue
        if name not in SETTERS:
            continue
        owners = [call for a, b, call in spans if a <= m.start() < b]
        if owners:
            # The innermost (latest) call whose builder this setter is on.
            owners[-1].flags.add(SETTERS[name])
        else:
            scan.flags.setdefault(SETTERS[name], line_of(m.start()))
    return scan


def scan_tree(repo: Path, roots: tuple[str, ...] = ("src", "crates")) -> list[FileScan]:
    scans = []
    for root in roots:
        base = repo / root
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.rs")):
            if "target" in path.relative_to(repo).parts:
                continue
            scans.append(scan_source(str(path.relative_to(repo)), path.read_text(errors="replace")))
    return scans
