"""What `headwater lineage`, `history` and `impact` show: the dataset-level graph from the
definitions, a partition's history from the scheduler's and the lineage-indexer's facts, and
their rendering (trees and tables bounded for thousands of partitions)."""

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from headwater.contracts import InputDefinition
from headwater.core.mappings import Mapping

CHILDREN_SHOWN = 20  # children of one node in a tree before "... N more"


def mapping_label(inp: dict[str, Any]) -> str:
    """`identity`, `all`, `window 7`, `rollup month`, `rollup REGEX`; per dimension
    `date: window 7, origin: identity`."""
    return Mapping.of(InputDefinition.model_validate(inp)).label()


def dataset_graph(defs: dict[str, dict[str, Any]], dataset: str, depth: int) -> dict[str, Any]:
    """The datasets `dataset` reads and those reading it, to `depth` steps, from the applied
    definitions (spec-registry's `datasets`): `datasets` (name -> kind, code SHA) and, per
    direction, edges {input, output, mapping, depth}, each edge once, at the step it is first
    reached."""
    edges = [
        {"input": i["dataset"], "output": name, "mapping": mapping_label(i)}
        for name, d in sorted(defs.items())
        for i in d["definition"].get("inputs", [])
    ]
    out: dict[str, Any] = {"dataset": dataset}
    reached = {dataset}
    for direction, near, far in (
        ("upstream", "output", "input"),
        ("downstream", "input", "output"),
    ):
        walked: list[dict[str, Any]] = []
        seen = {dataset}
        frontier = [dataset]
        for step in range(1, depth + 1):
            nxt: list[str] = []
            for e in edges:
                if e[near] in frontier:
                    walked.append({**e, "depth": step})
                    if e[far] not in seen:
                        seen.add(e[far])
                        nxt.append(e[far])
            frontier = nxt
            if not frontier:
                break
        out[direction] = walked
        reached |= seen
    out["datasets"] = {
        n: {"kind": defs[n]["kind"], "code_sha": defs[n]["code_sha"]} for n in sorted(reached)
    }
    return out


def history_entries(
    dataset: str, partition_key: str, why: dict[str, Any], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """A partition's history: the scheduler's materializations (`why`) and the
    lineage-indexer's events of failures, retractions and code changes, oldest first."""
    entries: list[dict[str, Any]] = []
    for m in why["materializations"]:
        entries.append(
            {
                "kind": "materialized",
                "at": str(m["created_at"]),
                "fingerprint": m["fingerprint"],
                "code_sha": m["code_sha"],
                "data_sha": m["data_sha"],
                "rows": m["rows"],
                "reason": m["reason"],
                "inputs": [
                    {k: i[k] for k in ("dataset", "partition_key", "data_sha")} for i in m["inputs"]
                ],
                "current": bool(m["current"]),
            }
        )
    for e in events:
        payload = e["payload"]
        body = json.loads(payload) if isinstance(payload, str) else payload
        at = str(e["received_at"])
        if e["kind"] == "code_changed":
            entries.append(
                {
                    "kind": "code_changed",
                    "at": at,
                    "code_sha": None if body.get("removed") else body["dataset"]["code_sha"],
                    "previous_code_sha": body.get("previous_code_sha"),
                    "removed": bool(body.get("removed")),
                }
            )
        elif e["kind"] == "task_failed":
            entries.append(
                {
                    "kind": "failed",
                    "at": at,
                    "fingerprint": body["fingerprint"],
                    "code_sha": body.get("code_sha"),
                    "error": body["error"],
                    "attempts": body.get("attempt"),
                    "inputs": [
                        {k: i[k] for k in ("dataset", "partition_key", "data_sha")}
                        for i in body.get("inputs", [])
                    ],
                }
            )
        elif e["kind"] == "partition_retracted":
            entries.append({"kind": "retracted", "at": at, "reason": "its files were deleted"})
    gone = why.get("retracted")
    if gone is not None and gone["inputs"]:  # a derived partition that went away
        entries.append({"kind": "retracted", "at": str(gone["at"]), "reason": gone["reason"]})
    entries.sort(key=lambda x: x["at"])
    p = why["partition"]
    return {
        "dataset": dataset,
        "partition": partition_key,  # the CLI's JSON name for the key
        "state": p["state"],
        "data_sha": p["data_sha"],
        "entries": entries,
    }


def _short(sha: str | None) -> str:
    return (sha or "-")[:12]


def print_history(console: Console, found: dict[str, Any]) -> None:
    out = console.print
    out(
        f"{found['dataset']}/{found['partition']}: {found['state']},"
        f" data {_short(found['data_sha'])}",
        markup=False,
        highlight=False,
    )
    for e in found["entries"]:
        at = e["at"][:19]
        if e["kind"] == "materialized":
            mark = "*" if e["current"] else " "
            inputs = ", ".join(
                f"{i['dataset']}/{i['partition_key']}@{_short(i['data_sha'])[:8]}"
                for i in e["inputs"]
            )
            out(
                f"{mark} {at} materialized data {_short(e['data_sha'])} ({e['rows']} rows)"
                f" by code {_short(e['code_sha'])}, fingerprint {_short(e['fingerprint'])}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            out(f"      why: {e['reason'] or '-'}", markup=False, highlight=False)
            if inputs:
                out(f"      from: {inputs}", markup=False, highlight=False, soft_wrap=True)
        elif e["kind"] == "failed":
            out(
                f"  {at} failed (fingerprint {_short(e['fingerprint'])}, code"
                f" {_short(e['code_sha'])}, {e['attempts']} attempt(s)):"
                f" {e['error'].strip().splitlines()[0] if e['error'].strip() else '-'}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        elif e["kind"] == "code_changed":
            if e["removed"]:
                what = f"removed (code was {_short(e['previous_code_sha'])})"
            elif e["previous_code_sha"] is None:
                what = f"added with code {_short(e['code_sha'])}"
            else:
                what = f"code changed {_short(e['previous_code_sha'])} -> {_short(e['code_sha'])}"
            out(f"  {at} {found['dataset']} {what}", markup=False, highlight=False, soft_wrap=True)
        else:
            out(f"  {at} retracted: {e['reason']}", markup=False, highlight=False)
    if not found["entries"]:
        out("  (no materialization yet)")
    out("(* the current materialization)", style="dim")


def print_graph(console: Console, graph: dict[str, Any]) -> None:
    """The dataset-level lineage as two trees, upstream and downstream."""
    info = graph["datasets"]

    def label(name: str, mapping: str | None) -> str:
        d = info[name]
        via = f" [{mapping}]" if mapping else ""
        return f"{name} ({d['kind']}, code {_short(d['code_sha'])}){via}"

    for direction, near, far in (
        ("upstream", "output", "input"),
        ("downstream", "input", "output"),
    ):
        by_near: dict[str, list[dict[str, Any]]] = {}
        for e in graph[direction]:
            by_near.setdefault(e[near], []).append(e)
        tree = Tree(Text(f"{direction} of ", style="bold") + Text(label(graph["dataset"], None)))
        _grow(tree, graph["dataset"], by_near, far, label, set())
        console.print(tree, highlight=False)


def _grow(
    node: Tree,
    name: str,
    by_near: dict[str, list[dict[str, Any]]],
    far: str,
    label: Any,
    path: set[str],
) -> None:
    for e in by_near.get(name, []):
        child = node.add(Text(label(e[far], e["mapping"])))
        if e[far] not in path:
            _grow(child, e[far], by_near, far, label, path | {name})


def print_partition_lineage(
    console: Console, result: dict[str, Any], *, history: bool, depth: int
) -> None:
    """A partition's lineage as two trees (upstream: what it is made from; downstream: what
    is made from it), each node with its data SHA and the code SHA that made it. A node
    reached twice is expanded once; past CHILDREN_SHOWN children a node says how many more,
    per dataset."""
    root = (result["dataset"], result["partition"])
    data = code = None
    for e in result["upstream"]:
        if (e["output_dataset"], e["output_key"]) == root:
            data, code = e["output_data_sha"], e["code_sha"]
    for e in result["downstream"]:
        if (e["input_dataset"], e["input_key"]) == root:
            data = data or e["input_data_sha"]
    said = f"{root[0]}/{root[1]}" + (f"  data {_short(data)}" if data else "")
    said += f"  code {_short(code)}" if code else ""
    for direction, near, far in (
        ("upstream", "output", "input"),
        ("downstream", "input", "output"),
    ):
        by_near: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in result[direction]:
            by_near.setdefault((e[f"{near}_dataset"], e[f"{near}_key"]), []).append(e)
        tree = Tree(Text(f"{direction} of ", style="bold") + Text(said))
        expanded: set[tuple[str, str]] = {root}
        _grow_partitions(tree, root, by_near, far, expanded, history, 1, depth)
        if not result[direction]:
            tree.add(Text("(none)"))
        console.print(tree, highlight=False)
        hidden = result["not_shown"][direction]
        if hidden:
            console.print(f"  ({hidden} edge(s) of earlier materializations not shown: --all)")


def _node_label(e: dict[str, Any], far: str, history: bool) -> str:
    name = f"{e[f'{far}_dataset']}/{e[f'{far}_key']}"
    data = e[f"{far}_data_sha"]
    # The code SHA that made a node is on the edge into it: an output's edge when going
    # downstream; going upstream the input's own code SHA is on its own edges (not here).
    code = f"  code {_short(e['code_sha'])}" if far == "output" else ""
    mark = ("  current" if e["current"] else "  history") if history else ""
    return name + f"  data {_short(data)}" + code + mark


def _grow_partitions(
    node: Tree,
    at: tuple[str, str],
    by_near: dict[tuple[str, str], list[dict[str, Any]]],
    far: str,
    expanded: set[tuple[str, str]],
    history: bool,
    step: int,
    depth: int,
) -> None:
    if step > depth:
        return
    children = sorted(by_near.get(at, []), key=lambda e: (e[f"{far}_dataset"], e[f"{far}_key"]))
    for e in children[:CHILDREN_SHOWN]:
        target = (e[f"{far}_dataset"], e[f"{far}_key"])
        label = _node_label(e, far, history)
        if far == "input":  # upstream: the code that made the input is on its own edges
            made = by_near.get(target)
            if made:
                label += f"  code {_short(made[0]['code_sha'])}"
        if target in expanded and by_near.get(target):
            node.add(Text(label + "  (see above)"))
            continue
        child = node.add(Text(label))
        expanded.add(target)
        _grow_partitions(child, target, by_near, far, expanded, history, step + 1, depth)
    rest = children[CHILDREN_SHOWN:]
    if rest:
        per: dict[str, int] = {}
        for e in rest:
            per[e[f"{far}_dataset"]] = per.get(e[f"{far}_dataset"], 0) + 1
        node.add(Text(f"... {len(rest)} more: " + ", ".join(f"{n} of {d}" for d, n in per.items())))


def print_impact(console: Console, found: dict[str, Any]) -> None:
    what = found["dataset"] + (f"/{found['partition']}" if found["partition"] else "")
    scope = "" if found["partition"] else " (every partition of it)"
    table = Table(title=f"if {what} changed{scope}")
    for col in ("dataset", "kind", "would run", "partitions"):
        table.add_column(col)
    for d in found["datasets"]:
        keys: list[str] = d["partitions"]
        shown = ", ".join(keys)
        if d["count"] > len(keys):
            shown += f", ... ({d['count'] - len(keys)} more)"
        table.add_row(d["dataset"], d["kind"], str(d["count"]), shown)
    console.print(table)
    console.print(
        f"{found['total']} partition(s) in all; past {found['dataset']} an upper bound"
        " (a recomputation that gives the same data stops there: early cutoff)",
        highlight=False,
    )


def print_columns(console: Console, found: dict[str, Any]) -> None:
    """A dataset's column lineage: a row per output column with the input columns it comes
    from and what could not be resolved."""
    name = found["dataset"]
    if found["columns"] is None:
        console.print(f"{name}: columns unknown: {found['unknown']}", markup=False)
        return
    table = Table(title=f"columns of {name} ({found['kind']})")
    for col in ("column", "from", "unresolved"):
        table.add_column(col, overflow="fold")
    for c in found["columns"]:
        sources = ", ".join(f"{s['dataset']}.{s['column']}" for s in c["sources"])
        if found["kind"] == "source":
            sources = "(declared)"
        table.add_row(
            Text(c["name"]),
            Text(sources or "(no input column)"),
            Text(c["unresolved"] or ""),
        )
    console.print(table)


def print_column_changes(console: Console, changes: list[dict[str, Any]]) -> None:
    """Which output columns each change touches (`plan`)."""
    for c in changes:
        touched = c.get("columns")
        if touched is None:
            continue
        if touched["unknown"]:
            console.print(
                f"  {c['dataset']}: columns not compared: {touched['unknown']}",
                markup=False,
                highlight=False,
            )
            continue
        said = [
            f"{what} {', '.join(touched[what])}"
            for what in ("changed", "added", "removed")
            if touched[what]
        ]
        console.print(
            f"  {c['dataset']}: columns " + ("; ".join(said) if said else "unchanged"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
