"""Column-level lineage of SQL datasets, from sqlglot's lineage over the inputs' columns:
per output column, the input columns it is computed from and its expression. Pure: the
columns of sources come from their declaration, those of SQL datasets from their SQL over
their inputs' (resolved in dependency order); a Python dataset's are unknown."""

from collections.abc import Mapping
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope
from sqlglot.schema import MappingSchema

from headwater.contracts.rpc import ColumnChanges, DatasetColumns, OutputColumn, SourceColumn
from headwater.core.spec import Pipeline

LINEAGE_VERSION = 1  # stored beside each dataset's column lineage


def sql_columns(
    dataset: str, sql: str, inputs: Mapping[str, tuple[list[str] | None, str]]
) -> DatasetColumns:
    """The column lineage of the SQL dataset `dataset` over `inputs`: input name -> (its
    columns, or None when unknown; why unknown, when so). A column that reads an input of
    unknown columns by name (`w.precip`) is attributed to it and marked `unresolved`: the
    name comes from the SQL and is not checked against the input."""
    known = {name: cols for name, (cols, _) in inputs.items() if cols is not None}
    schema = MappingSchema(
        {name: dict.fromkeys(cols, "unknown") for name, cols in known.items()}, dialect="duckdb"
    )
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
        query = qualify(
            tree, schema=schema, dialect="duckdb", validate_qualify_columns=False, identify=False
        )
        scope = build_scope(query)
    except SqlglotError as exc:
        return DatasetColumns(
            dataset=dataset, kind="sql", columns=None, unknown=f"SQL not understood: {exc}"
        )
    if not isinstance(query, exp.Query):  # VALUES, PIVOT, ...: no select list to follow
        return DatasetColumns(
            dataset=dataset, kind="sql", columns=None, unknown="not a SELECT: columns not followed"
        )
    unknown_inputs = {name: why for name, (cols, why) in inputs.items() if cols is None}
    if any(isinstance(s, exp.Star) or s.is_star for s in _selects(query)):
        over = ", ".join(f"{n} ({why})" for n, why in sorted(unknown_inputs.items())) or "-"
        return DatasetColumns(
            dataset=dataset,
            kind="sql",
            columns=None,
            unknown=f"SELECT * over inputs whose columns are unknown: {over}",
        )
    columns = []
    expressions = {_output_name(s): s for s in _selects(query)}
    for name in query.named_selects:
        columns.append(
            _output_column(name, query, scope, schema, expressions.get(name), unknown_inputs)
        )
    return DatasetColumns(dataset=dataset, kind="sql", columns=tuple(columns))


def _selects(query: exp.Expr) -> list[exp.Expr]:
    """The select list of a query (of its first branch for a set operation)."""
    while isinstance(query, exp.SetOperation):
        query = query.this
    return list(query.selects) if isinstance(query, exp.Query) else []


def _output_name(select: exp.Expr) -> str:
    return select.alias_or_name


def _output_column(
    name: str,
    query: exp.Expr,
    scope: Any,
    schema: MappingSchema,
    select: exp.Expr | None,
    unknown_inputs: Mapping[str, str],
) -> OutputColumn:
    expression = _expression_sql(select)
    try:
        node = lineage(name, query, schema=schema, dialect="duckdb", scope=scope, copy=True)
    except SqlglotError as exc:
        return OutputColumn(name=name, expression=expression, unresolved=f"not understood: {exc}")
    sources: set[tuple[str, str]] = set()
    problems: list[str] = []
    for leaf in node.walk():
        if leaf.downstream:
            continue
        column = leaf.name.split(".")[-1].strip('"')
        if isinstance(leaf.expression, exp.Table):
            table = leaf.expression.name
            sources.add((table, column))
            if table in unknown_inputs:
                problems.append(f"{column}: named by the SQL, not checked: {unknown_inputs[table]}")
        elif isinstance(leaf.expression, exp.Placeholder):
            problems.append(
                f"cannot tell which input {column!r} comes from"
                + (
                    f" (columns unknown: {', '.join(sorted(unknown_inputs))})"
                    if unknown_inputs
                    else ""
                )
            )
    return OutputColumn(
        name=name,
        sources=tuple(SourceColumn(dataset=d, column=c) for d, c in sorted(sources)),
        expression=expression,
        unresolved="; ".join(sorted(set(problems))) or None,
    )


def _expression_sql(select: exp.Expr | None) -> str:
    """The select expression without its alias and comments, as DuckDB SQL."""
    if select is None:
        return ""
    inner = select.this if isinstance(select, exp.Alias) else select
    inner = inner.copy()
    for node in inner.walk():
        node.comments = None
    return inner.sql(dialect="duckdb")


def pipeline_columns(pipeline: Pipeline) -> dict[str, DatasetColumns]:
    """Every dataset's columns, in dependency order: a source's declared ones (unknown when
    not declared), a SQL dataset's from its SQL over its inputs', a Python dataset's unknown."""
    out: dict[str, DatasetColumns] = {}
    for name, ds in pipeline.datasets.items():  # dependency order
        if ds.kind == "source":
            if ds.columns is None:
                out[name] = DatasetColumns(
                    dataset=name,
                    kind="source",
                    columns=None,
                    unknown="a source without declared columns",
                )
            else:
                out[name] = DatasetColumns(
                    dataset=name,
                    kind="source",
                    columns=tuple(OutputColumn(name=c) for c in ds.columns),
                )
        elif ds.kind == "python":
            out[name] = DatasetColumns(
                dataset=name,
                kind="python",
                columns=None,
                unknown="a Python transform: its columns are known only from its output",
            )
        else:
            inputs = {
                i: (out[i].names, f"{i} is {_what_unknown(out[i])}") for i in sorted(ds.inputs)
            }
            try:
                out[name] = sql_columns(name, ds.code, inputs)
            except (ValueError, KeyError, RecursionError) as exc:  # sqlglot's own, not ours
                out[name] = DatasetColumns(
                    dataset=name, kind="sql", columns=None, unknown=f"not understood: {exc!r}"
                )
    return out


def _what_unknown(d: DatasetColumns) -> str:
    if d.kind == "python":
        return "a Python dataset"
    if d.kind == "source":
        return "a source without declared columns"
    return "a SQL dataset whose columns are unknown"


def column_changes(old: DatasetColumns | None, new: DatasetColumns) -> ColumnChanges:
    """Which output columns a change touches: `added`, `removed`, `changed` (its expression
    or its input columns differ), `unchanged`; `unknown` says why they cannot be compared
    (either side's columns unknown), else None."""
    if old is None or old.columns is None or new.columns is None:
        why = (
            "no column lineage was stored for the applied version"
            if old is None
            else old.unknown
            if old.columns is None
            else new.unknown
        )
        return ColumnChanges(unknown=why)
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    changed = [
        n
        for n in after
        if n in before
        and (before[n].expression, before[n].sources) != (after[n].expression, after[n].sources)
    ]
    return ColumnChanges(
        added=[n for n in after if n not in before],
        removed=[n for n in before if n not in after],
        changed=changed,
        unchanged=[n for n in after if n in before and n not in changed],
    )
