"""The reference model: a naive evaluator that recomputes a whole pipeline from scratch,
memoised by fingerprint in a plain dictionary. It shares the spec model, the mappings and
the hash functions with Headwater, not the scheduler's logic: what the system ran must be
exactly this oracle's cache misses, and what it holds must equal the oracle's content.

A transform that raises leaves its partition `errored` (the failure is cached by fingerprint,
as the system's task is: the same computation is not dispatched again), and every partition
reading an errored or blocked one is `blocked`, without running."""

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from headwater.contracts.keys import split_dimensions
from headwater.core import hashing
from headwater.core.mappings import UNPARTITIONED_KEY, DimensionalMapping, PartitionMapping
from headwater.core.spec import Pipeline


@dataclass
class Oracle:
    cache: dict[str, tuple[str, pa.Table] | Exception] = field(default_factory=dict)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # (dataset, key, fp)
    # After the last `evaluate`: each derived partition's state (ready, errored, blocked) and
    # the fingerprint it has (ready) or failed (errored).
    states: dict[tuple[str, str], str] = field(default_factory=dict)
    fingerprints: dict[tuple[str, str], str] = field(default_factory=dict)

    def evaluate(
        self, pipeline: Pipeline, sources: dict[str, dict[str, pa.Table]]
    ) -> dict[tuple[str, str], str]:
        """Every partition's data SHA after a from-scratch run (datasets in spec order)."""
        out: dict[str, dict[str, tuple[str, pa.Table]]] = {}
        bad: dict[str, set[str]] = {}  # errored or blocked keys
        self.states, self.fingerprints = {}, {}
        for ds in pipeline.datasets.values():
            bad[ds.name] = set()
            if ds.kind == "source":
                out[ds.name] = {
                    k: (hashing.data_sha(t, ordered=ds.ordered), t)
                    for k, t in sources.get(ds.name, {}).items()
                }
                continue
            keys: set[str] | None = None
            for name, mapping in ds.inputs.items():
                if mapping.partitions_output:
                    mapped = mapping.output_keys(set(out[name]) | bad[name])
                    keys = mapped if keys is None else keys & mapped
            if keys is None:
                keys = {UNPARTITIONED_KEY} if all(out[n] or bad[n] for n in ds.inputs) else set()
            out[ds.name] = {}
            for key in sorted(keys):
                reads = {n: _inputs_for(m, key, set(out[n]) | bad[n]) for n, m in ds.inputs.items()}
                if not all(reads.values()):
                    continue
                if any(k in bad[n] for n, ks in reads.items() for k in ks):
                    bad[ds.name].add(key)
                    self.states[ds.name, key] = "blocked"
                    continue
                fp = hashing.fingerprint(
                    ds.code_sha,
                    [(n, k, out[n][k][0]) for n, ks in reads.items() for k in ks],
                )
                if fp not in self.cache:
                    tables = {n: _concat([out[n][k][1] for k in ks]) for n, ks in reads.items()}
                    try:
                        result = _run(ds.kind, ds.code, ds.function, tables)
                    except Exception as exc:  # the transform failed: errored, cached as such
                        self.cache[fp] = exc
                    else:
                        self.cache[fp] = (hashing.data_sha(result, ordered=ds.ordered), result)
                    self.misses.append((ds.name, key, fp))
                done = self.cache[fp]
                self.fingerprints[ds.name, key] = fp
                if isinstance(done, Exception):
                    bad[ds.name].add(key)
                    self.states[ds.name, key] = "errored"
                    continue
                out[ds.name][key] = done
                self.states[ds.name, key] = "ready"
        return {(d, k): v[0] for d, parts in out.items() for k, v in parts.items()}


def _inputs_for(mapping: PartitionMapping, key: str, keys: set[str]) -> list[str]:
    """What output partition `key` reads. A mapping per dimension is evaluated here from its
    definition, over every key (not through the scheduler's index scopes, which
    `DimensionalMapping.inputs_for` shares): each dimension's value maps to the output's,
    `all` matches any, and a window keeps the n values of its dimension ending at the
    output's among the keys that match on the others."""
    if not isinstance(mapping, DimensionalMapping):
        return mapping.inputs_for(key, keys)
    names = mapping.output_dimensions
    wanted = dict(zip(names, split_dimensions(key, names) or (), strict=False)) if names else {}
    if (names and not wanted) or (not names and key != UNPARTITIONED_KEY):
        return []
    window = [n for n, m in mapping.dims if m.mapping == "window"]
    found = []
    for k in sorted(keys):
        values = split_dimensions(k, mapping.names)
        if values is None:
            continue
        if all(
            m.mapping == "all" or name in window or m.output_key(v) == wanted[name]
            for (name, m), v in zip(mapping.dims, values, strict=True)
        ):
            found.append((dict(zip(mapping.names, values, strict=True)), k))
    if not window:
        return [k for _, k in found]
    (along,) = window
    size = dict(mapping.dims)[along].size or 0
    upto = sorted({v[along] for v, _ in found if v[along] <= wanted[along]})
    if not upto or upto[-1] != wanted[along]:
        return []
    kept = set(upto[-size:])
    return [k for v, k in found if v[along] in kept]


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def _run(kind: str, code: str, function: str | None, tables: dict[str, pa.Table]) -> pa.Table:
    if kind == "sql":
        con = duckdb.connect()
        for name, table in tables.items():
            con.register(name, table)
        result: pa.Table = con.sql(code).to_arrow_table()
        con.close()
        return result
    namespace: dict[str, Any] = {}
    exec(compile(code, "<oracle>", "exec"), namespace)
    assert function is not None
    value: pa.Table = namespace[function](**tables)
    return value


def held_content(status: dict[str, Any]) -> dict[tuple[str, str], str]:
    """What a stack holds, as the oracle's content is written: the data SHA of every ready
    partition (from `status`), by (dataset, key). Convergence is `held_content(status) == content`."""
    return {
        (p["dataset"], p["partition_key"]): p["data_sha"]
        for p in status["partitions"]
        if p["state"] == "ready"
    }


def evaluate_environments(
    oracle: Oracle, pipelines: dict[str, Pipeline], sources: dict[str, dict[str, pa.Table]]
) -> dict[str, dict[tuple[str, str], str]]:
    """Each environment's content after a from-scratch run of its own spec over the same
    sources (environments share prod's sources), with one cache: a fingerprint computed for
    one environment is not computed again for another (they share materializations)."""
    return {env: oracle.evaluate(p, sources) for env, p in sorted(pipelines.items())}
