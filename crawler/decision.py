"""What to do with one package version: the exactly-once rules, without I/O.

A version is the group of tags naming one SemVer, the preferred tag first
(see ``versions.tag_preference``).  The functions here take what the state
recorded for those tags and the run's options, and say what the I/O shell
(``job.py``) must do next.  Nothing here sends a request or touches the
state, so every rule is a plain function call in ``tests/test_decision.py``,
whose table mirrors the README's "State first" rules line by line.

The steps of one version::

    decide(tags, records, options)
      ├── Settled(prior)         report what the state says; no request at all
      ├── Recheck(prior)         HEAD the tag of that record, then after_head(step, digest)
      │     ├── Settled(prior)   same digest: nothing changed
      │     ├── Ended(rejected)  an imported tag moved: Akua versions are immutable
      │     └── Fetch()          the content changed: work on it again
      └── Fetch()                GET the manifest, prepare the request, then
            split_tags(...)      other tags of the version pointing elsewhere: rejected
            after_fetch(...)
              ├── Ended(invalid | skipped)
              ├── Planned(import | create-version)   plan: what run would send
              └── Write(import | create-version)     run: hand the request to the importer

Whether an ending is recorded in the state is :func:`recorded`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from crawler.outcomes import Outcome
from crawler.state import ItemRecord

#: Outcomes that settle a tag for good while its digest stays the same.
SETTLED: Final = frozenset({Outcome.IMPORTED, Outcome.EXISTS, Outcome.SKIPPED})
#: Outcomes worth a HEAD on the next run: the publisher may have fixed the artifact.
RECHECKED: Final = frozenset({Outcome.INVALID, Outcome.REJECTED})

Action = Literal["import", "create-version"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The run options the rules depend on."""

    writes: bool  # run: True; plan: False (nothing is sent to Akua or recorded)
    recheck_digests: bool = False  # HEAD settled tags, report tags moved to a new digest
    retry_rejected: bool = False  # work on rejected items again, changed or not


# -- steps ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settled:
    """The state's record holds: report it, send nothing."""

    prior: ItemRecord

    @property
    def outcome(self) -> Outcome:
        return Outcome.EXISTS if self.prior.outcome is Outcome.IMPORTED else self.prior.outcome

    @property
    def reason(self) -> str:
        if self.prior.outcome is Outcome.IMPORTED:
            return "imported by an earlier run"
        return self.prior.reason


@dataclass(frozen=True, slots=True)
class Recheck:
    """HEAD :attr:`tag` and compare with ``prior.digest`` (see :func:`after_head`)."""

    prior: ItemRecord

    @property
    def tag(self) -> str:
        """The tag whose record ``prior`` is: the one to HEAD.  A version whose preferred
        tag is imported and whose other tag was rejected (a conflict) rechecks the other."""
        return self.prior.tag


@dataclass(frozen=True, slots=True)
class Fetch:
    """GET the manifest and work on the version."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The version ends here with this outcome."""

    outcome: Outcome
    reason: str
    digest: str | None


@dataclass(frozen=True, slots=True)
class Planned:
    """``plan``: what ``run`` would send."""

    action: Action

    @property
    def reason(self) -> str:
        return f"would {self.action}"


@dataclass(frozen=True, slots=True)
class Write:
    """``run``: send the request; ``action`` is what the state knows (the importer may
    still find the package in Akua and create a version instead of importing)."""

    action: Action


FirstStep = Settled | Recheck | Fetch


# -- rules ----------------------------------------------------------------------


def decide(
    tags: Sequence[str], records: Mapping[str, ItemRecord | None], options: Options
) -> FirstStep:
    """The first step for a version, from the state's latest record of each tag.

    * a tag the state does not know, or one that ``failed``: fetch;
    * every tag ``imported``, ``exists`` or ``skipped``: settled (SemVer tags are
      immutable); with ``recheck_digests``, recheck the digest with a HEAD first;
    * otherwise every tag is settled, ``invalid`` or ``rejected``: recheck with a HEAD
      and work on it again only if the digest changed; with ``retry_rejected`` a
      ``rejected`` tag is fetched again, changed or not.
    """
    if not tags:
        raise ValueError("a version has at least one tag")
    known = [records.get(tag) for tag in tags]
    latest = [record for record in known if record is not None]
    if len(latest) < len(known):
        return Fetch()
    if all(record.outcome in SETTLED for record in latest):
        return Recheck(latest[0]) if options.recheck_digests else Settled(latest[0])
    retry = RECHECKED - {Outcome.REJECTED} if options.retry_rejected else RECHECKED
    if all(record.outcome in SETTLED | retry for record in latest):
        return Recheck(next(record for record in latest if record.outcome in retry))
    return Fetch()


def after_head(step: Recheck, digest: str) -> Settled | Ended | Fetch:
    """What a HEAD of ``step.tag`` means for a version the state knows."""
    prior = step.prior
    if digest == prior.digest:
        return Settled(prior)
    if prior.outcome in (Outcome.IMPORTED, Outcome.EXISTS):
        return Ended(
            Outcome.REJECTED,
            f"tag moved from {prior.digest} to {digest}; Akua versions are immutable, "
            "publish a new SemVer instead",
            digest,
        )
    # Skipped, invalid or rejected before: never in Akua, the new content is simply new.
    return Fetch()


def split_tags(
    tags: Sequence[str], semver: str, digest: str, others: Mapping[str, str]
) -> tuple[list[str], list[tuple[str, Ended]]]:
    """Tags that stay with the version, and the others ended as rejected.

    ``digest`` is the preferred tag's (``tags[0]``); ``others`` maps each other tag to
    its digest.  Two tags claiming one SemVer with different content: only the
    preferred one counts.
    """
    kept = [tags[0]]
    conflicts: list[tuple[str, Ended]] = []
    for tag in tags[1:]:
        other = others[tag]
        if other == digest:
            kept.append(tag)
            continue
        reason = (
            f"tag {tag} maps to SemVer {semver} like {tags[0]}, but points to {other} "
            f"instead of {digest}"
        )
        conflicts.append((tag, Ended(Outcome.REJECTED, reason, other)))
    return kept, conflicts


def after_fetch(
    *,
    digest: str,
    problem: str | None,
    not_a_package: str | None,
    package_known: bool,
    options: Options,
) -> Ended | Planned | Write:
    """After the manifest was read and prepared.

    ``problem``: why no valid request could be built (the artifact is invalid);
    ``not_a_package``: why there is no request at all (no schema annotation), or None;
    ``package_known``: the state (or an earlier version of this run) knows the package.
    """
    if problem is not None:
        return Ended(Outcome.INVALID, problem, digest)
    if not_a_package is not None:
        return Ended(Outcome.SKIPPED, not_a_package, digest)
    action: Action = "create-version" if package_known else "import"
    return Write(action) if options.writes else Planned(action)


def recorded(options: Options, *, digest: str | None, from_state: bool) -> bool:
    """Whether an ending goes to the state: only in ``run``, only for a known digest
    (the state is per artifact), and never a repeat of what the state already says."""
    return options.writes and digest is not None and not from_state
