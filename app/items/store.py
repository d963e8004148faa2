"""Item persistence, the hot path: hand-written, parametrised SQL on the worker's pool (the one
Tortoise opened), through its `Database` handle (app/db/pool.py), never through the ORM.

The data-access rule: the Tortoise models in `models/` are the schema's source (aerich writes
the migrations from them); cold paths, such as users, refresh tokens and the CLI
(app/auth/users.py), query through the ORM; the item routes, the hot paths, run the SQL here.
Why: every statement here is fixed text that does its work in one round trip (a write's
version precondition in its WHERE clause, the row back through RETURNING), with no query
building and no model objects per request; the ORM would add both to every request, and these
are the statements the benchmarks (bench/) measure. Both kinds go through the same pool,
fair queue and deadlines (the ORM's client is app/db/orm.py), so neither can starve or outwait
the other. tests/api/test_data_access.py fails when an item route runs an ORM statement.

Reads return plain asyncpg records; every write is one atomic statement whose
WHERE clause carries the version precondition, so concurrent writers can never
lose an update.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.db.batch import MEMBER_COLUMN
from app.db.pool import Database
from app.items.pagination import SORTS, ListQuery

COLUMNS = (
    "id, name, description, sku, price::float8 AS price, quantity, version, created_at, updated_at"
)
WRITABLE = ("name", "description", "sku", "price", "quantity")
MAX_ID = 2**63 - 1


def _cannot_exist(item_id: int) -> bool:
    # Ids are a bigint identity from 1: others cannot exist, and asyncpg cannot even send
    # one outside the bigint range.
    return not 0 < item_id <= MAX_ID


SQL_GET = f"SELECT {COLUMNS} FROM items WHERE id = $1"  # noqa: S608 (constant text)
SQL_GET_MANY = f"SELECT {COLUMNS} FROM items WHERE id = ANY($1::bigint[])"  # noqa: S608
SQL_CREATE = (
    "INSERT INTO items (name, description, sku, price, quantity) "  # noqa: S608
    f"VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
)
# The batched insert (app/db/batch.py RowInserts): each member's id is drawn first, in member
# order, so that each row inserted (or not, when its sku is taken) is found by its member.
SQL_CREATE_MANY = (
    "WITH m AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('items', 'id')) AS id, m.* "  # noqa: S608 (constant text)
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::int[]) WITH ORDINALITY "
    "AS m(name, description, sku, price, quantity, n)), "
    "inserted AS (INSERT INTO items (id, name, description, sku, price, quantity) "
    "SELECT id, name, description, sku, price, quantity FROM m ORDER BY n "
    f"ON CONFLICT (sku) DO NOTHING RETURNING {COLUMNS}) "
    f"SELECT m.n AS {MEMBER_COLUMN}, inserted.* FROM m LEFT JOIN inserted ON inserted.id = m.id"
)
SQL_REPLACE = (
    "UPDATE items SET name = $2, description = $3, sku = $4, price = $5, quantity = $6, "  # noqa: S608
    "version = version + 1, updated_at = now() "
    f"WHERE id = $1 AND ($7::int[] IS NULL OR version = ANY($7)) RETURNING {COLUMNS}"
)
SQL_DELETE = (
    "DELETE FROM items WHERE id = $1 AND ($2::int[] IS NULL OR version = ANY($2)) RETURNING id"
)
SQL_VERSION = "SELECT version FROM items WHERE id = $1"


class ItemNotFound(Exception):
    def __init__(self, item_id: int) -> None:
        super().__init__(f"item {item_id} does not exist")
        self.item_id = item_id


class VersionMismatch(Exception):
    def __init__(self, item_id: int, current: int | None) -> None:
        super().__init__(
            f"item {item_id} is at version {current}, which If-Match does not name"
            if current is not None
            else f"item {item_id} does not exist, so If-Match: * fails"
        )
        self.item_id = item_id
        self.current = current


class DuplicateSku(Exception):
    def __init__(self, sku: str | None) -> None:
        super().__init__(f"another item already has sku {sku!r}")
        self.sku = sku


class Precondition:
    """An If-Match precondition: any existing version, or one of some versions."""

    __slots__ = ("any", "versions")

    def __init__(self, versions: Sequence[int] = (), *, any_version: bool = False) -> None:
        self.any = any_version
        self.versions = list(versions)

    def sql_versions(self) -> list[int] | None:
        return None if self.any else self.versions


async def get_item(pool: Database, item_id: int) -> asyncpg.Record:
    # Batched with other reads by id when no connection is free (app/db/batch.py).
    reads = pool.keyed_reads(SQL_GET, SQL_GET_MANY, "id")
    row = await reads.fetchrow(item_id) if not _cannot_exist(item_id) else None
    if row is None:
        raise ItemNotFound(item_id)
    return row


@dataclass(frozen=True, slots=True)
class _PageShape:
    """One shape of list query: its statement, its parameters' types, its ORDER BY terms."""

    sql: str
    types: tuple[str, ...]
    order: tuple[str, ...]


# The PostgreSQL type of a cursor's key, by sort column.
_KEY_TYPES = {"price": "numeric", "created_at": "timestamptz"}


@functools.cache
def _page_shape(
    sort: str, has_q: bool, has_min: bool, has_max: bool, has_cursor: bool
) -> _PageShape:
    """The statement of a list query with these parts; its arguments come from `_page_args`,
    in the same order."""
    column, descending = SORTS[sort]
    conditions: list[str] = []
    types: list[str] = []

    def arg(kind: str) -> str:
        types.append(kind)
        return f"${len(types)}::{kind}"

    if has_q:
        conditions.append(f"name ILIKE {arg('text')}")
    if has_min:
        conditions.append(f"price >= {arg('numeric')}")
    if has_max:
        conditions.append(f"price <= {arg('numeric')}")
    if has_cursor:
        op = "<" if descending else ">"
        if column == "id":
            conditions.append(f"id {op} {arg('bigint')}")
        else:
            key, last_id = arg(_KEY_TYPES[column]), arg("bigint")
            conditions.append(f"({column}, id) {op} ({key}, {last_id})")

    direction = " DESC" if descending else ""
    order = (f"id{direction}",) if column == "id" else (f"{column}{direction}", f"id{direction}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # The table's columns, not the output's (`price` there is a float8: no index sorts it).
    by = ", ".join(f"items.{term}" for term in order)
    sql = f"SELECT {COLUMNS} FROM items{where} ORDER BY {by} LIMIT {arg('int')}"  # noqa: S608
    return _PageShape(sql, tuple(types), order)


def _page_args(query: ListQuery) -> tuple[Any, ...]:
    args: list[Any] = []
    if query.q is not None:
        pattern = query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args.append(f"%{pattern}%")
    if query.min_price is not None:
        args.append(query.min_price)
    if query.max_price is not None:
        args.append(query.max_price)
    if query.cursor is not None:
        if SORTS[query.sort][0] != "id":
            args.append(query.cursor.key)
        args.append(query.cursor.id)
    # One row more than asked tells whether a next page exists.
    args.append(query.limit + 1)
    return tuple(args)


async def list_items(pool: Database, query: ListQuery) -> tuple[list[dict[str, Any]], bool]:
    """One page in sort order (rows as dicts, read-only), and whether more rows follow it.

    Batched with other pages of the same shape when no connection is free (app/db/batch.py).
    """
    shape = _page_shape(
        query.sort,
        query.q is not None,
        query.min_price is not None,
        query.max_price is not None,
        query.cursor is not None,
    )
    rows = await pool.page_reads(shape.sql, shape.types, shape.order).fetch(_page_args(query))
    has_more = len(rows) > query.limit
    return rows[: query.limit], has_more


async def create_item(
    pool: Database | asyncpg.Connection, data: dict[str, Any]
) -> Mapping[str, Any]:
    """Insert one item; pass a connection in a transaction to commit it with other writes.

    On the pool, inserts that wait for a connection together are one statement
    (app/db/batch.py), each still failing alone on its own duplicate sku.
    """
    args = (
        data["name"],
        data.get("description", ""),
        data.get("sku"),
        data["price"],
        data.get("quantity", 0),
    )
    try:
        if isinstance(pool, Database):
            row = await pool.row_inserts(SQL_CREATE, SQL_CREATE_MANY, "id").insert(args)
        else:
            row = await pool.fetchrow(SQL_CREATE, *args)
    except asyncpg.UniqueViolationError:
        row = None
    if row is None:
        raise DuplicateSku(data.get("sku"))
    return row


async def _missing_or_mismatch(
    conn: Database | asyncpg.Connection, item_id: int, precondition: Precondition | None
) -> Exception:
    current = await conn.fetchval(SQL_VERSION, item_id)
    if current is None:
        if precondition is not None and precondition.any:
            return VersionMismatch(item_id, None)
        return ItemNotFound(item_id)
    return VersionMismatch(item_id, current)


async def replace_item(
    pool: Database, item_id: int, data: dict[str, Any], precondition: Precondition | None
) -> asyncpg.Record:
    if _cannot_exist(item_id):
        raise ItemNotFound(item_id)
    versions = precondition.sql_versions() if precondition else None
    try:
        row = await pool.fetchrow(
            SQL_REPLACE,
            item_id,
            data["name"],
            data.get("description", ""),
            data.get("sku"),
            data["price"],
            data.get("quantity", 0),
            versions,
        )
    except asyncpg.UniqueViolationError:
        raise DuplicateSku(data.get("sku")) from None
    if row is None:
        raise await _missing_or_mismatch(pool, item_id, precondition)
    return row


async def patch_item(
    pool: Database, item_id: int, changes: dict[str, Any], precondition: Precondition | None
) -> asyncpg.Record:
    if _cannot_exist(item_id):
        raise ItemNotFound(item_id)
    if not changes:
        # Nothing to change: no new version, but the precondition still applies.
        row = await pool.fetchrow(SQL_GET, item_id)
        if row is None or (
            precondition is not None
            and not precondition.any
            and row["version"] not in precondition.versions
        ):
            raise await _missing_or_mismatch(pool, item_id, precondition)
        return row
    columns = [name for name in WRITABLE if name in changes]
    args: list[Any] = [item_id, precondition.sql_versions() if precondition else None]
    assignments = []
    for name in columns:
        args.append(changes[name])
        assignments.append(f"{name} = ${len(args)}")
    sql = (
        f"UPDATE items SET {', '.join(assignments)}, version = version + 1, updated_at = now() "  # noqa: S608
        f"WHERE id = $1 AND ($2::int[] IS NULL OR version = ANY($2)) RETURNING {COLUMNS}"
    )
    try:
        row = await pool.fetchrow(sql, *args)
    except asyncpg.UniqueViolationError:
        raise DuplicateSku(changes.get("sku")) from None
    if row is None:
        raise await _missing_or_mismatch(pool, item_id, precondition)
    return row


async def delete_item(pool: Database, item_id: int, precondition: Precondition | None) -> None:
    if _cannot_exist(item_id):
        raise ItemNotFound(item_id)
    versions = precondition.sql_versions() if precondition else None
    deleted = await pool.fetchval(SQL_DELETE, item_id, versions)
    if deleted is None:
        raise await _missing_or_mismatch(pool, item_id, precondition)
