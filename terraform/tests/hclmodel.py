"""Terraform modules as plain Python values, read with python-hcl2.

Only what the checks need: blocks by type and label, variable defaults, locals,
and the `aws_iam_policy_document` data sources turned into statements. Expressions
are kept as Terraform source text ("${local.bucket_arns}"); `Module.resolve`
substitutes variable defaults and locals where they are literals, which is
enough for the places the checks look at (action lists, condition keys).

python-hcl2 8.x keeps the quotes of string literals ('"s3:PutObject"') and adds
`__is_block__` / `__comments__` keys; older versions do neither. `normalize`
makes both look the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import hcl2

_REF = re.compile(r"\$\{(var|local)\.([A-Za-z0-9_]+)\}")
_WHOLE_REF = re.compile(r"^\$\{(var|local)\.([A-Za-z0-9_]+)\}$")
_DOC_JSON = re.compile(r"^\$\{data\.aws_iam_policy_document\.([A-Za-z0-9_]+)\.json\}$")


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return s


def normalize(value):
    if isinstance(value, dict):
        return {_unquote(k): normalize(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


def blocks(body: dict, name: str) -> list[dict]:
    """Nested blocks called `name` (e.g. statement) of a block body."""
    found = body.get(name, [])
    return found if isinstance(found, list) else [found]


def dynamic_blocks(body: dict, name: str) -> list[dict]:
    """The `content` of each `dynamic "name"` block of a block body."""
    out = []
    for dyn in blocks(body, "dynamic"):
        if name in dyn:
            for content in blocks(dyn[name], "content"):
                out.append(content)
    return out


@dataclass
class Condition:
    test: str
    variable: str
    values: object
    dynamic: bool = False


@dataclass
class Statement:
    doc: str
    sid: str
    effect: str
    actions: list[str] | None  # None: not a literal list, unreadable
    not_actions: object
    resources: object
    not_resources: object
    principals: list[dict]
    conditions: list[Condition]
    dynamic: bool = False

    def where(self) -> str:
        return f"{self.doc}/{self.sid or '(no sid)'}"

    def condition(self, variable: str) -> list[Condition]:
        return [c for c in self.conditions if c.variable == variable]


@dataclass
class PolicyDocument:
    name: str
    file: str
    statements: list[Statement] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # names of source_policy_documents
    unreadable_sources: list[str] = field(default_factory=list)
    overrides: object = None


class Module:
    """The .tf files of one directory (one Terraform module)."""

    def __init__(self, texts: dict[str, str]):
        self.files = {name: normalize(hcl2.loads(text)) for name, text in sorted(texts.items())}

    @classmethod
    def load(cls, directory: Path) -> "Module":
        return cls({p.name: p.read_text() for p in sorted(directory.glob("*.tf"))})

    # --- blocks ---------------------------------------------------------------

    def labelled(self, kind: str, type_: str | None = None):
        """(type, name, body, file) of every `kind "type" "name"` block (resource, data),
        or (name, body, file) for one-label blocks (variable, module, output, provider)."""
        for fname, parsed in self.files.items():
            for entry in parsed.get(kind, []):
                for first, rest in entry.items():
                    if kind in ("resource", "data"):
                        if type_ is not None and first != type_:
                            continue
                        for name, body in rest.items():
                            yield first, name, body, fname
                    else:
                        yield first, rest, fname

    def resources(self, type_: str) -> dict[str, dict]:
        return {name: body for _, name, body, _ in self.labelled("resource", type_)}

    def data(self, type_: str) -> dict[str, dict]:
        return {name: body for _, name, body, _ in self.labelled("data", type_)}

    def variables(self) -> dict[str, dict]:
        return {name: body for name, body, _ in self.labelled("variable")}

    def modules(self) -> dict[str, dict]:
        return {name: body for name, body, _ in self.labelled("module")}

    def outputs(self) -> dict[str, dict]:
        return {name: body for name, body, _ in self.labelled("output")}

    def providers(self) -> list[tuple[str, dict]]:
        return [(name, body) for name, body, _ in self.labelled("provider")]

    def locals(self) -> dict:
        merged = {}
        for parsed in self.files.values():
            for entry in parsed.get("locals", []):
                merged.update(entry)
        return merged

    # --- expressions ----------------------------------------------------------

    def resolve(self, expr, depth: int = 0):
        """Substitute `${var.x}` (its default) and `${local.x}` where they are literals."""
        if depth > 10:
            return expr
        if isinstance(expr, list):
            return [self.resolve(item, depth + 1) for item in expr]
        if not isinstance(expr, str):
            return expr
        whole = _WHOLE_REF.match(expr)
        if whole:
            value = self._lookup(whole.group(1), whole.group(2))
            return expr if value is None else self.resolve(value, depth + 1)

        def substitute(m: re.Match) -> str:
            value = self._lookup(m.group(1), m.group(2))
            if isinstance(value, str) and "${" not in value:
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            return m.group(0)

        return _REF.sub(substitute, expr)

    def _lookup(self, kind: str, name: str):
        if kind == "var":
            var = self.variables().get(name)
            return None if var is None else var.get("default")
        return self.locals().get(name)

    # --- IAM policy documents -------------------------------------------------

    def policy_documents(self) -> dict[str, PolicyDocument]:
        docs = {}
        for _, name, body, fname in self.labelled("data", "aws_iam_policy_document"):
            doc = PolicyDocument(name=name, file=fname)
            for src in self.resolve(body.get("source_policy_documents", [])) or []:
                m = _DOC_JSON.match(src) if isinstance(src, str) else None
                if m:
                    doc.sources.append(m.group(1))
                else:
                    doc.unreadable_sources.append(str(src))
            doc.overrides = body.get("override_policy_documents")
            for stmt in blocks(body, "statement"):
                doc.statements.append(self._statement(name, stmt, dynamic=False))
            for stmt in dynamic_blocks(body, "statement"):
                doc.statements.append(self._statement(name, stmt, dynamic=True))
            docs[name] = doc
        return docs

    def _statement(self, doc: str, body: dict, dynamic: bool) -> Statement:
        actions = self.resolve(body.get("actions"))
        if actions is not None and not (isinstance(actions, list) and all(isinstance(a, str) and "${" not in a for a in actions)):
            actions = None
        elif actions is None and "actions" not in body:
            actions = []
        conditions = [
            Condition(str(self.resolve(c.get("test"))), str(self.resolve(c.get("variable"))), c.get("values"))
            for c in blocks(body, "condition")
        ]
        conditions += [
            Condition(str(self.resolve(c.get("test"))), str(self.resolve(c.get("variable"))), c.get("values"), dynamic=True)
            for c in dynamic_blocks(body, "condition")
        ]
        return Statement(
            doc=doc,
            sid=str(self.resolve(body.get("sid", ""))),
            effect=str(self.resolve(body.get("effect", "Allow"))),
            actions=actions,
            not_actions=body.get("not_actions"),
            resources=body.get("resources"),
            not_resources=body.get("not_resources"),
            principals=blocks(body, "principals"),
            conditions=conditions,
            dynamic=dynamic,
        )


def flatten(docs: dict[str, PolicyDocument], name: str, seen: tuple = ()) -> list[Statement]:
    """All statements of a document, its source_policy_documents' first, recursively."""
    if name in seen or name not in docs:
        return []
    out = []
    for src in docs[name].sources:
        out += flatten(docs, src, seen + (name,))
    return out + docs[name].statements
