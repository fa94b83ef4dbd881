"""One kind rule and one content key for every caller; store keys stay what earlier releases wrote."""

from __future__ import annotations

import pytest
from PIL import Image

from e5v.items import content_key, image_digest, item_kind, kind_of

#: Keys written by e5v before the shared module (computed with the store's former ``content_hash``): a store
#: built then must keep deduplicating, so these may never change.
PINNED = {
    ("text", "a dog on a beach"): "562e71a7f8e04d3e20d52f36f0f69aef346a362154a33e987c2255f2da4a6f8e",
    ("image", b"\x89PNG fake bytes"): "c4ab5295bcdf8a41461a48ab359678dd0fd84481ad13d8b1fee00f44c71a180d",
    ("composed", b"\x89PNG fake bytes", "make it red"):
        "ca60d84cd7ac34b5a554ad7fe7758aca0fec9df5fceb9c0c753f43b82d12ca51",
}


def test_content_keys_are_the_ones_existing_stores_hold(tmp_path):
    assert content_key("text", text="a dog on a beach") == PINNED[("text", "a dog on a beach")]
    assert content_key("image", b"\x89PNG fake bytes") == PINNED[("image", b"\x89PNG fake bytes")]
    assert content_key("composed", b"\x89PNG fake bytes", "make it red") == \
        PINNED[("composed", b"\x89PNG fake bytes", "make it red")]
    path = tmp_path / "same.png"
    path.write_bytes(b"\x89PNG fake bytes")  # a file keys like its bytes, from any path
    assert content_key("image", path) == PINNED[("image", b"\x89PNG fake bytes")]
    digest = image_digest(path)
    assert content_key("composed", text="make it red", image_digest=digest) == \
        PINNED[("composed", b"\x89PNG fake bytes", "make it red")]
    assert content_key("image", Image.new("RGB", (2, 3))) != content_key("image", Image.new("RGB", (3, 2)))


@pytest.mark.parametrize("item, kind", [
    ("text", "text"), (b"bytes", "image"), (Image.new("RGB", (1, 1)), "image"), ({"text": "t"}, "text"),
    ({"image": b"x"}, "image"), ({"image": b"x", "text": "t"}, "composed"), ({"image": None, "text": "t"}, "text"),
])
def test_one_kind_rule(item, kind):
    assert item_kind(item) == kind
    assert kind_of(kind != "text", kind != "image") == kind


def test_every_caller_uses_the_same_keys(model, tmp_path):
    """The store's discovery, the Spark writer's hash and the eval cache's keys agree for the same content."""
    from e5v.eval.cache import composed_key, file_digest_of, file_key, text_key
    from e5v.store.walk import content_hash, discover

    path = tmp_path / "p.png"
    Image.new("RGB", (8, 8), "red").save(path)
    (record,) = discover([path])
    assert record.hash == content_hash("image", image=path.read_bytes()) == file_key(path)
    assert text_key("hello") == content_hash("text", text="hello")
    assert composed_key(file_digest_of(path), "in blue") == content_hash("composed", image=path.read_bytes(),
                                                                            text="in blue")
