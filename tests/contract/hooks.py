"""schemathesis hooks for the contract fuzz: two list-query rules no schema can state.

Loaded through SCHEMATHESIS_HOOKS=tests.contract.hooks. They only drop generated *positive*
list queries that break a rule the document states in words; negative cases and every
check stay as they are.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@schemathesis.hook("filter_case").apply_to(method="GET", path="/items")
def only_servable_list_queries(context: Any, case: Any) -> bool:
    del context
    query = case.query or {}
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return True
    # `cursor` is opaque: only a `next_cursor` this server issued for the same sort is valid.
    if "cursor" in query:
        return False
    # A price range whose minimum exceeds its maximum is refused (400).
    low, high = query.get("min_price"), query.get("max_price")
    return not (_number(low) and _number(high) and low > high)
