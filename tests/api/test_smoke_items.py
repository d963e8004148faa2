from __future__ import annotations

from sanic_testing.reusable import ReusableClient


def test_create_then_read_round_trips_every_field(client: ReusableClient) -> None:
    body = {"name": " Widget ", "description": "d", "sku": "W-1", "price": 19.99, "quantity": 3}
    _, created = client.post("/items", json=body)
    assert created.status == 201
    item = created.json
    assert item["name"] == "Widget"
    assert item["price"] == 19.99
    assert created.headers["location"] == f"/items/{item['id']}"
    _, fetched = client.get(created.headers["location"])
    assert fetched.status == 200
    assert fetched.json == item
    assert fetched.headers["etag"] == '"v1"'
