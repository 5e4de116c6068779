"""scheduler: the reconciler. Given the partitions to look at (the work), it decides each with
`reconcile.transition` over stored facts and writes what follows in bulk: rows, tasks (sent
through the outbox), cancellations; then looks at what reads the partitions that changed."""

import logging
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import asyncpg
from nats.js.kv import KeyValue
from opentelemetry import baggage
from opentelemetry.context import Context

from headwater.contracts import (
    DatasetDefinition,
    PartitionState,
    Subjects,
    TaskRequested,
    TaskState,
)
from headwater.core import reconcile
from headwater.core.reconcile import Desired, PartitionFact
from headwater.runtime.outbox import OutboxItem
from headwater.runtime.service import Resources
from headwater.runtime.telemetry import REASON
from headwater.services.scheduler import store

_log = logging.getLogger(__name__)
Work = dict[str, set[str] | None]  # dataset -> output keys to look at (None: all)
PROD = store.PROD
# A settling partition whose inputs keep changing still runs this many settle delays after
# the first change.
_SETTLE_CAP = 4
# Why a task runs travels to the executor as W3C baggage (`headwater.reason`), cut to this
# many characters (baggage is bounded; a rollup's reason can name a month of inputs).
REASON_CHARS = 512
# Why a request other than a first one is made (a first one's reason is `_reason`'s).
_AGAIN = {
    "again": "computed again: retried after an error, or interrupted by an input recomputed",
    "repair": "computed again: its stored output was missing or damaged",
    "revive": "asked for again after it was cancelled",
}


def merge(work: Work, more: Work) -> None:
    """Add `more` to `work` (None, every partition, absorbs a set)."""
    for name, keys in more.items():
        if name not in work:
            work[name] = None if keys is None else set(keys)
        elif keys is None:
            work[name] = None
        elif (known := work[name]) is not None:
            known |= keys  # in place: merging many small sets stays linear


@dataclass
class Reconciler:
    res: Resources
    subjects: Subjects
    _cancels: KeyValue | None = field(default=None, repr=False)
    _causes: dict[tuple[str, str | None], Context] = field(default_factory=dict, repr=False)
    # Tasks requested by the current batch (dataset, kind of request): counted once committed.
    requested: Counter[tuple[str, str]] = field(default_factory=Counter, repr=False)
    cancel_pending: bool = True  # marks to write: look once at start-up
    # Environments (docs/architecture.md, "Environments"), per batch: work to do in one
    # environment, in every one, and partitions whose rows changed (in prod: every
    # environment that sees them follows; elsewhere: what reads them in it).
    _env_work: dict[str, Work] = field(default_factory=dict, repr=False)
    _every_env: Work = field(default_factory=dict, repr=False)
    _changed: dict[str, Work] = field(default_factory=dict, repr=False)

    def begin(self) -> None:
        """A new batch (or command) starts: what it publishes continues its own traces."""
        self._causes = {}
        self.requested = Counter()
        self._env_work, self._every_env, self._changed = {}, {}, {}

    def in_env(self, env: str, work: Work) -> None:
        """Work to do in environment `env` (not prod) once prod's is done."""
        merge(self._env_work.setdefault(env, {}), work)

    def in_every_env(self, work: Work) -> None:
        """Work to do in every environment other than prod (a result any may wait for)."""
        merge(self._every_env, work)

    def changed(self, env: str, dataset: str, keys: set[str]) -> None:
        """Rows of `env` changed outside the reconcile (a landing, a failure)."""
        merge(self._changed.setdefault(env, {}), {dataset: set(keys)})

    def count_requested(self) -> None:
        """Count the tasks the committed batch requested (its metrics)."""
        for (dataset, kind), n in self.requested.items():
            self.res.metrics.requested(dataset, kind, n)
        self.requested = Counter()

    # Which event of a batch caused the work on a partition (dataset, key; key None: every
    # partition of the dataset), so what it publishes continues that event's trace.
    def caused(self, work: Work, trace: Context) -> None:
        for name, keys in work.items():
            for key in keys if keys is not None else [None]:
                self._causes.setdefault((name, key), trace)

    def cause_of(self, dataset: str, key: str) -> Context | None:
        return self._causes.get((dataset, key)) or self._causes.get((dataset, None))

    # --- cancellation -------------------------------------------------------------------
    # A task no longer wanted is `cancelled` in the same transaction that stops wanting it;
    # executors learn it from a mark (fingerprint -> reason) in the cancels bucket, written
    # after that commit, and drop the task before it runs or kill it while it runs. Asking
    # for a cancelled fingerprint again (a revert) deletes the mark before the task is sent.
    async def cancel(
        self, conn: asyncpg.Connection, cancels: list[tuple[str, str]], env: str = PROD
    ) -> None:
        """Cancel the tasks named ((fingerprint, reason) pairs) if still requested and no
        environment other than `env` waits for them."""
        found = [(fp, f"cancelled: {why}") for fp, why in cancels]
        if await store.cancel_tasks(conn, found, env):
            self.cancel_pending = True

    async def write_cancels(self) -> None:
        """Write the marks of cancelled tasks, under the reconciler's lock: a revert that asks
        for one of them again cannot slip between reading and writing its mark."""
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            pending = await store.pending_cancels(conn)
            kv = await self._cancels_bucket()
            for fingerprint, reason in pending:
                await kv.put(fingerprint, reason.encode())
                _log.info("task %s %s", fingerprint[:12], reason)
            await store.cancels_written(conn, [fp for fp, _ in pending])
        self.cancel_pending = False

    async def uncancel(self, fingerprint: str) -> None:
        await (await self._cancels_bucket()).delete(fingerprint)

    async def _cancels_bucket(self) -> KeyValue:
        if self._cancels is None:
            js = self.res.broker.connection.jetstream()
            self._cancels = await js.key_value(self.subjects.cancels_bucket)
        return self._cancels

    @property
    def pending(self) -> bool:
        """Whether `run` has anything to do besides the work it is given: another
        environment's work, or prod's changes for the other environments to see."""
        return bool(self._env_work or self._every_env or self._changed)

    async def run(self, conn: asyncpg.Connection, work: Work) -> None:
        """Decide and write the partitions `work` names, then those reading what changed;
        then the same in every other environment, for what changed in prod that it sees and
        the work given to it. Its caller opens the span, "scheduler reconcile" (its trigger,
        what it requested)."""
        if work:
            await self._run(conn, work)
        if self.pending:
            await self._environments(conn)

    async def _environments(self, conn: asyncpg.Connection) -> None:
        """Reconcile each environment other than prod over what concerns it: prod's rows that
        changed (it sees them where it has none of its own: its partitions there, and what
        reads them in it, are decided again), its own work, and the work for every one. A
        landing or a result fans out to the environments (a handful), so an event's cost is
        its cost in prod times the environments, not the partitions held."""
        changed = self._changed.pop(PROD, {})
        everyone, self._every_env = self._every_env, {}
        for env in await store.envs(conn):
            work: Work = {}
            merge(work, self._env_work.pop(env, {}))
            merge(work, everyone)
            defs = await store.definitions(conn, env)
            mine = self._changed.pop(env, {})
            for name, keys in [*changed.items(), *mine.items()]:
                assert keys is not None
                d = defs.get(name)
                if d is not None and d.kind != "source" and name in changed:
                    merge(work, {name: set(keys)})
                merge(work, await self.downstream_of(conn, name, keys, env))
            if work:
                await self._run(conn, work, env)
        self._env_work, self._changed = {}, {}

    async def _run(self, conn: asyncpg.Connection, work: Work, env: str = PROD) -> None:
        defs = await store.definitions(conn, env)
        for d in reconcile.topological(defs.values()):
            if d.name not in work or d.kind == "source":
                continue
            keys = work.pop(d.name)
            stored: dict[str, reconcile.Row] | None = None
            if keys is None:  # every partition: a code change, or the reconcile timer
                facts = await store.facts(conn, [*(i.dataset for i in d.inputs), d.name], env)
                stored = await store.rows(conn, d.name, env=env)
                decided = self._unsettled(d, stored, facts)
            else:  # only what these keys read: the cost does not grow with what is held
                facts = await store.scoped_facts(conn, reconcile.scopes(d, keys), env)
                index = reconcile.index_of(facts, [i.dataset for i in d.inputs])
                decided = reconcile.decide_keys(d, keys, facts, index)
            changed = await self._settle(conn, d, decided, facts, stored, env)
            if not changed:
                continue
            for key, more in (await self._downstream(conn, d.name, changed, env)).items():
                if (cause := self.cause_of(d.name, key)) is not None:
                    self.caused(more, cause)
                merge(work, more)

    @staticmethod
    def _unsettled(
        d: DatasetDefinition,
        stored: dict[str, reconcile.Row],
        facts: dict[str, dict[str, PartitionFact]],
    ) -> dict[str, reconcile.Decision | None]:
        """Of every partition of `d`, those whose stored state may disagree with today's
        decision, with that decision (None: what it read went away): decided in memory over
        one load (input keys sorted once), so the reconcile timer and a code change touch rows
        only where something is to be done."""
        index = reconcile.index_of(facts, [i.dataset for i in d.inputs])
        keys = set(stored) | reconcile.output_keys(d, facts, some=True)
        out: dict[str, reconcile.Decision | None] = {}
        for key, decision in reconcile.decide_keys(d, keys, facts, index).items():
            row = stored.get(key)
            if row is None or decision is None:
                settled = row is None and decision is None
            elif isinstance(decision, Desired):
                settled = (row.state, row.fingerprint, row.incomplete) == (
                    PartitionState.READY,
                    decision.fingerprint,
                    False,
                )
            else:
                state = PartitionState.BLOCKED if decision.blocked else PartitionState.WAITING
                settled = (row.state, row.incomplete) == (state, decision.incomplete)
            if not settled:
                out[key] = decision
        return out

    async def _settle(
        self,
        conn: asyncpg.Connection,
        d: DatasetDefinition,
        decided: dict[str, reconcile.Decision | None],
        facts: dict[str, dict[str, PartitionFact]],
        stored: dict[str, reconcile.Row] | None = None,
        env: str = PROD,
    ) -> set[str]:
        """Bring the partitions `decided` in line with their decisions (None: no input maps
        to it any more) in a fixed number of statements, whatever their number; returns the
        keys whose readers must look again. Each row's step is `reconcile.transition`."""
        if not decided:
            return set()
        if stored is None:
            stored = await store.rows(conn, d.name, decided.keys(), env)
        asked = {
            dec.fingerprint
            for key, dec in decided.items()
            if isinstance(dec, Desired)
            and (stored.get(key) is None or stored[key].fingerprint != dec.fingerprint)
        }
        made = await store.outputs(conn, asked)
        tasks = await store.tasks(conn, asked - made.keys())
        steps: dict[str, reconcile.Step] = {}
        for key in sorted(decided):
            decision = decided[key]
            fp = decision.fingerprint if isinstance(decision, Desired) else None
            step = reconcile.transition(
                stored.get(key),
                decision,
                made.get(fp) if fp else None,
                tasks.get(fp) if fp else None,
            )
            if step.request is not None and fp is not None:
                tasks[fp] = reconcile.Task(TaskState.REQUESTED)  # asked once, even if read twice
            steps[key] = step
        await self.cancel(conn, [s.cancel for s in steps.values() if s.cancel is not None], env)
        notes: dict[str, str] = {}
        if d.settle_s:
            notes = await self._hold(conn, d, decided.keys(), steps, env)
        gone = [k for k, s in steps.items() if s.row is None and stored.get(k) is not None]
        for key in gone:
            await store.delete_partition(conn, d.name, key, env)
            facts[d.name].pop(key, None)
        written = {
            k: s.row for k, s in steps.items() if s.row is not None and s.row != stored.get(k)
        }
        await store.put_rows(conn, d.name, written, env)
        if env == PROD and (written or gone):  # environments that see these rows follow
            merge(self._changed.setdefault(PROD, {}), {d.name: {*written, *gone}})
        for key, row in written.items():
            facts[d.name][key] = PartitionFact(row.data_sha, row.object_key, row.state)
        requests: dict[str, tuple[reconcile.Request, Desired]] = {}
        for key, step in steps.items():
            decision = decided[key]
            if step.request is not None and isinstance(decision, Desired):
                requests[key] = (step.request, decision)
        await self.request(conn, d, requests, stored, notes, env)
        return {k for k, s in steps.items() if s.changed(stored.get(k))}

    async def _hold(
        self,
        conn: asyncpg.Connection,
        d: DatasetDefinition,
        keys: Collection[str],
        steps: dict[str, reconcile.Step],
        env: str = PROD,
    ) -> dict[str, str]:
        """A dataset with a settle delay: hold each new computation until its inputs have not
        changed for `settle_s` (each change of fingerprint pushes it back, at most to
        `_SETTLE_CAP` times the delay after the first), so inputs changing in quick succession
        run it once. A held step is kept `queued` without its request, saying until when;
        `settle_due` (a timer) reconciles it again once due. Returns, per key asked for now
        after being held, what its task's reason adds (the changes it coalesced)."""
        assert d.settle_s is not None
        settle = timedelta(seconds=d.settle_s)
        known = await store.settling(conn, d.name, keys, env)
        now: datetime = await conn.fetchval("SELECT now()")
        held: dict[str, store.Settling] = {}
        notes: dict[str, str] = {}
        for key, step in steps.items():
            if step.request != "new" or step.row is None:
                continue
            fp = step.row.desired_fingerprint
            assert fp is not None
            was = known.get(key)
            if was is not None and was.fingerprint == fp:
                if was.due_at <= now:  # quiet long enough: asked for now
                    if was.changes > 1:
                        notes[key] = (
                            f"{was.changes} input changes coalesced into one run"
                            f" (settle {d.settle_s:g}s)"
                        )
                    continue
                hold = was
            elif was is None:
                hold = store.Settling(fp, now, now + settle, 1)
            else:
                due = min(now + settle, was.first_at + _SETTLE_CAP * settle)
                hold = store.Settling(fp, was.first_at, due, was.changes + 1)
            held[key] = hold
            steps[key] = replace(
                step,
                row=replace(
                    step.row,
                    reason=f"settling: runs at {hold.due_at:%H:%M:%S} UTC unless its inputs"
                    f" change again ({hold.changes} change(s) so far, settle {d.settle_s:g}s)",
                ),
                request=None,
            )
        await store.put_settling(
            conn, d.name, {k: h for k, h in held.items() if h != known.get(k)}, env
        )
        await store.drop_settling(conn, d.name, known.keys() - held.keys(), env)
        return notes

    async def request(
        self,
        conn: asyncpg.Connection,
        d: DatasetDefinition,
        requests: dict[str, tuple[reconcile.Request, Desired]],
        stored: dict[str, reconcile.Row],
        notes: dict[str, str] | None = None,
        env: str = PROD,
    ) -> None:
        """Record and send the tasks `requests` asks for (key -> what, decision): a first
        request adds its task row with why it is needed (and what `notes` adds for its key);
        any other re-opens it (a new generation)."""
        notes = notes or {}
        if not requests:
            return
        again = {dec.fingerprint for kind, dec in requests.values() if kind != "new"}
        generations = await store.reopen_tasks(conn, again)
        # A first request adds its task row (as does a lost one asked again).
        first = {k: dec for k, (_, dec) in requests.items() if dec.fingerprint not in generations}
        before = {stored[k].fingerprint for k in first if k in stored}
        made_from = await store.made_from(conn, {fp for fp in before if fp is not None})
        reasons = {
            k: _reason(d, dec, made_from, stored.get(k), notes.get(k)) for k, dec in first.items()
        }
        await store.add_tasks(
            conn, d.name, [(dec.fingerprint, k, reasons[k]) for k, dec in first.items()], env
        )
        for fp in {dec.fingerprint for kind, dec in requests.values() if kind == "revive"}:
            await self.uncancel(fp)
        messages = []
        for key, (kind, dec) in sorted(requests.items()):
            attempt = generations.get(dec.fingerprint, 1)
            reason = reasons.get(key) or _AGAIN.get(kind, kind)
            messages.append(self.task(d, key, dec, attempt, reason, repair=kind == "repair"))
            self.requested[(d.name, kind)] += 1
        await self.publish(conn, messages)

    def task(
        self,
        d: DatasetDefinition,
        key: str,
        decision: Desired,
        attempt: int,
        reason: str,
        *,
        resend: bool = False,
        repair: bool = False,
    ) -> OutboxItem:
        task = TaskRequested(
            fingerprint=decision.fingerprint,
            dataset=d,
            partition_key=key,
            inputs=decision.inputs,
            attempt=attempt,
            repair=repair,
        )
        # A retry or a re-send is a new message for JetStream: its own message id, so the
        # duplicate window does not swallow it.
        msg_id = decision.fingerprint if attempt == 1 else f"{decision.fingerprint}:retry{attempt}"
        if resend:
            msg_id = f"{msg_id}:resend:{uuid.uuid4().hex[:8]}"
        # The outbox publishes it in the trace of the event that caused it, with why it runs
        # as baggage (the executor's span says it; the contract is unchanged).
        cause = baggage.set_baggage(
            REASON, reason[:REASON_CHARS], context=self.cause_of(d.name, key)
        )
        return OutboxItem.of(self.subjects, task, msg_id, cause)

    async def publish(self, conn: asyncpg.Connection, items: list[OutboxItem]) -> None:
        assert self.res.outbox is not None
        await self.res.outbox.add_many(conn, items)

    async def _downstream(
        self, conn: asyncpg.Connection, dataset: str, keys: set[str], env: str = PROD
    ) -> dict[str, Work]:
        """Per key of `keys`: the partitions of datasets reading `dataset` that read it (every
        partition, None, of a reader that reads all of `dataset` beside inputs keying it), in
        environment `env`."""
        defs = await store.definitions(conn, env)
        readers = [d for d in defs.values() if any(i.dataset == dataset for i in d.inputs)]
        if not readers:
            return {}
        scope = reconcile.affected_scope(readers, dataset, keys)
        facts = await store.scoped_facts(conn, {dataset: scope}, env)
        index = reconcile.index_of(facts, [dataset])
        whole = {r.name for r in readers if reconcile.read_by_every_partition(r, dataset)}
        return {
            key: {
                reader.name: None
                if reader.name in whole
                else reconcile.affected_outputs(reader, dataset, key, facts, index)
                for reader in readers
            }
            for key in keys
        }

    async def downstream_of(
        self, conn: asyncpg.Connection, dataset: str, keys: set[str], env: str = PROD
    ) -> Work:
        """The partitions of datasets reading `dataset` that read one of `keys` (in `env`)."""
        work: Work = {}
        for more in (await self._downstream(conn, dataset, keys, env)).values():
            merge(work, more)
        return work


def _reason(
    d: DatasetDefinition,
    decision: Desired,
    made_from: dict[str, store.Made],
    row: reconcile.Row | None,
    note: str | None = None,
) -> str:
    """Why this computation is needed: which code or input change since what is current;
    what it coalesced (a queued request it replaces, `note`)."""
    coalesced = [note] if note else []
    wanted = row.desired_fingerprint if row is not None else None
    if (
        row is not None
        and row.state == PartitionState.QUEUED
        and wanted not in (None, decision.fingerprint)
    ):
        coalesced.append(f"replaces request {str(wanted)[:12]} (superseded before its result)")
    previous = made_from.get(row.fingerprint) if row is not None and row.fingerprint else None
    if previous is None:
        return "; ".join(["new partition", *coalesced])
    parts = []
    if previous.code_sha != d.code_sha:
        parts.append(f"code changed {str(previous.code_sha)[:12]} -> {d.code_sha[:12]}")
    old = previous.inputs
    new = {(i.dataset, i.partition_key): i.data_sha for i in decision.inputs}
    for ref in sorted(set(old) | set(new)):
        if old.get(ref) != new.get(ref):
            what = "added" if ref not in old else "removed" if ref not in new else "changed"
            parts.append(f"input {ref[0]}/{ref[1]} {what}")
    return "; ".join([*(parts or ["recomputed"]), *coalesced])
