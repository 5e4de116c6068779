"""The local-directory object store (the embedded stack's default): listing a prefix returns
exactly the objects under it, never a temporary file, and never leaves the bucket."""

from pathlib import Path

import pytest

from headwater.runtime.errors import InputError
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
    (tmp_path / "landing" / "sales" / "2024-05-01" / ".tmp-half").write_bytes(b"")
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
