"""The pipeline spec: a YAML file plus the SQL/Python files it names, validated before
anything runs. Errors name the file, the dataset and the field.

Validation never runs the user's code: SQL is parsed, Python is read as an AST (the function
must be defined at module level); input is bounded by `SpecLimits` (headwater.core.spec_input).

    pipeline: flights
    sources:
      flights: {}
    datasets:
      delays_by_day:
        sql: sql/delays_by_day.sql          # a file beside the YAML, or inline SQL
        inputs:
          flights: identity                 # or {mapping: window, size: 7} / {mapping: rollup, to: month}
      monthly:
        python: transforms.py:monthly       # FILE:FUNCTION over pyarrow Tables
        inputs:
          delays_by_day: {mapping: rollup, to: month}

A source may declare named dimensions (`partitions: {date: daily, origin: [EWR, JFK, LGA]}`,
headwater.core.dimensions); its readers then map each (`inputs: {flights: {dimensions:
{date: {mapping: window, size: 7}, origin: identity}}}`, a dimension left out is identity),
and a derived dataset has the dimensions of its inputs that it does not read whole (`all`).
"""

from typing import Any, Literal

import sqlglot
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlglot import exp

from headwater.contracts import CodeBlob, DatasetDefinition, Dimension
from headwater.contracts.errors import InputError
from headwater.contracts.keys import validate_dataset_name
from headwater.contracts.rpc import PipelineDocument
from headwater.core import formats, hashing
from headwater.core.dimensions import dimensions_text, parse_dimensions
from headwater.core.errors import SpecError
from headwater.core.mappings import DimensionalMapping, Mapping, PartitionMapping
from headwater.core.spec_input import SpecLimits, load_yaml, show, too_big

ENGINE_VERSION = "duckdb-arrow/1"


class DatasetSpec(BaseModel):
    """One dataset of a pipeline, with its code SHA."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["source", "sql", "python"]
    code: str = ""  # SQL text, or the Python module source
    function: str | None = None
    code_file: str | None = None
    inputs: dict[str, PartitionMapping] = {}
    version: str | None = None
    ordered: bool = False
    columns: dict[str, str] | None = None  # a source's declared columns (its data contract)
    code_sha: str
    # Bounds of one run (None: the executor's defaults). Not in the code SHA: no output change.
    timeout_s: float | None = None
    memory_mb: int | None = None
    # Seconds its inputs must stay unchanged before a new computation of a partition is asked
    # for (None: at once). Not in the code SHA: it changes when, not what.
    settle_s: float | None = None
    # Its named partition dimensions (declared by a source, inherited by a derived dataset);
    # None: its keys are plain, as every dataset's were before dimensions.
    dimensions: tuple[Dimension, ...] | None = None

    def definition(self) -> DatasetDefinition:
        """What the scheduler and executors are told of this dataset."""
        return DatasetDefinition(
            name=self.name,
            kind=self.kind,
            code_sha=self.code_sha,
            inputs=tuple(m.definition(n) for n, m in sorted(self.inputs.items())),
            ordered=self.ordered,
            columns=self.columns,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            settle_s=self.settle_s,
            dimensions=self.dimensions,
        )

    def code_blob(self) -> CodeBlob:
        """What executors load by code SHA (a source has no code: not asked of one)."""
        assert self.kind != "source", f"{self.name} is a source: it has no code blob"
        return CodeBlob(kind=self.kind, code=self.code, function=self.function)


class Pipeline(BaseModel):
    """A validated pipeline: datasets in dependency order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    datasets: dict[str, DatasetSpec]


def named_files(file: str, text: str) -> list[tuple[str, str, str]]:
    """The files a spec's text names, relative to it: (path, dataset, field) for each SQL file
    (`sql: x.sql`) and Python module (`python: m.py:function`). Reading them is the caller's
    (headwater.sdk.spec_files): the core does no I/O. The YAML is read within the default
    bounds; spec-registry enforces its own limits on the whole document."""
    raw = _yaml(file, text, SpecLimits())
    datasets = raw.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise SpecError(file, "must be a mapping of dataset name to definition", field="datasets")
    named: list[tuple[str, str, str]] = []
    for name, body in datasets.items():
        if not isinstance(body, dict):
            continue
        for field in ("sql", "python"):
            value = body.get(field)
            if not isinstance(value, str):
                continue
            if field == "sql":
                if not _is_sql_file(value):
                    continue
                ref = value.strip()
            else:
                ref = value.split(":")[0].strip()
            named.append((ref, str(name), field))
    return named


def _yaml(file: str, text: str, limits: SpecLimits) -> dict[str, Any]:
    raw = load_yaml(file, text, limits)
    if not isinstance(raw, dict):
        raise SpecError(file, "must be a mapping with `pipeline`, `sources` and `datasets`")
    return raw


_TOP_FIELDS = {"pipeline", "sources", "datasets"}
_SOURCE_FIELDS = {"ordered", "description", "columns", "partitions"}
_DERIVED_FIELDS = {"sql", "python", "inputs", "version", "ordered", "description"}
_DERIVED_FIELDS |= {"timeout", "memory_mb"}  # the bounds of one run (see DatasetSpec)
_DERIVED_FIELDS |= {"settle"}  # when its runs are asked for (see DatasetSpec)


def parse_pipeline(doc: PipelineDocument, limits: SpecLimits | None = None) -> Pipeline:
    """Validate a spec document completely, within `limits` (default: `SpecLimits()`);
    raise SpecError naming file, dataset and field. Runs none of the document's code."""
    f = doc.file
    limits = limits or SpecLimits()
    _check_sizes(doc, limits)
    raw = _yaml(f, doc.yaml_text, limits)
    unknown = set(raw) - _TOP_FIELDS
    if unknown:
        raise SpecError(
            f, f"unknown top-level field(s) {sorted(unknown)}", field=sorted(unknown)[0]
        )
    name = raw.get("pipeline")
    if not isinstance(name, str) or not name:
        raise SpecError(f, "must name the pipeline (`pipeline: NAME`)", field="pipeline")
    sources = raw.get("sources") or {}
    derived = raw.get("datasets") or {}
    if not isinstance(sources, dict):
        raise SpecError(f, "must be a mapping of source name to options", field="sources")
    if not isinstance(derived, dict):
        raise SpecError(f, "must be a mapping of dataset name to definition", field="datasets")
    if len(sources) + len(derived) > limits.max_datasets:
        raise SpecError(
            f,
            f"declares {len(sources) + len(derived)} sources and datasets, more than the "
            f"{limits.max_datasets} allowed (spec-registry setting HEADWATER_SPEC_MAX_DATASETS)",
            field="datasets",
        )
    _check_files(doc, derived, limits)
    datasets: dict[str, DatasetSpec] = {}
    normalized: dict[str, str] = {}
    for ds_name, body in sources.items():
        ds_name = _check_name(f, ds_name)
        body = body or {}
        if not isinstance(body, dict):
            raise SpecError(f, "must be a mapping", dataset=ds_name)
        _no_unknown(f, ds_name, body, _SOURCE_FIELDS)
        ordered = _bool(f, ds_name, body, "ordered")
        columns = _columns(f, ds_name, body.get("columns"))
        dims = None
        if "partitions" in body:
            try:
                dims = parse_dimensions(body["partitions"])
            except InputError as exc:
                raise SpecError(f, exc.reason, dataset=ds_name, field=exc.field) from exc
        source_code = formats.columns_text(columns) if columns else ""
        if dims is not None:  # declared dimensions are its code too (absent: as before them)
            source_code += "\n" + dimensions_text(dims)
        datasets[ds_name] = DatasetSpec(
            name=ds_name,
            kind="source",
            ordered=ordered,
            columns=columns,
            dimensions=dims,
            code_sha=hashing.code_sha(
                kind="source",
                # Declared columns are the source's code: changing them is a code change.
                normalized_code=source_code,
                inputs=[],
                ordered=ordered,
                version=None,
                engine=ENGINE_VERSION,
            ),
        )
    for ds_name, body in derived.items():
        ds_name = _check_name(f, ds_name)
        if ds_name in datasets:
            raise SpecError(f, "is declared both as a source and a dataset", dataset=ds_name)
        if not isinstance(body, dict):
            raise SpecError(f, "must be a mapping with sql: or python:", dataset=ds_name)
        try:
            datasets[ds_name], normalized[ds_name] = _derived(doc, ds_name, body, limits)
        except RecursionError as exc:  # the parsers recurse: deeply nested SQL or Python
            field = "sql" if "sql" in body else "python"
            raise SpecError(
                f, "code nests too deeply to parse", dataset=ds_name, field=field
            ) from exc
    for ds in datasets.values():
        for input_name in ds.inputs:
            if input_name not in datasets:
                raise SpecError(
                    f,
                    f"{input_name!r} is not a source or dataset of this pipeline",
                    dataset=ds.name,
                    field=f"inputs.{input_name}",
                )
    order = _topological(f, datasets)
    for n in order:
        datasets[n] = _resolve_dimensions(f, datasets[n], datasets, normalized.get(n, ""))
    return Pipeline(name=name, datasets={n: datasets[n] for n in order})


def _resolve_dimensions(
    file: str, ds: DatasetSpec, datasets: dict[str, DatasetSpec], normalized: str
) -> DatasetSpec:
    """A derived dataset reading inputs with dimensions: each input's mapping per dimension
    (in the input's order, identity where none is given), checked, its own dimensions, and
    its code SHA over the mappings so resolved. A dataset none of whose inputs has
    dimensions is returned as it is (its code SHA as it always was)."""
    if ds.kind == "source" or not any(
        datasets[n].dimensions is not None or isinstance(m, DimensionalMapping)
        for n, m in ds.inputs.items()
    ):
        return ds
    inputs: dict[str, PartitionMapping] = {}
    keyed: dict[str, tuple[str, ...] | None] = {}  # keying input -> the output's dimensions
    for input_name, m in ds.inputs.items():
        field = f"inputs.{input_name}"
        dims = datasets[input_name].dimensions
        names = tuple(d.name for d in dims) if dims is not None else None
        if names is None:
            if isinstance(m, DimensionalMapping):
                raise SpecError(
                    file,
                    f"{input_name!r} has no dimensions (its sources declare no `partitions`)",
                    dataset=ds.name,
                    field=f"{field}.dimensions",
                )
            inputs[input_name] = m
            if m.partitions_output:
                keyed[input_name] = None
            continue
        if isinstance(m, Mapping):
            if m.mapping in ("identity", "all"):  # the same on every dimension: the whole key
                inputs[input_name] = m
                if m.mapping == "identity":
                    keyed[input_name] = names
                continue
            if len(names) > 1:
                raise SpecError(
                    file,
                    f"{input_name!r} has dimensions {list(names)}: a {m.mapping} names the one it "
                    f"applies to ({{dimensions: {{{names[0]}: {{mapping: {m.mapping}, ...}}}}}})",
                    dataset=ds.name,
                    field=field,
                )
            m = DimensionalMapping(dims=((names[0], m),))
        given = dict(m.dims)
        for dim in given:
            if dim not in names:
                raise SpecError(
                    file,
                    f"{input_name!r} has no dimension {dim!r} (it has {list(names)})",
                    dataset=ds.name,
                    field=f"{field}.dimensions.{dim}",
                )
        resolved = DimensionalMapping(dims=tuple((n, given.get(n, Mapping())) for n in names))
        windows = [n for n, dm in resolved.dims if dm.mapping == "window"]
        if windows and any(dm.mapping != "identity" for n, dm in resolved.dims if n != windows[0]):
            raise SpecError(
                file,
                f"a window along {windows[0]!r} needs identity on every other dimension "
                "(roll up or read whole in a dataset of its own first)",
                dataset=ds.name,
                field=f"{field}.dimensions.{windows[0]}",
            )
        if all(dm.mapping == "all" for _, dm in resolved.dims):
            inputs[input_name] = Mapping(mapping="all")
            continue
        inputs[input_name] = resolved
        keyed[input_name] = resolved.output_dimensions
    if len(set(keyed.values())) > 1:
        shown = ", ".join(
            f"{n}: {list(d) if d else 'plain keys'}" for n, d in sorted(keyed.items())
        )
        raise SpecError(
            file,
            f"inputs that key its partitions must give it the same dimensions ({shown})",
            dataset=ds.name,
            field="inputs",
        )
    out_names = next(iter(keyed.values()), None)
    code_sha = hashing.code_sha(
        kind=ds.kind,
        normalized_code=normalized,
        inputs=[(n, m.mapping, m.canonical()) for n, m in inputs.items()],
        ordered=ds.ordered,
        version=ds.version,
        engine=ENGINE_VERSION,
    )
    dimensions = tuple(Dimension(name=n) for n in out_names) if out_names else None
    return ds.model_copy(update={"inputs": inputs, "dimensions": dimensions, "code_sha": code_sha})


def _check_sizes(doc: PipelineDocument, limits: SpecLimits) -> None:
    size = len(doc.yaml_text.encode())
    if size > limits.max_spec_bytes:
        raise SpecError(doc.file, too_big("the spec", size, "max_spec_bytes", limits))


def _check_files(doc: PipelineDocument, derived: dict[Any, Any], limits: SpecLimits) -> None:
    """Every file sent is within the code size limit; the error names the dataset using it."""
    for ref, text in sorted(doc.files.items()):
        size = len(text.encode())
        if size <= limits.max_code_bytes:
            continue
        for ds_name, body in derived.items():
            for field in ("sql", "python"):
                value = body.get(field) if isinstance(body, dict) else None
                if isinstance(value, str) and value.split(":")[0].strip() == ref:
                    raise SpecError(
                        doc.file,
                        too_big(repr(ref), size, "max_code_bytes", limits),
                        dataset=str(ds_name),
                        field=field,
                    )
        raise SpecError(
            doc.file, too_big(repr(ref), size, "max_code_bytes", limits), field=f"files.{ref}"
        )


def _columns(file: str, ds: str, value: object) -> dict[str, str] | None:
    """A source's declared columns, `{name: arrow type}`, each type checked."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise SpecError(
            file, "must be a mapping of column name to type", dataset=ds, field="columns"
        )
    out: dict[str, str] = {}
    for name, type_name in value.items():
        if not isinstance(name, str) or not name:
            raise SpecError(
                file, f"column name {show(name)} is not text", dataset=ds, field="columns"
            )
        try:
            out[name] = formats.parse_type(type_name)
        except formats.FormatError as exc:
            raise SpecError(file, str(exc), dataset=ds, field=f"columns.{name}") from exc
    return out


def _check_name(file: str, name: object) -> str:
    """The dataset name as text (YAML reads `2024:` as a number), if it is a valid name."""
    if isinstance(name, bool):
        raise SpecError(file, f"{name!r} is a YAML boolean: quote the name", dataset=str(name))
    try:
        return validate_dataset_name(str(name), "name")
    except InputError as exc:
        raise SpecError(file, exc.reason, dataset=str(name)) from exc


def _no_unknown(file: str, ds: str, body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SpecError(
            file, f"unknown field (allowed: {sorted(allowed)})", dataset=ds, field=unknown[0]
        )


def _bool(file: str, ds: str, body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise SpecError(file, f"must be true or false, not {show(value)}", dataset=ds, field=field)
    return value


def _derived(
    doc: PipelineDocument, name: str, body: dict[str, Any], limits: SpecLimits
) -> tuple[DatasetSpec, str]:
    f = doc.file
    _no_unknown(f, name, body, _DERIVED_FIELDS)
    if ("sql" in body) == ("python" in body):
        raise SpecError(f, "needs exactly one of sql: or python:", dataset=name)
    inputs = _inputs(f, name, body.get("inputs"))
    ordered = _bool(f, name, body, "ordered")
    version = body.get("version")
    if version is not None and not isinstance(version, str | int):
        raise SpecError(f, "must be a string", dataset=name, field="version")
    version = None if version is None else str(version)
    if "sql" in body:
        code, code_file = _sql_text(doc, name, body["sql"])
        if len(code.encode()) > limits.max_code_bytes:
            size = len(code.encode())
            reason = too_big("the SQL", size, "max_code_bytes", limits)
            raise SpecError(f, reason, dataset=name, field="sql")
        try:
            normalized = hashing.normalize_sql(code)
        except hashing.CodeError as exc:
            # A statement sqlglot cannot parse (EXPORT, LOAD, ...) is named if it is known.
            _check_sql_statements(f, name, code, parsed=False)
            raise SpecError(f, str(exc), dataset=name, field="sql") from exc
        _check_sql_statements(f, name, code, parsed=True)
        _check_sql_tables(f, name, code, inputs)
        kind: Literal["sql", "python"] = "sql"
        function = None
    else:
        ref = body["python"]
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise SpecError(f, "must be FILE.py:FUNCTION", dataset=name, field="python")
        code_file, function = (p.strip() for p in ref.split(":"))
        code = doc.files.get(code_file, "")
        if not code:
            raise SpecError(f, f"{code_file!r} is missing or empty", dataset=name, field="python")
        try:
            normalized = hashing.normalize_python(code, function)
        except hashing.CodeError as exc:
            raise SpecError(f, str(exc), dataset=name, field="python") from exc
        kind = "python"
    code_sha = hashing.code_sha(
        kind=kind,
        normalized_code=normalized,
        inputs=[(n, m.mapping, m.canonical()) for n, m in inputs.items()],
        ordered=ordered,
        version=version,
        engine=ENGINE_VERSION,
    )
    spec = DatasetSpec(
        name=name,
        kind=kind,
        code=code,
        function=function,
        code_file=code_file,
        inputs=inputs,
        version=version,
        ordered=ordered,
        code_sha=code_sha,
        timeout_s=_positive(f, name, body, "timeout"),
        memory_mb=_positive(f, name, body, "memory_mb", integer=True),
        settle_s=_positive(f, name, body, "settle"),
    )
    return spec, normalized


def _positive(
    file: str, ds: str, body: dict[str, Any], field: str, *, integer: bool = False
) -> Any:
    """An optional positive number (`timeout` and `settle` in seconds, `memory_mb` a whole
    number)."""
    value = body.get(field)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        what = "a positive whole number" if integer else "a positive number of seconds"
        raise SpecError(file, f"must be {what}, not {value!r}", dataset=ds, field=field)
    return value


def _is_sql_file(value: str) -> bool:
    """`sql:` names a file when it is one line ending in .sql; otherwise it is the SQL."""
    ref = value.strip()
    return ref.lower().endswith(".sql") and "\n" not in ref


def _sql_text(doc: PipelineDocument, name: str, value: object) -> tuple[str, str | None]:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(doc.file, "must be SQL text or a .sql file", dataset=name, field="sql")
    ref = value.strip()
    if _is_sql_file(value):
        if ref not in doc.files:
            raise SpecError(doc.file, f"{ref!r} was not found", dataset=name, field="sql")
        return doc.files[ref], ref
    return value, None


def _inputs(file: str, name: str, raw: object) -> dict[str, PartitionMapping]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(
            file, "must map at least one input dataset to a mapping", dataset=name, field="inputs"
        )
    out: dict[str, PartitionMapping] = {}
    for input_name, spec in raw.items():
        field = f"inputs.{input_name}"
        if isinstance(spec, str):
            spec = {"mapping": spec}
        if not isinstance(spec, dict):
            raise SpecError(
                file, "must be a mapping name or {mapping: ...}", dataset=name, field=field
            )
        params = {str(k): v for k, v in spec.items()}  # a key YAML read as a number is unknown
        if "kind" in params:
            raise SpecError(
                file,
                "unknown field: the mapping is named by `mapping:`",
                dataset=name,
                field=f"{field}.kind",
            )
        if "dimensions" in params:
            out[str(input_name)] = _per_dimension(file, name, field, params)
            continue
        out[str(input_name)] = _mapping(file, name, field, params)
    return out


def _mapping(file: str, name: str, field: str, params: dict[str, Any]) -> Mapping:
    try:
        return Mapping(**params)  # the spec's fields are the model's
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        reason = str(err["msg"]).removeprefix("Value error, ")
        raise SpecError(
            file, reason, dataset=name, field=f"{field}.{loc}" if loc else field
        ) from exc


def _per_dimension(file: str, name: str, field: str, params: dict[str, Any]) -> DimensionalMapping:
    """`{dimensions: {DIM: MAPPING, ...}}`, as written (resolved against the input's
    dimensions once every dataset is known: `_resolve_dimensions`)."""
    dims = params.pop("dimensions")
    if params:
        raise SpecError(
            file,
            "a mapping per dimension is given under `dimensions:` alone",
            dataset=name,
            field=f"{field}.{sorted(params)[0]}",
        )
    if not isinstance(dims, dict) or not dims:
        raise SpecError(
            file,
            "must map dimension names to mappings ({date: {mapping: window, size: 7}, ...})",
            dataset=name,
            field=f"{field}.dimensions",
        )
    out = []
    for dim, spec in dims.items():
        where = f"{field}.dimensions.{dim}"
        if isinstance(spec, str):
            spec = {"mapping": spec}
        if not isinstance(spec, dict) or "dimensions" in spec:
            raise SpecError(
                file, "must be a mapping name or {mapping: ...}", dataset=name, field=where
            )
        out.append((str(dim), _mapping(file, name, where, {str(k): v for k, v in spec.items()})))
    return DimensionalMapping(dims=tuple(out))


# How a query may begin (DuckDB's query forms); anything else is refused by name.
_QUERY_STARTS = frozenset(
    {"SELECT", "WITH", "FROM", "VALUES", "TABLE", "PIVOT", "UNPIVOT", "SUMMARIZE", "DESCRIBE"}
)
# Statements DuckDB has that are not queries, named even where sqlglot cannot parse them.
_NOT_QUERIES = frozenset(
    {
        *("ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMENT", "COMMIT"),
        *("COPY", "CREATE", "DEALLOCATE", "DELETE", "DETACH", "DROP", "EXECUTE", "EXPORT"),
        *("FORCE", "IMPORT", "INSERT", "INSTALL", "LOAD", "MERGE", "PRAGMA", "PREPARE"),
        *("RESET", "ROLLBACK", "SET", "TRUNCATE", "UPDATE", "USE", "VACUUM"),
    }
)
_QUERIES = (exp.Query, exp.Values, exp.Pivot, exp.Summarize, exp.Describe)
_ONE_QUERY = "a transform is one query (SELECT ...) over its inputs"


def _check_sql_statements(file: str, name: str, sql: str, *, parsed: bool) -> None:
    """The SQL is one query: not several statements, nor one that changes the database or
    its settings, or reaches files or extensions (COPY, ATTACH, SET, PRAGMA, INSTALL, LOAD,
    EXPORT, IMPORT, CREATE, ...), which DuckDB would refuse only when the transform runs.
    Read from the tokens, so statements sqlglot cannot parse are named too; of SQL that
    does not `parsed`, only a known statement is named (else its parse error says more)."""
    try:
        tokens = sqlglot.tokenize(sql, read="duckdb")
    except sqlglot.errors.TokenError:
        return  # normalize_sql reports it, with where
    statements: list[str] = []
    starting = True
    for token in tokens:
        if token.token_type == sqlglot.TokenType.SEMICOLON:
            starting = True
        elif starting:
            statements.append(token.text.upper())
            starting = False
    if not parsed:
        statements = [s for s in statements if s in _NOT_QUERIES][:1]
    if len(statements) > 1:
        raise SpecError(
            file,
            f"has {len(statements)} statements ({', '.join(statements)}): {_ONE_QUERY}",
            dataset=name,
            field="sql",
        )
    if statements and statements[0] not in _QUERY_STARTS and statements[0] != "(":
        raise SpecError(
            file, f"{statements[0]} is not allowed: {_ONE_QUERY}", dataset=name, field="sql"
        )


def _check_sql_tables(file: str, name: str, sql: str, inputs: dict[str, PartitionMapping]) -> None:
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:  # already reported by normalize_sql
        raise SpecError(file, f"SQL does not parse: {exc}", dataset=name, field="sql") from exc
    if not isinstance(tree, _QUERIES):  # e.g. WITH ... INSERT
        kind = type(tree).__name__.upper()
        raise SpecError(file, f"{kind} is not allowed: {_ONE_QUERY}", dataset=name, field="sql")
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    by_lower = {i.lower(): i for i in inputs}
    for cte in sorted(ctes):
        if cte.lower() in by_lower:
            raise SpecError(
                file,
                f"WITH {cte} shadows the input dataset {by_lower[cte.lower()]!r}: "
                "name the CTE differently",
                dataset=name,
                field="sql",
            )
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise SpecError(
                file,
                f"reads {table.sql(dialect='duckdb')!r}: a transform reads only its inputs",
                dataset=name,
                field="sql",
            )
        if table.name not in inputs and table.name not in ctes:
            raise SpecError(
                file,
                f"reads table {table.name!r}, which is not one of its inputs {sorted(inputs)}",
                dataset=name,
                field="sql",
            )


def _topological(file: str, datasets: dict[str, DatasetSpec]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " -> ".join([*path[path.index(n) :], n])
            raise SpecError(file, f"inputs form a cycle: {cycle}", dataset=n, field="inputs")
        state[n] = 1
        for i in sorted(datasets[n].inputs):
            visit(i, [*path, n])
        state[n] = 2
        order.append(n)

    for n in sorted(datasets):
        visit(n, [])
    return order
