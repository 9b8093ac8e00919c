"""Which source key holds which document, in which version order: transactional membership records.

Points are per document (the bytes' SHA-256), so two keys holding the same bytes share them. What a key
holds lives in a small table with conditional, all-or-nothing writes: DynamoDB (``TransactWriteItems``,
the template's MembershipTable) in AWS, SQLite (``BEGIN IMMEDIATE``) beside a local store for the CLI. Both
are the same ``MembershipTable`` port: items carry a revision and every write names the revision it read
(0 = must not exist), so a write based on a stale read fails (``Conflict``) and is redone from a fresh read.

    src#<h(uri)> head               {current}: the key's current version record (what the index shows)
    src#<h(uri)> ver#<seq>-<doc>    a version record {uri, sequencer, version_id, document_id, state, lease_until}
    src#<h(uri)> gone#<version_id>  that version was deleted for good: it can never complete or begin again
    doc#<document_id> head          {claims, state, lease_until}: how many version records hold the document

``sequencer`` orders the versions of one key (S3's event sequencer, right-padded with zeros so that string
order is event order); between records of the same sequencer (S3 objects without an event: backfill listings)
the later completion wins. The rules, each one transaction:

- ``begin``: a version record (pending, with a lease) and +1 claim on its document, unless the version is gone
  or the document is being deleted (then it waits for the deletion to finish, or finishes an abandoned one);
- ``complete``: pending → complete and the key's current pointer → it, unless the version is gone (then the
  job gives its claim up) or a newer version is current (then it retires itself);
- a version record is dropped together with -1 claim; a document whose claims reach 0 is marked deleting
  (only while still 0 claims), its pages, page images and converted PDF are purged, then its head goes.

So a document's pages are purged only while no version record of any key holds it, and no version record
can take a hold while a purge runs: deleting one key cannot take pages another key is ingesting. A pending
record of a running job is never dropped by others while its lease runs; the job itself drops it when it
finds itself superseded or its version gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from engine.errors import ConfigError, DocVisionError

State = Literal["pending", "complete", "deleted"]
SEQ_WIDTH = 40
Item = dict[str, Any]


class Conflict(Exception):
    """A conditional write lost a race (the item changed since it was read): read again and retry."""


class MembershipBusy(DocVisionError):
    """The membership records kept changing under this job (or a purge of its document did not end in
    time): a transient condition; the job is retried."""

    code = "membership_busy"


class VersionGone(DocVisionError):
    """This object version was deleted for good while (or before) it was ingested: nothing to index."""

    code = "version_gone"


def sequence_key(sequencer: str) -> str:
    """S3 sequencers compare as hex strings after right-padding the shorter one with zeros."""
    return sequencer.upper().ljust(SEQ_WIDTH, "0")[:SEQ_WIDTH]


def local_sequencer() -> str:
    """For sources without an event sequencer that are newest when ingested (files): the time, as ordered hex."""
    return f"{time.time_ns():020X}"


@dataclass(frozen=True)
class SourceVersion:
    uri: str
    sequencer: str
    version_id: str | None = None

    @property
    def seq(self) -> str:
        return sequence_key(self.sequencer)


@dataclass
class SourceRecord:
    uri: str
    sequencer: str
    version_id: str | None
    document_id: str | None  # None for a deletion
    state: State
    updated_at: float
    lease_until: float = 0.0  # pending records: others leave them alone until then

    @property
    def seq(self) -> str:
        return sequence_key(self.sequencer)

    @property
    def name(self) -> str:
        return f"{self.seq}-{self.document_id or 'deleted'}"


@dataclass(frozen=True)
class Write:
    """Put ``item`` (or delete, when None) at (pk, sk) if the item's revision is ``expect`` (0: absent).
    ``check`` only asserts the revision (a condition on an item the transaction does not change)."""

    pk: str
    sk: str
    item: Item | None
    expect: int
    check: bool = False


class MembershipTable(Protocol):
    def get(self, pk: str, sk: str) -> tuple[Item, int] | None: ...
    def query(self, pk: str, prefix: str) -> list[tuple[str, Item, int]]: ...
    def transact(self, writes: list[Write]) -> None: ...


# ------------------------------------------------------------------------------------------- backends
class SqliteTable:
    """The local table (CLI, tests): one SQLite file; a transaction is BEGIN IMMEDIATE … COMMIT, so writers
    of several processes serialize on the file and every revision check sees the latest write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS items (pk TEXT, sk TEXT, rev INTEGER, body TEXT, PRIMARY KEY (pk, sk))"
            )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def get(self, pk: str, sk: str) -> tuple[Item, int] | None:
        row = self._conn().execute("SELECT body, rev FROM items WHERE pk=? AND sk=?", (pk, sk)).fetchone()
        return (json.loads(row[0]), row[1]) if row else None

    def query(self, pk: str, prefix: str) -> list[tuple[str, Item, int]]:
        rows = (
            self._conn()
            .execute(
                "SELECT sk, body, rev FROM items WHERE pk=? AND substr(sk, 1, ?)=? ORDER BY sk",
                (pk, len(prefix), prefix),
            )
            .fetchall()
        )
        return [(sk, json.loads(body), rev) for sk, body, rev in rows]

    def transact(self, writes: list[Write]) -> None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            for w in writes:
                row = c.execute("SELECT rev FROM items WHERE pk=? AND sk=?", (w.pk, w.sk)).fetchone()
                if (row[0] if row else 0) != w.expect:
                    raise Conflict(f"{w.pk} {w.sk}")
            for w in writes:
                if w.check:
                    continue
                if w.item is None:
                    c.execute("DELETE FROM items WHERE pk=? AND sk=?", (w.pk, w.sk))
                else:
                    c.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)",
                              (w.pk, w.sk, w.expect + 1, json.dumps(w.item)))  # fmt: skip
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise


class DynamoTable:
    """The template's MembershipTable (pk, sk strings): consistent reads, TransactWriteItems with
    ``attribute_not_exists(pk)`` / ``rev = :rev`` conditions."""

    def __init__(self, table_name: str, client: Any = None) -> None:
        import boto3

        self.name = table_name
        self.client = client or boto3.client("dynamodb")

    def get(self, pk: str, sk: str) -> tuple[Item, int] | None:
        out = self.client.get_item(TableName=self.name, Key=self._key(pk, sk), ConsistentRead=True).get(
            "Item"
        )
        return (json.loads(out["body"]["S"]), int(out["rev"]["N"])) if out else None

    def query(self, pk: str, prefix: str) -> list[tuple[str, Item, int]]:
        rows: list[tuple[str, Item, int]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":p": {"S": prefix}},
        }  # fmt: skip
        while True:
            page = self.client.query(**kwargs)
            rows += [
                (i["sk"]["S"], json.loads(i["body"]["S"]), int(i["rev"]["N"])) for i in page.get("Items", [])
            ]
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _key(pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    def transact(self, writes: list[Write]) -> None:
        from botocore.exceptions import ClientError

        items = []
        for w in writes:
            cond: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(pk)"}
                if w.expect == 0
                else {
                    "ConditionExpression": "rev = :rev",
                    "ExpressionAttributeValues": {":rev": {"N": str(w.expect)}},
                }
            )
            if w.check:
                items.append(
                    {"ConditionCheck": {"TableName": self.name, "Key": self._key(w.pk, w.sk), **cond}}
                )
            elif w.item is None:
                items.append({"Delete": {"TableName": self.name, "Key": self._key(w.pk, w.sk), **cond}})
            else:
                item = {
                    **self._key(w.pk, w.sk),
                    "rev": {"N": str(w.expect + 1)},
                    "body": {"S": json.dumps(w.item)},
                }
                items.append({"Put": {"TableName": self.name, "Item": item, **cond}})
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            # a failed condition, or another transaction on the same items in flight: both mean "read again"
            if exc.response.get("Error", {}).get("Code") in (
                "TransactionCanceledException",
                "ConditionalCheckFailedException",
            ):
                raise Conflict(str(exc)) from exc
            raise


def open_table(settings: Any, store: Any) -> MembershipTable:
    """DynamoDB when a membership table is configured; else SQLite beside a local store (the CLI)."""
    if getattr(settings, "membership_table", None):
        return DynamoTable(settings.membership_table)
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        return SqliteTable(
            root.parent / f"{root.name}.membership.sqlite3"
        )  # beside it: the store holds pages only
    raise ConfigError(
        f"the store {getattr(store, 'uri', store)!r} is not a local folder, so membership needs a DynamoDB "
        "table: set DOCVISION_MEMBERSHIP_TABLE (the template's MembershipTable)"
    )


def _h(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:32]


PurgeFn = Callable[[str], None]  # delete a document's points, page images and converted PDF


class Membership:
    """The membership rules over one table. ``purge`` deletes a document no version record holds any more."""

    def __init__(
        self, table: MembershipTable, purge: PurgeFn, *, lease_s: float = 3600.0, purge_lease_s: float = 300.0
    ) -> None:
        self.table = table
        self.purge = purge
        self.lease_s = lease_s  # a pending record outlives any one invocation (15 min) with room to spare
        self.purge_lease_s = purge_lease_s

    # ------------------------------------------------------------------------------------------ reads
    def records(self, uri: str) -> list[SourceRecord]:
        return [r for r, _ in self._records(uri)]

    def _records(self, uri: str) -> list[tuple[SourceRecord, int]]:
        return [(SourceRecord(**item), rev) for _, item, rev in self.table.query(f"src#{_h(uri)}", "ver#")]

    def _head(self, uri: str) -> tuple[Item, int]:
        found = self.table.get(f"src#{_h(uri)}", "head")
        return found if found else ({"current": None}, 0)

    def current(self, uri: str) -> SourceRecord | None:
        """The key's current completed version or deletion (what the index shows for it)."""
        name = self._head(uri)[0].get("current")
        found = self.table.get(f"src#{_h(uri)}", f"ver#{name}") if name else None
        return SourceRecord(**found[0]) if found else None

    def superseded_by(self, v: SourceVersion) -> SourceRecord | None:
        """A completed version or deletion of the same key newer than ``v``, if any."""
        cur = self.current(v.uri)
        return cur if cur is not None and cur.seq > v.seq else None

    def gone(self, uri: str, version_id: str | None) -> bool:
        return bool(version_id) and self.table.get(f"src#{_h(uri)}", f"gone#{version_id}") is not None

    def claims(self, document_id: str) -> int:
        found = self.table.get(f"doc#{document_id}", "head")
        return int(found[0]["claims"]) if found else 0

    def documents_of(self, uri: str) -> set[str]:
        return {r.document_id for r in self.records(uri) if r.document_id}

    # ----------------------------------------------------------------------------------------- writes
    def begin(self, v: SourceVersion, document_id: str, *, wait_s: float = 60.0) -> None:
        """Before any page of ``document_id`` is written for this version: the pending record and its claim.
        Raises VersionGone if the version was deleted for good; waits while the document is being purged."""
        until = time.monotonic() + wait_s
        pk = f"src#{_h(v.uri)}"
        rec = SourceRecord(v.uri, v.sequencer, v.version_id, document_id, "pending", time.time())
        for attempt in _attempts():
            if self.gone(v.uri, v.version_id):
                raise VersionGone("this object version was deleted; nothing to ingest", document=v.uri)
            rec.updated_at, rec.lease_until = time.time(), time.time() + self.lease_s
            mine = self.table.get(pk, f"ver#{rec.name}")
            try:
                if mine is not None:  # a continuation or replay of this version: renew the lease
                    if mine[0]["state"] == "pending":
                        self.table.transact([Write(pk, f"ver#{rec.name}", asdict(rec), mine[1])])
                    return
                doc = self.table.get(f"doc#{document_id}", "head")
                if doc is not None and doc[0]["state"] == "deleting":
                    if doc[0]["lease_until"] > time.time():  # a purge is running: wait for it to end
                        if time.monotonic() > until:
                            raise MembershipBusy("the document is being deleted; retry", document=document_id)
                        time.sleep(0.05)
                        continue
                    self._purge(document_id, doc)  # its purger died: finish the purge, then claim afresh
                    continue
                claims = int(doc[0]["claims"]) if doc else 0
                writes = [
                    Write(pk, f"ver#{rec.name}", asdict(rec), 0),
                    Write(f"doc#{document_id}", "head", {"claims": claims + 1, "state": "live", "lease_until": 0.0},
                          doc[1] if doc else 0),
                ]  # fmt: skip
                if v.version_id:
                    writes.append(Write(pk, f"gone#{v.version_id}", None, 0, check=True))
                self.table.transact(writes)
                return
            except Conflict:
                attempt()

    def complete(self, v: SourceVersion, document_id: str) -> tuple[bool, list[str]]:
        """This version is completely stored. Returns (is it the key's current version now, documents purged
        because no version record holds them any more). A version that is gone or superseded gives its claim
        up (its own pages go if nobody else holds them)."""
        pk = f"src#{_h(v.uri)}"
        name = SourceRecord(v.uri, v.sequencer, v.version_id, document_id, "pending", 0.0).name
        for attempt in _attempts():
            mine = self.table.get(pk, f"ver#{name}")
            if mine is None or self.gone(v.uri, v.version_id):
                # deleted for good meanwhile (or our expired record was retired): give the claim up
                return False, (
                    self._drop_all([(SourceRecord(**mine[0]), mine[1])])
                    if mine
                    else self._collect(document_id)
                )
            head, head_rev = self._head(v.uri)
            cur = self.current(v.uri)
            rec = SourceRecord(**mine[0])
            if cur is not None and cur.seq > rec.seq:  # a newer version (or a deletion) is current
                return False, self._drop_all([(rec, mine[1])])
            rec.state, rec.updated_at = "complete", time.time()
            writes = [
                Write(pk, f"ver#{name}", asdict(rec), mine[1]),
                Write(pk, "head", {**head, "current": name}, head_rev),
            ]
            if v.version_id:
                writes.append(Write(pk, f"gone#{v.version_id}", None, 0, check=True))
            try:
                self.table.transact(writes)
            except Conflict:
                attempt()
                continue
            return True, self._settle(v.uri)
        raise AssertionError("unreachable")

    def remove(self, v: SourceVersion) -> list[str]:
        """The key was deleted (at this version): a tombstone keeps older events from bringing it back."""
        pk = f"src#{_h(v.uri)}"
        rec = SourceRecord(v.uri, v.sequencer, v.version_id, None, "deleted", time.time())
        for attempt in _attempts():
            head, head_rev = self._head(v.uri)
            cur = self.current(v.uri)
            if cur is not None and cur.seq > rec.seq:
                break  # a late delete of a key re-created since: nothing to do
            if cur is not None and cur.name == rec.name:
                break  # a replayed delete
            try:
                self.table.transact([
                    Write(pk, f"ver#{rec.name}", asdict(rec), 0),
                    Write(pk, "head", {**head, "current": rec.name}, head_rev),
                ])  # fmt: skip
                break
            except Conflict:
                attempt()
        return self._settle(v.uri)

    def remove_version(self, uri: str, version_id: str) -> tuple[list[str], bool]:
        """One version was deleted for good (versioned bucket). Returns (documents purged, whether it was the
        key's current version). A pending job of that version finds it gone when it completes."""
        pk = f"src#{_h(uri)}"
        for attempt in _attempts():
            try:
                if self.table.get(pk, f"gone#{version_id}") is None:
                    self.table.transact([Write(pk, f"gone#{version_id}", {"at": time.time()}, 0)])
                break
            except Conflict:
                attempt()
        was_current, purged = False, []
        for attempt in _attempts():
            head, head_rev = self._head(uri)
            done = [
                (r, rev)
                for r, rev in self._records(uri)
                if r.version_id == version_id and r.state == "complete"
            ]
            if not done:
                break
            (r, rev) = done[0]
            is_current = head.get("current") == r.name
            extra = [Write(pk, "head", {**head, "current": None}, head_rev)] if is_current else []
            try:
                purged += self._drop(r, rev, extra)
            except Conflict:
                attempt()
                continue
            was_current = was_current or is_current
        return sorted(set(purged)), was_current

    def abandon(self, v: SourceVersion) -> list[str]:
        """A superseded job (a continuation or a redelivery of an older version) gives up its claims: every
        pending record of this version, whatever document it holds (a redelivered event does not know it)."""
        mine = [(r, rev) for r, rev in self._records(v.uri)
                if r.state == "pending" and r.seq == v.seq and r.version_id == v.version_id]  # fmt: skip
        return self._drop_all(mine)

    # --------------------------------------------------------------------------------------- internals
    def _settle(self, uri: str) -> list[str]:
        """Retire what the key's current record replaces: older records, and other completions of the same
        version slot. A pending record of a running job (lease not expired) is left to that job."""
        cur = self.current(uri)
        if cur is None:
            return []
        now = time.time()
        old = [
            (r, rev) for r, rev in self._records(uri)
            if r.name != cur.name and (r.seq < cur.seq or (r.seq == cur.seq and r.state != "pending"))
            and not (r.state == "pending" and r.lease_until > now)
        ]  # fmt: skip
        return self._drop_all(old)

    def _drop_all(self, records: list[tuple[SourceRecord, int]]) -> list[str]:
        purged: list[str] = []
        for r, rev in records:
            try:
                purged += self._drop(r, rev)
            except Conflict:  # changed meanwhile (its job completed, another retired it): theirs to settle
                continue
        return sorted(set(purged))

    def _drop(self, r: SourceRecord, rev: int, extra: list[Write] | None = None) -> list[str]:
        """Delete a version record and its claim in one transaction; purge its document if that was the last."""
        pk = f"src#{_h(r.uri)}"
        for attempt in _attempts():
            writes = [Write(pk, f"ver#{r.name}", None, rev), *(extra or [])]
            doc = self.table.get(f"doc#{r.document_id}", "head") if r.document_id else None
            if doc is not None:
                left = max(0, int(doc[0]["claims"]) - 1)
                writes.append(Write(f"doc#{r.document_id}", "head", {**doc[0], "claims": left}, doc[1]))
            try:
                self.table.transact(writes)
            except Conflict:
                found = self.table.get(pk, f"ver#{r.name}")
                if found is None or found[1] != rev:
                    raise  # the record itself changed: the caller decides
                attempt()  # only the document's head moved (another claim or release): again
                continue
            return self._collect(r.document_id) if r.document_id else []
        raise AssertionError("unreachable")

    def _collect(self, document_id: str) -> list[str]:
        """Purge the document if no version record holds it (and nobody is purging it already)."""
        for attempt in _attempts():
            doc = self.table.get(f"doc#{document_id}", "head")
            if doc is not None and (
                int(doc[0]["claims"]) > 0
                or (doc[0]["state"] == "deleting" and doc[0]["lease_until"] > time.time())
            ):
                return []
            try:
                self._purge(document_id, doc)
                return [document_id]
            except Conflict:
                attempt()
        raise AssertionError("unreachable")

    def _purge(self, document_id: str, doc: tuple[Item, int] | None) -> None:
        """Mark the (unclaimed) document deleting — the condition fails if a claim came in — purge it, drop
        its head. A purger that dies leaves the mark; the lease lets the next claimant finish the purge."""
        pk = f"doc#{document_id}"
        mark = {"claims": 0, "state": "deleting", "lease_until": time.time() + self.purge_lease_s}
        self.table.transact([Write(pk, "head", mark, doc[1] if doc else 0)])
        rev = (doc[1] if doc else 0) + 1
        self.purge(document_id)
        with contextlib.suppress(
            Conflict
        ):  # our lease ran out and another purger took over: it drops the head
            self.table.transact([Write(pk, "head", None, rev)])


def _attempts(n: int = 200) -> Any:
    """Retry loop for optimistic transactions: yields a backoff callable; gives up with MembershipBusy."""
    for i in range(n):
        yield lambda i=i: time.sleep(min(0.2, 0.002 * (2 ** min(i, 7))) * random.random())
    raise MembershipBusy("membership records kept changing; retry")
