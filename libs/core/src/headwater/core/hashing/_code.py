"""Code SHA: the canonical form of everything that decides a dataset's output (normalised SQL
or Python, its inputs and mappings, engine, ordering and the user's version salt)."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from headwater.contracts.errors import InputError
from headwater.core.hashing._parts import hash_parts

CODE_SHA_VERSION: Final = 1

_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*m")


class CodeError(InputError):
    """A transform's code cannot be normalised (it does not parse, or names a missing function).

    Permanent: the same code fails the same way, so it is never retried.
    """

    def __init__(self, message: str) -> None:
        super().__init__("code", message, message=message)


def normalize_sql(sql: str, *, dialect: str = "duckdb") -> str:
    """Canonical text of SQL: sqlglot's rendering, so formatting, comments and keyword case
    do not count; identifiers keep their case and quoting (they name output columns)."""
    try:
        statements = sqlglot.parse(sql, read=dialect)
    except SqlglotError as exc:
        raise CodeError(f"SQL does not parse ({dialect} dialect): {_sql_reason(exc)}") from exc
    parsed = [s for s in statements if s is not None]
    if not parsed:
        raise CodeError("SQL is empty: it has no statement")
    for statement in parsed:
        if isinstance(statement, exp.Command):
            # sqlglot fell back to keeping the raw text, which cannot be normalised
            raise CodeError(
                f"SQL does not parse ({dialect} dialect): unsupported statement {statement.sql()!r}"
            )
    return ";\n".join(s.sql(dialect=dialect, comments=False) for s in parsed)


def _sql_reason(exc: SqlglotError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:  # ParseError: say where, without the terminal colour codes of str(exc)
        first = errors[0]
        return (
            f"{first.get('description')} at line {first.get('line')}, "
            f"column {first.get('col')}, near {first.get('highlight')!r}"
        )
    return _ANSI_RE.sub("", str(exc))


def sql_code_sha(sql: str, *, dialect: str = "duckdb") -> str:
    """Hash of `normalize_sql(sql)`: the code part of a SQL transform, alone."""
    return hash_parts(
        "headwater.sql", str(CODE_SHA_VERSION), dialect, normalize_sql(sql, dialect=dialect)
    )


def normalize_python(source: str, function: str) -> str:
    """Canonical text of `function` in module `source` plus the module-level statements it
    uses, transitively by name: functions, classes, assignments and imports.

    Docstrings, comments and formatting do not count, nor do module statements it does not
    reach. A local variable that shares a module-level name pulls that statement in too (safe:
    over-inclusion only makes the SHA change more often). Code in other modules does not count.
    """
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise CodeError(f"Python source does not parse: {exc}") from exc
    _strip_docstrings(module)
    statements = module.body
    if not any(
        isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == function
        for s in statements
    ):
        raise CodeError(f"Python source has no module-level function named {function!r}")
    bound = [_bound_names(s) for s in statements]
    chosen = {i for i, names in enumerate(bound) if "*" in names}  # star imports may bind any
    todo = [function]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for i, names in enumerate(bound):
            if name in names and i not in chosen:
                chosen.add(i)
                todo += _used_names(statements[i])
    # sorted by name; statements that rebind one name keep their source order
    ordered = sorted(chosen, key=lambda i: (min(bound[i], default=""), i))
    return "\n".join([f"function {function}", *(_dump(statements[i]) for i in ordered)])


def python_code_sha(source: str, function: str) -> str:
    """Hash of `normalize_python(source, function)`: the code part of a Python transform."""
    return hash_parts("headwater.python", str(CODE_SHA_VERSION), normalize_python(source, function))


_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]


def _bound_names(statement: ast.stmt) -> set[str]:
    """Module-level names a statement binds ("*" for a star import)."""
    names: set[str] = set()
    todo: list[ast.AST] = [statement]
    while todo:
        node = todo.pop()
        if isinstance(node, _Scope):
            names.add(node.name)
            if node is not statement:
                continue  # names bound inside a def or class are not module-level
            todo += node.decorator_list
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        todo += ast.iter_child_nodes(node)
    return names


def _used_names(statement: ast.stmt) -> list[str]:
    return sorted({n.id for n in ast.walk(statement) if isinstance(n, ast.Name)})


def _dump(node: object) -> str:
    """`ast.dump(annotate_fields=True, include_attributes=False)` without empty fields.

    Omitting None and [] (as Python 3.13's dump does) keeps the text identical across Python
    versions that add optional fields (3.12's `type_params`), so upgrading Python does not
    change every code SHA.
    """
    if isinstance(node, ast.AST):
        fields = []
        for field in node._fields:
            value = getattr(node, field, None)
            if (value is None and field != "value") or (isinstance(value, list) and not value):
                continue
            fields.append(f"{field}={_dump(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(item) for item in node) + "]"
    return repr(node)


def code_sha(
    *,
    kind: str,
    normalized_code: str,
    inputs: Sequence[tuple[str, str, str]],
    ordered: bool,
    version: str | None,
    engine: str,
) -> str:
    """Code SHA of a dataset: everything besides input data that decides its output.

    `inputs` are (input dataset, mapping, canonical mapping parameters); their order does not
    count. `version` is the user's salt; None and "" differ.
    """
    salt: list[str | bytes] = ["no-version"] if version is None else ["version", version]
    flat = [part for item in sorted(inputs) for part in item]
    return hash_parts(
        "headwater.code_sha",
        str(CODE_SHA_VERSION),
        kind,
        engine,
        "ordered" if ordered else "unordered",
        *salt,
        normalized_code,
        str(len(inputs)),
        *flat,
    )
