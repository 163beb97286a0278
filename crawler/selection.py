"""Which repositories a run works on, from every source, before any tag list or write.

For each source: its explicit list (``repositories``, ``repositories_file``) or
its catalog; then its repository filter; then the package name of every
repository left, all sources together, so that over-long names and
collisions are refused before anything is written (in ``plan`` and ``run``
alike); then the shard, if any.  Names are assigned over everything listed,
so every shard sees the same collisions and refuses the same repositories.

A source whose catalog cannot be read (down, or its credentials refused)
ends as a source-level problem; the other sources go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from crawler.config import SourceSettings
from crawler.errors import CrawlerError, ItemError
from crawler.naming import assign_names
from crawler.outcomes import Outcome
from crawler.shards import Shard


@dataclass(frozen=True, slots=True)
class Selected:
    source: SourceSettings
    repository: str
    package_name: str


@dataclass(frozen=True, slots=True)
class Left:
    """A repository not worked on, and why."""

    source: str
    repository: str
    reason: str
    #: for a refused repository: invalid when its name can never be an Akua package name
    #: (over 120 characters, empty), rejected for a collision or a repository two sources take
    outcome: Outcome = Outcome.REJECTED


@dataclass(slots=True)
class Selection:
    selected: list[Selected] = field(default_factory=list)
    filtered: list[Left] = field(default_factory=list)  # by include/exclude: not problems
    refused: list[Left] = field(default_factory=list)  # name over-long or colliding: problems
    other_shards: int = 0  # repositories left to the other shards
    source_problems: dict[str, str] = field(default_factory=dict)  # source name -> reason


ListRepositories = Callable[[SourceSettings], AsyncIterator[str]]


async def list_all(sources: Sequence[SourceSettings], catalog: ListRepositories) -> tuple[
    dict[str, list[str]], dict[str, str]
]:
    """Every source's repositories (explicit list or catalog), read concurrently; failures per source."""
    listed: dict[str, list[str]] = {}
    problems: dict[str, str] = {}

    async def one(source: SourceSettings) -> None:
        if source.repositories:
            listed[source.name] = list(source.repositories)
            return
        names: list[str] = []
        try:
            async for repository in catalog(source):
                names.append(repository)
        except (ItemError, CrawlerError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            problems[source.name] = f"cannot list the repositories of {source.registry}: {reason}"
            return
        listed[source.name] = list(dict.fromkeys(names))

    async with anyio.create_task_group() as group:
        for source in sources:
            group.start_soon(one, source)
    return listed, problems


def choose(
    sources: Sequence[SourceSettings],
    listed: dict[str, list[str]],
    shard: Shard | None = None,
    owners: Mapping[tuple[str, str], str] | None = None,
) -> Selection:
    """Pure: filters, names, collisions and the shard over what was listed.  ``owners``: the
    names repositories were already imported under (a collision's owner keeps its name)."""
    selection = Selection()
    kept: list[tuple[SourceSettings, str]] = []
    for source in sources:
        for repository in listed.get(source.name, ()):
            reason = source.repository_filter.rejects(repository)
            if reason is not None:
                selection.filtered.append(Left(source.name, repository, reason))
            else:
                kept.append((source, repository))
    # One repository is one package: two sources taking the same repository of one registry
    # (say, with different name rules) would write it twice; neither gets it.
    takers: dict[tuple[str, str], list[str]] = {}
    for source, repository in kept:
        takers.setdefault((source.registry, repository), []).append(source.name)
    doubled = {key: names for key, names in takers.items() if len(names) > 1}
    book = assign_names(((source.name, repository, source.names) for source, repository in kept
                         if (source.registry, repository) not in doubled), owners)
    for source, repository in kept:
        if shard is not None and not shard.owns(source.registry, repository):
            selection.other_shards += 1
            continue
        names = doubled.get((source.registry, repository))
        if names is not None:
            selection.refused.append(Left(source.name, repository, (
                f"{source.registry}/{repository} is taken by the sources {', '.join(names)}; "
                "leave it to one (include/exclude)")))
            continue
        name = book.name(source.name, repository)
        if name is None:
            key = (source.name, repository)
            outcome = Outcome.INVALID if key in book.invalid else Outcome.REJECTED
            selection.refused.append(Left(source.name, repository, book.problems[key], outcome))
        else:
            selection.selected.append(Selected(source, repository, name))
    return selection


async def select(
    sources: Sequence[SourceSettings], catalog: ListRepositories, shard: Shard | None = None,
    owner_of: Callable[[SourceSettings, str], Awaitable[str | None]] | None = None,
) -> Selection:
    """``owner_of(source, repository)``: the name the state says it was imported under."""
    listed, problems = await list_all(sources, catalog)
    selection = choose(sources, listed, shard)
    if owner_of is not None and selection.refused:
        # Only the parties to a collision are looked up, then the choice is made again.
        by_name = {source.name: source for source in sources}
        owners: dict[tuple[str, str], str] = {}
        for left in selection.refused:
            if left.reason.startswith("package name collision"):
                owned = await owner_of(by_name[left.source], left.repository)
                if owned is not None:
                    owners[(left.source, left.repository)] = owned
        if owners:
            selection = choose(sources, listed, shard, owners)
    selection.source_problems.update(problems)
    return selection
