"""Every sort's page statement reads an index in its sort order, never sorts the table.

A sort key the index cannot give (e.g. ORDER BY the float8 `price` of the select list instead
of the table's numeric column) makes PostgreSQL read and sort the whole table for each page.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from app.items.pagination import SORTS
from app.items.store import _page_shape

EXAMPLES = {
    "text": "%a%",
    "numeric": Decimal("1.5"),
    "bigint": 7,
    "timestamptz": datetime(2026, 1, 1, tzinfo=UTC),
    "int": 21,
}
# Each sort, first page and later page. (With filters, the plan is the planner's choice by
# the table's statistics: a narrow price range may rightly be read from the price index.)
SHAPES = [(sort, False, False, False, cursor) for sort in SORTS for cursor in (False, True)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "-".join(map(str, shape)))
def test_a_page_statement_walks_an_index_in_its_order(
    clean_db: str, shape: tuple[str, bool, bool, bool, bool]
) -> None:
    sql = _page_shape(*shape).sql

    async def plan() -> str:
        conn = await asyncpg.connect(clean_db)
        try:
            # A Sort left in the plan with sorts priced out is one no index can spare.
            for method in ("seqscan", "bitmapscan", "sort"):
                await conn.execute(f"SET enable_{method} = off")
            statement = await conn.prepare(f"EXPLAIN {sql}")
            args = [EXAMPLES[kind] for kind in _page_shape(*shape).types]
            rows = await statement.fetch(*args)
            return "\n".join(row[0] for row in rows)
        finally:
            await conn.close()

    text = asyncio.run(plan())
    assert "Index Scan" in text and "Sort" not in text, text
