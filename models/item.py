"""The item aggregate: the one resource this service stores."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class Item(Model):
    """An item; the database constraints mirror the API's field rules."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200)
    description = fields.CharField(max_length=2000, default="")
    sku = fields.CharField(max_length=64, null=True, unique=True)
    price = fields.DecimalField(max_digits=12, decimal_places=2)
    quantity = fields.IntField(default=0)
    version = fields.IntField(default=1)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "items"
        # Keyset pagination on each sort reads (key, id) in index order.
        indexes = (
            Index(fields=("price", "id"), name="items_price_id_idx"),
            Index(fields=("created_at", "id"), name="items_created_at_id_idx"),
        )
