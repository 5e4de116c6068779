"""scheduler: the read side of `headwater status` and `wait`. Each reply is bounded whatever
the number of partitions held: counts per dataset and state (a GROUP BY), a capped list of
errored partitions, pages of one dataset's partitions in key order (keyset), and the work
still to do (requested tasks, events in the outbox)."""

from dataclasses import dataclass
from typing import Any

from headwater.contracts import DatasetDefinition, PartitionState
from headwater.contracts.errors import InputError
from headwater.contracts.rpc import (
    AffectedDataset,
    AffectedReply,
    AffectedRequest,
    DatasetCounts,
    PartitionListing,
    PartitionsReply,
    PartitionsRequest,
    PendingReply,
    PendingRequest,
    SummaryReply,
    SummaryRequest,
)
from headwater.core import reconcile
from headwater.runtime.service import Resources
from headwater.services.scheduler import store


@dataclass
class StatusQueries:
    res: Resources

    async def summary(self, request: SummaryRequest) -> SummaryReply:
        """Per dataset (in pipeline order, sources first), how many partitions are in each
        state; the first `errored` (default 20) errored partitions with their errors; the
        tasks requested and the events not yet published."""
        limit, env = request.errored, request.env
        async with self.res.pool.acquire() as conn:
            infos = await store.dataset_infos(conn, env)
            counts = await store.state_counts(conn, env)
            defs = await store.definitions(conn, env)
            shown = _in_order(defs, infos, counts)
            errored = await store.errored(conn, shown, limit, env)
            requested = await store.tasks_requested(conn)
        assert self.res.outbox is not None
        outbox = await self.res.outbox.pending(self.res.pool)
        datasets: list[DatasetCounts] = []
        errored_total = 0
        for name in shown:
            found = counts.get(name, {})
            by_state = {s.value: found.get(s.value, 0) for s in store.STATES}
            by_state.update({s: n for s, n in found.items() if s not in by_state})
            errored_total += by_state[PartitionState.ERRORED]
            info = infos.get(name)
            datasets.append(
                DatasetCounts(
                    dataset=name,
                    kind=info.kind if info is not None else None,
                    counts=by_state,
                    total=sum(by_state.values()),
                )
            )
        return SummaryReply(
            datasets=datasets,
            errored=errored,
            errored_total=errored_total,
            tasks_requested=sum(requested.get(name, 0) for name in shown),
            outbox_pending=outbox,
        )

    async def partitions(self, request: PartitionsRequest) -> PartitionsReply:
        """A page of one dataset's partitions in key order: `dataset`; optional `states`
        (a list of states; default every state but retracted), `since` (ISO time with a
        zone: changed at or after it), `after` (the last key of the previous page), `limit`
        (default 50, at most LISTING_MAX), `count` (default true; false: `more` only says
        whether any row follows, 1 or 0, which spares a pass over the dataset when reading
        every page). `more`: how many match after this page; `next`: the key to pass as
        `after` for the next page (None when none match)."""
        dataset, states, since, after = (
            request.dataset,
            request.states,
            request.since,
            request.after,
        )
        limit, count = request.limit, request.count
        env = request.env
        async with self.res.pool.acquire() as conn:
            infos = await store.dataset_infos(conn, env)
            info = infos.get(dataset)
            if info is not None and info.removed:
                raise InputError("dataset", f"{dataset!r} was removed from the pipeline")
            # Not defined: known only if it holds partitions (as `status` lists it then).
            if (
                info is None
                and not (await store.partitions_page(conn, dataset, limit=1, env=env))[0]
            ):
                known = ", ".join(sorted(n for n, i in infos.items() if not i.removed))
                raise InputError("dataset", f"no dataset {dataset!r} (known: {known or '-'})")
            rows, more = await store.partitions_page(
                conn,
                dataset,
                states=states,
                since=since,
                after=after,
                limit=limit,
                count=count,
                env=env,
            )
        return PartitionsReply(
            dataset=dataset,
            partitions=[PartitionListing.model_validate({"dataset": dataset, **r}) for r in rows],
            more=more,
            next=rows[-1]["partition_key"] if rows and more else None,
        )

    async def pending(self, _: PendingRequest) -> PendingReply:
        """The work still to do, from counters that follow the work in flight: per dataset,
        its tasks requested and unanswered; the events committed but not yet published; the
        computations held by `settle:`."""
        requested = await store.tasks_requested(self.res.pool)
        assert self.res.outbox is not None
        return PendingReply(
            tasks_requested=requested,
            outbox_pending=await self.res.outbox.pending(self.res.pool),
            settling=await store.settling_held(self.res.pool),
        )


def _in_order(
    defs: dict[str, DatasetDefinition], infos: dict[str, store.DatasetInfo], counts: dict[str, Any]
) -> list[str]:
    """The datasets to show: defined ones in pipeline order (each after what it reads),
    then any others holding partitions whose dataset was not removed, by name."""
    ordered = [d.name for d in reconcile.topological(defs.values())]
    others = sorted(
        name
        for name in counts
        if name not in defs and (name not in infos or not infos[name].removed)
    )
    return ordered + others


@dataclass
class ImpactQueries:
    """`headwater impact`: what would run if a partition, or a whole dataset, changed."""

    res: Resources

    async def affected(self, request: AffectedRequest) -> AffectedReply:
        """The partitions that would be recomputed if `dataset`/`partition` changed (its
        content, for a source; its code or inputs, for a derived one), or with no `partition`
        every partition of `dataset` (as a code change does), and transitively what reads
        them. Per dataset in pipeline order: `count` and the first `shown` keys (default 20)
        in key order. Downstream of the changed dataset it is an upper bound: a recomputation
        that gives the same data SHA stops there (early cutoff)."""
        dataset, key, shown = request.dataset, request.partition_key, request.shown
        async with self.res.pool.acquire() as conn:
            defs = await store.definitions(conn)
            if dataset not in defs:
                known = ", ".join(sorted(defs)) or "-"
                raise InputError("dataset", f"no dataset {dataset!r} (known: {known})")
            held = await store.rows(conn, dataset, None if key is None else [key])
            if key is not None and key not in held:
                raise InputError("partition", f"{dataset}/{key} is not held")
            changed: dict[str, set[str]] = {dataset: set(held)}
            for d in reconcile.topological(defs.values()):
                if d.name == dataset or d.kind == "source":
                    continue
                outputs: set[str] = set()
                for inp in {i.dataset for i in d.inputs}:
                    keys = changed.get(inp)
                    if not keys:
                        continue
                    if reconcile.read_by_every_partition(d, inp):
                        # Every partition of the reader reads all of it (another input decides
                        # the reader's partitions, as flights_clean's days), as the reconciler
                        # decides what a change reaches.
                        outputs |= set(await store.rows(conn, d.name))
                        continue
                    scope = reconcile.affected_scope([d], inp, keys)
                    facts = await store.scoped_facts(conn, {inp: scope})
                    index = reconcile.index_of(facts, [inp])
                    for k in keys:
                        outputs |= reconcile.affected_outputs(d, inp, k, facts, index)
                if outputs:  # only the partitions that exist run again
                    changed[d.name] = set(await store.rows(conn, d.name, outputs))
        datasets = [
            AffectedDataset(
                dataset=d.name,
                kind=d.kind,
                count=len(changed[d.name]),
                partitions=sorted(changed[d.name])[:shown],
            )
            for d in reconcile.topological(defs.values())
            if changed.get(d.name)
        ]
        return AffectedReply(
            dataset=dataset,
            partition_key=key,
            datasets=datasets,
            total=sum(d.count for d in datasets),
        )
