"""What every repository of one kind of record does alike: find by id, count, a page."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from inmail.domain.pages import Page
from inmail.repositories.mongo import Collection, Doc, Mongo, Session
from inmail.repositories.pages import keyset_page

R = TypeVar("R")


class RecordReader(Generic[R]):
    """Records of one collection as read outside a transaction (`session` None), or inside one
    (then from its snapshot). `record` makes one of a stored document; None for a document it
    cannot read, which is then left out. `projection`: the fields a record is made of, where
    the documents hold more."""

    def __init__(
        self,
        mongo: Mongo,
        session: Session,
        collection: Collection,
        record: Callable[[Doc], R | None],
        projection: Mapping[str, object] | None = None,
    ) -> None:
        self._mongo = mongo
        self._session = session
        self._c = collection
        self._record = record
        self._projection = projection

    async def get(self, record_id: str) -> R | None:
        doc = await self._c.find_one({"_id": record_id}, self._projection, session=self._session)
        return self._record(doc) if doc else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, R]:
        """The records with these ids, by id, in one round trip; an id not found is left out."""
        docs = await self._mongo.find_by_ids(
            self._c, ids, self._session, projection=self._projection
        )
        return {doc["_id"]: found for doc in docs if (found := self._record(doc)) is not None}

    async def _page(
        self,
        query: Mapping[str, object],
        sort: Sequence[tuple[str, int]],
        first: int,
        after: str | None,
        *,
        owner: str,
    ) -> Page[R]:
        """A page of one member's list (`owner`), whose cursors name it: a cursor of another
        member's list is refused."""
        page = await keyset_page(
            self._mongo,
            self._c,
            query,
            sort,
            first,
            after,
            projection=self._projection,
            scope=owner,
        )
        return page.map(self._record)

    async def _count(self, query: Mapping[str, object]) -> int:
        return await self._c.count_documents(query, session=self._session)
