"""Which source key holds which document, in which version order: the index's membership records.

Points are per document (the bytes' SHA-256), so two keys holding the same bytes share them; what a key
holds is recorded here, per (source key, version), in the blob store beside the page images:

    sources/<h(uri)>/<sequencer>-<document_id|deleted>.json   {uri, sequencer, version_id, document_id, state}
    holders/<document_id>/<h(uri)>.json    {uri}: this key holds (or is ingesting) this document

``sequencer`` orders the versions of one key (S3's event sequencer, right-padded with zeros so that string
order is event order; S3 documents it as comparable between events of the same key only); between records of
the same sequencer (S3 objects without an event: backfill listings) the later completion wins. The rules:

- a job whose version is older than a completed version (or a deletion) of its key does nothing;
- a version replaces older ones only once it is completely stored (``complete``);
- a document's pages, page images and converted PDF are deleted only when no key holds it any more.

Every record is written before the pages it protects and removed after, so a crash leaves a record that
the next job of that key cleans up, never pages nobody can find. Two writers of different keys that share a
document can still race (one releasing the last holder while the other starts); the newcomer's final check
(``ingest`` recounts the pages after ``complete``) re-embeds anything removed in that window.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Literal

from engine.errors import NotFound
from engine.storage import BlobStore

State = Literal["pending", "complete", "deleted"]
SEQ_WIDTH = 40


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

    @property
    def seq(self) -> str:
        return sequence_key(self.sequencer)

    @property
    def order(self) -> tuple[str, float]:
        return self.seq, self.updated_at

    @property
    def name(self) -> str:
        return f"{self.seq}-{self.document_id or 'deleted'}.json"


def _h(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:32]


class Membership:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    # ------------------------------------------------------------------------------------------ reads
    def records(self, uri: str) -> list[SourceRecord]:
        out = []
        for key in self.store.list(f"sources/{_h(uri)}/"):
            try:
                out.append(SourceRecord(**json.loads(self.store.get(key))))
            except NotFound:  # removed between list and get
                continue
        return sorted(out, key=lambda r: r.order)

    def current(self, uri: str) -> SourceRecord | None:
        """The newest completed version or deletion of this key (what the index shows for it)."""
        done = [r for r in self.records(uri) if r.state != "pending"]
        return max(done, key=lambda r: r.order) if done else None

    def superseded_by(self, v: SourceVersion) -> SourceRecord | None:
        """A completed version or deletion of the same key newer than ``v``, if any."""
        cur = self.current(v.uri)
        return cur if cur is not None and cur.seq > v.seq else None

    def holders(self, document_id: str) -> set[str]:
        uris = set()
        for key in self.store.list(f"holders/{document_id}/"):
            try:
                uris.add(json.loads(self.store.get(key))["uri"])
            except NotFound:
                continue
        return uris

    def documents_of(self, uri: str) -> set[str]:
        return {r.document_id for r in self.records(uri) if r.document_id}

    # ----------------------------------------------------------------------------------------- writes
    def _write(self, v: SourceVersion, document_id: str | None, state: State) -> SourceRecord:
        rec = SourceRecord(v.uri, v.sequencer, v.version_id, document_id, state, time.time())
        key = f"sources/{_h(v.uri)}/{rec.name}"
        self.store.put(key, json.dumps(asdict(rec)).encode(), "application/json")
        return rec

    def _drop(self, rec: SourceRecord) -> None:
        self.store.delete(f"sources/{_h(rec.uri)}/{rec.name}")

    def begin(self, v: SourceVersion, document_id: str) -> None:
        """Before any page of ``document_id`` is written for this version: record the claim."""
        holder = f"holders/{document_id}/{_h(v.uri)}.json"
        self.store.put(holder, json.dumps({"uri": v.uri}).encode(), "application/json")
        self._write(v, document_id, "pending")

    def complete(self, v: SourceVersion, document_id: str) -> tuple[bool, list[str]]:
        """This version is completely stored. Returns (is it the key's current version, documents no key holds
        any more: their pages must go). Older versions of the key are retired; a stale one retires itself."""
        mine = self._write(v, document_id, "complete")
        current, orphans = self._settle(v.uri)
        return current is not None and current.name == mine.name, orphans

    def remove(self, v: SourceVersion) -> list[str]:
        """The key was deleted (at this version): a tombstone keeps older events from bringing it back."""
        self._write(v, None, "deleted")
        return self._settle(v.uri)[1]

    def remove_version(self, uri: str, version_id: str) -> list[str]:
        """One non-current version was deleted for good (versioned bucket): forget just that version."""
        orphans: list[str] = []
        for r in self.records(uri):
            if r.version_id == version_id and r.state != "deleted":
                self._drop(r)
                if r.document_id:
                    orphans += self._release(uri, r.document_id)
        return orphans

    def abandon(self, v: SourceVersion, document_id: str | None) -> list[str]:
        """A superseded job (e.g. a continuation of an older version) gives up its claim."""
        if not document_id:
            return []
        self._drop(SourceRecord(v.uri, v.sequencer, v.version_id, document_id, "pending", 0.0))
        return self._release(v.uri, document_id)

    def _settle(self, uri: str) -> tuple[SourceRecord | None, list[str]]:
        records = self.records(uri)
        done = [r for r in records if r.state != "pending"]
        current = max(done, key=lambda r: r.order) if done else None
        orphans: list[str] = []
        for r in records:
            if current is None or r.name == current.name:
                continue
            # older versions go, and earlier completions of the same version slot (in-progress ones stay);
            # a tombstone stays as the current record: it keeps late events of older versions out
            if r.seq < current.seq or (r.seq == current.seq and r.state != "pending"):
                self._drop(r)
                if r.document_id:
                    orphans += self._release(uri, r.document_id)
        return current, sorted(set(orphans))

    def _release(self, uri: str, document_id: str) -> list[str]:
        """Drop this key's hold on a document unless another version record of the key still uses it;
        return [document_id] when nobody holds it any more."""
        if document_id in self.documents_of(uri):
            return []
        self.store.delete(f"holders/{document_id}/{_h(uri)}.json")
        return [] if self.holders(document_id) else [document_id]
