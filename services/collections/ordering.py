"""Sparse integer positions that order the items of a collection.

Items are appended ``GAP`` apart, so moving an item usually writes only its
own row: it takes the midpoint between its new neighbours. When two
neighbours are adjacent integers, the whole collection is renumbered once,
which costs one UPDATE of every item. Pages are read by keyset on
``(position, file_id)``, so a page costs the same at any depth.
"""

from __future__ import annotations

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.orm import Session

from services.collections.models import CollectionItem

GAP = 1 << 16


def append_positions(session: Session, collection_id: str, count: int) -> list[int]:
    """Return ``count`` increasing positions after the collection's last item."""
    last = session.scalar(
        select(func.max(CollectionItem.position)).where(
            CollectionItem.collection_id == collection_id
        )
    )
    start = (last if last is not None else 0) + GAP
    return [start + index * GAP for index in range(count)]


def renumber(session: Session, collection_id: str) -> None:
    """Space every item of the collection ``GAP`` apart, keeping their order."""
    session.execute(
        text(
            "UPDATE collection_items SET position = ranked.rank * :gap "
            "FROM (SELECT file_id, row_number() OVER (ORDER BY position, file_id) AS rank "
            "      FROM collection_items WHERE collection_id = :collection) AS ranked "
            "WHERE collection_items.collection_id = :collection "
            "AND collection_items.file_id = ranked.file_id"
        ),
        {"gap": GAP, "collection": collection_id},
    )


def position_for_move(
    session: Session,
    collection_id: str,
    file_id: str,
    index: int,
    hidden_source_ids: list[str],
) -> int:
    """Return the position that puts ``file_id`` at ``index`` in a member's view.

    The view leaves out the moved item and the items of ``hidden_source_ids``.
    Index 0 puts the item before every other item. Index N > 0 puts it right
    after the view's item N-1, before whatever follows that item, hidden or
    not. An index past the end puts it after the last item. The collection
    is renumbered first when the neighbours leave no free integer between
    them.
    """
    for _attempt in range(2):
        position = _free_position(session, collection_id, file_id, index, hidden_source_ids)
        if position is not None:
            return position
        renumber(session, collection_id)
    raise RuntimeError(f"no free position in collection {collection_id} after renumbering")


def _free_position(session, collection_id, file_id, index, hidden_source_ids) -> int | None:
    others = select(CollectionItem.position, CollectionItem.file_id).where(
        CollectionItem.collection_id == collection_id, CollectionItem.file_id != file_id
    )
    ordered = (CollectionItem.position, CollectionItem.file_id)
    if index == 0:
        first = session.execute(others.order_by(*ordered).limit(1)).first()
        return GAP if first is None else first.position - GAP
    view = others
    if hidden_source_ids:
        view = view.where(CollectionItem.source_id.not_in(hidden_source_ids))
    anchor = session.execute(view.order_by(*ordered).offset(index - 1).limit(1)).first()
    if anchor is None:
        last = session.execute(
            others.order_by(CollectionItem.position.desc(), CollectionItem.file_id.desc()).limit(1)
        ).first()
        return GAP if last is None else last.position + GAP
    following = session.execute(
        others.where(tuple_(*ordered) > tuple_(anchor.position, anchor.file_id))
        .order_by(*ordered)
        .limit(1)
    ).first()
    if following is None:
        return anchor.position + GAP
    if following.position - anchor.position < 2:
        return None
    return (anchor.position + following.position) // 2
