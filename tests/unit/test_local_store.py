"""The local-directory object store (the embedded stack's default): listing a prefix returns
exactly the objects under it, never a temporary file, and never leaves the bucket."""

from pathlib import Path

import pytest

from headwater.contracts.errors import InputError
from headwater.runtime.objectstore import LocalStore


@pytest.fixture
async def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path)
    await s.ensure_bucket("landing")
    for key in (
        "sales/2024-05-01/a.csv",
        "sales/2024-05-01/b.csv",
        "sales/2024-05-011/c.csv",
        "sales/2024-05-02/a.csv",
        "other/2024-05-01/a.csv",
    ):
        await s.put("landing", key, b"x")
    folder = tmp_path / "landing" / "sales" / "2024-05-01"
    (folder / ".tmp~x8g2kq_1").write_bytes(b"")  # a write under way
    (folder / ".tmp-half").write_bytes(b"")  # what an older version's crash left
    return s


async def test_a_partition_prefix_lists_its_files_only(store: LocalStore) -> None:
    assert await store.list("landing", "sales/2024-05-01/") == [
        "sales/2024-05-01/a.csv",
        "sales/2024-05-01/b.csv",
    ]


async def test_a_prefix_that_is_not_a_folder_matches_by_prefix(store: LocalStore) -> None:
    assert await store.list("landing", "sales/2024-05-01") == [
        "sales/2024-05-01/a.csv",
        "sales/2024-05-01/b.csv",
        "sales/2024-05-011/c.csv",
    ]
    assert await store.list("landing", "") == sorted(
        [
            "other/2024-05-01/a.csv",
            "sales/2024-05-01/a.csv",
            "sales/2024-05-01/b.csv",
            "sales/2024-05-011/c.csv",
            "sales/2024-05-02/a.csv",
        ]
    )


async def test_an_unknown_or_escaping_prefix(store: LocalStore) -> None:
    assert await store.list("landing", "nothing/here/") == []
    with pytest.raises(InputError):
        await store.list("landing", "../outside/")


async def test_an_object_named_like_a_temp_file_is_an_object(store: LocalStore) -> None:
    # `.tmp-x.csv` is a valid object name of the upstream contract: it is listed, and read.
    await store.put("landing", "sales/2024-05-01/.tmp-x.csv", b"y")
    assert ".tmp-x.csv" in [k.rsplit("/", 1)[1] for k in await store.list("landing", "sales/")]
    assert await store.get("landing", "sales/2024-05-01/.tmp-x.csv") == b"y"
    with pytest.raises(InputError):  # the store's own temp names are no object's
        await store.put("landing", "sales/2024-05-01/.tmp~x.csv", b"y")
