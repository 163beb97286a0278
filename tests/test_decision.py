"""The exactly-once rules for one version, row by row (README: "State first").

Each row: what the state recorded for the version's tags (preferred tag first),
the run's options, and the step the rules prescribe.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from crawler.decision import (
    Ended,
    Fetch,
    Options,
    Planned,
    Recheck,
    Settled,
    Write,
    after_fetch,
    after_head,
    decide,
    recorded,
    split_tags,
)
from crawler.outcomes import Outcome
from crawler.state import ItemRecord

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64

RUN = Options(writes=True)
PLAN = Options(writes=False)
RECHECK = Options(writes=True, recheck_digests=True)
RETRY = Options(writes=True, retry_rejected=True)


def record(tag: str, outcome: Outcome, digest: str = OLD, reason: str = "") -> ItemRecord:
    return ItemRecord(
        registry="r.example", repository="team/app", tag=tag, digest=digest, semver="1.0.0",
        outcome=outcome, reason=reason, package_id="pkg-1" if outcome is Outcome.IMPORTED else None,
    )


@dataclass(frozen=True)
class Row:
    rule: str
    state: dict[str, Outcome | None]  # tag -> latest recorded outcome (None: not in the state)
    options: Options
    step: type


FIRST_STEP = [
    # "Imported or exists: settled. SemVer tags are immutable, so no registry or API request."
    Row("imported is settled", {"1.0.0": Outcome.IMPORTED}, RUN, Settled),
    Row("exists is settled", {"1.0.0": Outcome.EXISTS}, RUN, Settled),
    Row("skipped (no schema) is settled", {"1.0.0": Outcome.SKIPPED}, RUN, Settled),
    Row("settled in plan too", {"1.0.0": Outcome.IMPORTED}, PLAN, Settled),
    Row("every tag of the version settled", {"1.0.0": Outcome.IMPORTED, "v1.0.0": Outcome.EXISTS},
        RUN, Settled),
    # "Invalid or rejected: one HEAD; worked on again only if the digest changed."
    Row("invalid is rechecked", {"1.0.0": Outcome.INVALID}, RUN, Recheck),
    Row("rejected is rechecked", {"1.0.0": Outcome.REJECTED}, RUN, Recheck),
    Row("settled plus rejected is rechecked", {"1.0.0": Outcome.IMPORTED, "v1.0.0": Outcome.REJECTED},
        RUN, Recheck),
    # "Failed, or not in the state: read the manifest."
    Row("failed is fetched", {"1.0.0": Outcome.FAILED}, RUN, Fetch),
    Row("unknown is fetched", {"1.0.0": None}, RUN, Fetch),
    Row("one tag unknown: fetched", {"1.0.0": Outcome.IMPORTED, "v1.0.0": None}, RUN, Fetch),
    Row("one tag failed: fetched", {"1.0.0": Outcome.INVALID, "v1.0.0": Outcome.FAILED}, RUN, Fetch),
    # "An ignored item is looked at again on every run (its manifest is read)."
    Row("ignored is fetched", {"1.0.0": Outcome.IGNORED}, RUN, Fetch),
    # "--recheck-digests: one HEAD per imported tag."
    Row("recheck-digests HEADs imported", {"1.0.0": Outcome.IMPORTED}, RECHECK, Recheck),
    Row("recheck-digests HEADs skipped", {"1.0.0": Outcome.SKIPPED}, RECHECK, Recheck),
    # "--retry-rejected: rejected items are worked on again, changed or not."
    Row("retry-rejected fetches rejected", {"1.0.0": Outcome.REJECTED}, RETRY, Fetch),
    Row("retry-rejected still HEADs invalid", {"1.0.0": Outcome.INVALID}, RETRY, Recheck),
    Row("retry-rejected leaves imported settled", {"1.0.0": Outcome.IMPORTED}, RETRY, Settled),
]


@pytest.mark.parametrize("row", FIRST_STEP, ids=[row.rule for row in FIRST_STEP])
def test_first_step(row: Row) -> None:
    tags = list(row.state)
    records = {tag: None if o is None else record(tag, o) for tag, o in row.state.items()}
    assert type(decide(tags, records, row.options)) is row.step


def test_settled_reports_what_the_state_says() -> None:
    imported = decide(["1.0.0"], {"1.0.0": record("1.0.0", Outcome.IMPORTED)}, RUN)
    assert isinstance(imported, Settled)
    assert (imported.outcome, imported.reason) == (Outcome.EXISTS, "imported by an earlier run")
    skipped = decide(["1.0.0"], {"1.0.0": record("1.0.0", Outcome.SKIPPED, reason="no input schema")},
                     RUN)
    assert isinstance(skipped, Settled)
    assert (skipped.outcome, skipped.reason) == (Outcome.SKIPPED, "no input schema")


def test_recheck_compares_with_the_rejected_or_invalid_record() -> None:
    step = decide(
        ["1.0.0", "v1.0.0"],
        {"1.0.0": record("1.0.0", Outcome.IMPORTED),
         "v1.0.0": record("v1.0.0", Outcome.REJECTED, digest=NEW)},
        RUN,
    )
    assert isinstance(step, Recheck)
    assert step.prior.tag == "v1.0.0"


def test_preferred_imported_other_tag_rejected_heads_the_other_and_settles() -> None:
    # README "What a re-run does": a version whose second tag was rejected as a conflict
    # costs one HEAD of that tag, nothing else.
    step = decide(
        ["1.0.0", "v1.0.0"],
        {"1.0.0": record("1.0.0", Outcome.IMPORTED, digest=OLD),
         "v1.0.0": record("v1.0.0", Outcome.REJECTED, digest=NEW)},
        RUN,
    )
    assert isinstance(step, Recheck)
    assert step.tag == "v1.0.0"
    after = after_head(step, NEW)
    assert isinstance(after, Settled)
    assert (after.prior.tag, after.outcome) == ("v1.0.0", Outcome.REJECTED)


@pytest.mark.parametrize(
    ("prior", "digest", "expected"),
    [
        # unchanged digest: what the state says still holds
        (Outcome.INVALID, OLD, Settled),
        (Outcome.REJECTED, OLD, Settled),
        (Outcome.IMPORTED, OLD, Settled),
        # the publisher changed an invalid or rejected artifact: work on it again
        (Outcome.INVALID, NEW, Fetch),
        (Outcome.REJECTED, NEW, Fetch),
        # skipped before (never in Akua): the new content is simply new
        (Outcome.SKIPPED, NEW, Fetch),
        # an imported tag moved: Akua versions are immutable, so it is rejected
        (Outcome.IMPORTED, NEW, Ended),
        (Outcome.EXISTS, NEW, Ended),
    ],
)
def test_after_head(prior: Outcome, digest: str, expected: type) -> None:
    step = after_head(Recheck(record("1.0.0", prior)), digest)
    assert type(step) is expected
    if isinstance(step, Ended):
        assert step.outcome is Outcome.REJECTED
        assert step.digest == NEW
        assert f"tag moved from {OLD} to {NEW}" in step.reason
        assert "publish a new SemVer" in step.reason
    if isinstance(step, Settled):
        assert step.prior.digest == OLD


def test_tags_naming_one_semver_with_other_content_are_rejected() -> None:
    kept, conflicts = split_tags(
        ["1.0.0", "v1.0.0", "1.0.0_x"], "1.0.0", OLD, {"v1.0.0": OLD, "1.0.0_x": NEW}
    )
    assert kept == ["1.0.0", "v1.0.0"]
    [(tag, ended)] = conflicts
    assert tag == "1.0.0_x"
    assert (ended.outcome, ended.digest) == (Outcome.REJECTED, NEW)
    assert ended.reason == (
        f"tag 1.0.0_x maps to SemVer 1.0.0 like 1.0.0, but points to {NEW} instead of {OLD}"
    )


@pytest.mark.parametrize(
    ("problem", "not_a_package", "package_known", "options", "expected"),
    [
        ("annotation 'k': not JSON", None, False, RUN,
         Ended(Outcome.INVALID, "annotation 'k': not JSON", OLD)),
        (None, "no input schema", False, RUN, Ended(Outcome.SKIPPED, "no input schema", OLD)),
        (None, "no input schema", False, PLAN, Ended(Outcome.SKIPPED, "no input schema", OLD)),
        # the lowest SemVer of a package the state does not know is imported ...
        (None, None, False, RUN, Write("import")),
        (None, None, False, PLAN, Planned("import")),
        # ... every later one is created as a version
        (None, None, True, RUN, Write("create-version")),
        (None, None, True, PLAN, Planned("create-version")),
    ],
)
def test_after_fetch(
    problem: str | None, not_a_package: str | None, package_known: bool, options: Options,
    expected: object,
) -> None:
    step = after_fetch(
        digest=OLD, problem=problem, not_a_package=not_a_package, package_known=package_known,
        options=options,
    )
    assert step == expected


def test_planned_reason() -> None:
    assert Planned("create-version").reason == "would create-version"


@pytest.mark.parametrize(
    ("options", "digest", "from_state", "expected"),
    [
        (RUN, OLD, False, True),  # a run records every ending it knows the artifact of
        (RUN, None, False, False),  # no digest (tag list failed, non-SemVer tag): per artifact only
        (RUN, OLD, True, False),  # settled by the state: nothing new to record
        (PLAN, OLD, False, False),  # plan writes nothing
    ],
)
def test_recorded(options: Options, digest: str | None, from_state: bool, expected: bool) -> None:
    assert recorded(options, digest=digest, from_state=from_state) is expected


def test_a_version_has_a_tag() -> None:
    with pytest.raises(ValueError, match="at least one tag"):
        decide([], {}, RUN)
