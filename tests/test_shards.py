"""Shard selection: stable, a partition, one state file per shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawler.errors import ConfigError
from crawler.shards import Shard, shard_of


def test_shards_partition_repositories() -> None:
    repositories = [f"team-{i}/app-{j}" for i in range(20) for j in range(10)]
    shards = [Shard(i, 3) for i in range(3)]
    owners = [[s.index for s in shards if s.owns("r.example", r)] for r in repositories]
    assert all(len(o) == 1 for o in owners)  # every repository in exactly one shard
    sizes = [sum(1 for o in owners if o == [i]) for i in range(3)]
    assert min(sizes) > 40  # and the split is roughly even (200 / 3)


def test_shard_is_stable() -> None:
    # sha256("r.example/team/app")[:8] as an integer, mod 3: a fixed value, never process-dependent.
    assert shard_of("r.example", "team/app", 3) == shard_of("r.example", "team/app", 3)
    assert [shard_of("r.example", "team/app", n) for n in (1, 2, 3, 7)] == [
        0,
        int.from_bytes(__import__("hashlib").sha256(b"r.example/team/app").digest()[:8], "big") % 2,
        int.from_bytes(__import__("hashlib").sha256(b"r.example/team/app").digest()[:8], "big") % 3,
        int.from_bytes(__import__("hashlib").sha256(b"r.example/team/app").digest()[:8], "big") % 7,
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("3/3", "shard index 3 is not in 0..2"), ("1/0", "the shard count must be"),
     ("a/b", "is not INDEX/COUNT"), ("1", "is not INDEX/COUNT")],
)
def test_bad_shards(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Shard.parse(text, "--shard")


def test_state_path_per_shard() -> None:
    assert Shard(1, 3).state_path(Path("/s/state.db")) == Path("/s/state.shard-1-of-3.db")
    assert Shard(0, 2).state_path(Path("/s/state")) == Path("/s/state.shard-0-of-2")
    assert Shard(0, 1).state_path(Path("/s/state.db")) == Path("/s/state.db")
