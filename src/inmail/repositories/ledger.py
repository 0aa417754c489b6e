"""The ledger: an append-only record of every change to every balance."""

from __future__ import annotations

from collections.abc import Sequence

from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry
from inmail.domain.pages import Page
from inmail.repositories.collection import RecordReader
from inmail.repositories.mongo import Doc, Mongo, Session, TransactionSession

NEWEST_FIRST = (("seq", -1),)


def entry_to_doc(entry: LedgerEntry) -> Doc:
    doc: Doc = {
        "_id": entry.id,
        "memberId": entry.member_id,
        "seq": entry.seq,
        "at": entry.at,
        "kind": entry.kind.value,
        "delta": entry.delta,
        "balanceAfter": entry.balance_after,
        "lotId": entry.lot_id,
        "conversationId": entry.conversation_id,
        "purchaseId": entry.purchase_id,
        "requested": entry.requested,
    }
    if entry.grant_key is not None:  # the unique index counts only string keys
        doc["grantKey"] = entry.grant_key
    return doc


def entry_from_doc(doc: Doc) -> LedgerEntry:
    return LedgerEntry(
        id=doc["_id"],
        member_id=doc["memberId"],
        seq=doc["seq"],
        at=doc["at"],
        kind=LedgerKind(doc["kind"]),
        delta=doc["delta"],
        balance_after=doc["balanceAfter"],
        lot_id=doc.get("lotId"),
        conversation_id=doc.get("conversationId"),
        purchase_id=doc.get("purchaseId"),
        grant_key=doc.get("grantKey"),
        requested=doc.get("requested"),
    )


class LedgerReader(RecordReader[LedgerEntry]):
    """The ledger as read outside a transaction, or inside one (then from its snapshot)."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.ledger, entry_from_doc)

    async def page(self, member_id: str, first: int, after: str | None) -> Page[LedgerEntry]:
        return await self._page(
            {"memberId": member_id}, NEWEST_FIRST, first, after, owner=member_id
        )


class LedgerRepository(LedgerReader):
    """The ledger inside a transaction: entries are appended, never changed."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def append(self, entries: Sequence[LedgerEntry]) -> None:
        await self._mongo.insert_all(self._c, [entry_to_doc(e) for e in entries], self._session)
