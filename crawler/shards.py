"""Splitting one crawl over several processes: ``--shard INDEX/COUNT``.

A repository belongs to shard ``sha256("<registry>/<repository>") mod COUNT``
(the first 8 bytes of the digest, big-endian).  The hash depends on nothing
but the names, so every shard of every run agrees on the split without
talking to the others, and a package (one repository) is only ever written
by one shard.  Each shard keeps its own state file and lock, and takes its
share of the API rate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from crawler.errors import ConfigError

SHARD_COUNT_MAX: Final = 1024
JOB_INDEX_ENV: Final = "JOB_COMPLETION_INDEX"
_SHARD: Final = re.compile(r"^\s*([0-9]{1,4})\s*/\s*([0-9]{1,4})\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str, where: str) -> Shard:
        match = _SHARD.match(text)
        if match is None:
            raise ConfigError(f"{where}: {text!r} is not INDEX/COUNT, e.g. 0/3")
        return cls.of(int(match[1]), int(match[2]), where)

    @classmethod
    def of(cls, index: int, count: int, where: str) -> Shard:
        if not 1 <= count <= SHARD_COUNT_MAX:
            raise ConfigError(f"{where}: the shard count must be 1 to {SHARD_COUNT_MAX}, got {count}")
        if not 0 <= index < count:
            raise ConfigError(f"{where}: shard index {index} is not in 0..{count - 1}")
        return cls(index, count)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, registry: str, repository: str) -> bool:
        return shard_of(registry, repository, self.count) == self.index

    def state_path(self, path: Path) -> Path:
        """``state.db`` -> ``state.shard-1-of-3.db``: one state file (and lock) per shard."""
        if self.count == 1:
            return path
        suffix = path.suffix
        stem = path.name[: -len(suffix)] if suffix else path.name
        return path.with_name(f"{stem}.shard-{self.index}-of-{self.count}{suffix}")


def shard_of(registry: str, repository: str, count: int) -> int:
    digest = hashlib.sha256(f"{registry}/{repository}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def apply_shard(values: dict[str, Any], environ: Mapping[str, str], *,
                default_state: Callable[[], Path], default_rate: float) -> None:
    """--shard (or JOB_COMPLETION_INDEX with shard_count): its own state file, its share of the rate."""
    shard: Shard | None = values.get("shard")
    count = values.get("shard_count")
    if shard is None and count is not None and environ.get(JOB_INDEX_ENV, "").strip():
        raw = environ[JOB_INDEX_ENV].strip()
        if not raw.isdigit():
            raise ConfigError(f"{JOB_INDEX_ENV}: {raw!r} is not a shard index")
        shard = Shard.of(int(raw), count, JOB_INDEX_ENV)
    if shard is not None and count is not None and shard.count != count:
        raise ConfigError(f"shard: {shard.label} disagrees with shard_count = {count}")
    if shard is None or shard.count == 1:
        values.pop("shard", None)
        return
    values["shard"] = shard
    values["state"] = shard.state_path(values.get("state") or default_state())
    values["rate"] = values.get("shard_rate") or values.get("rate", default_rate) / shard.count
    if values.get("registry_rate") is not None:
        values["registry_rate"] = values["registry_rate"] / shard.count
