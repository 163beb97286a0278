"""Listings paged every way real registries page them, through a loopback
paginating proxy in front of a real docker-registry: each sees every
repository and tag exactly once, or stops with a named reason."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from crawler.registry import (
    MAX_TAGS,
    ListingCut,
    Registry,
    RegistryEndpoint,
    RegistryProtocolError,
)
from crawler.registry.listing import Page, Pager, links, next_link, origin, with_query
from testkit.paginating_proxy import PaginatingProxy, Paging
from testkit.registry import LocalRegistry, Seeder
from tests.plugins.registry import seeded_once

REPOSITORIES = [f"pages/r{i:03d}" for i in range(230)]
TAGS = sorted({f"1.{i}.0" for i in range(230)} | {"latest", "v2.0.0"})
TAGGED = "pages/r000"


def seed_pages(seeder: Seeder) -> None:
    seeder.add_artifact(TAGGED, TAGS)
    for name in REPOSITORIES[1:]:  # only ever listed: the catalog needs no artifact
        seeder.add_listed_repository(name)


@pytest.fixture(scope="module")
def paged_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Seeded once for the module: every test here only lists it, through its own proxy."""
    with seeded_once(tmp_path_factory, seed_pages) as registry:
        yield registry


def listed(host: str) -> tuple[list[str], list[str], dict[str, int]]:
    async def go() -> tuple[list[str], list[str], dict[str, int]]:
        endpoint = RegistryEndpoint(host=host, plain_http=True, timeout_s=5.0)
        async with Registry(endpoint) as registry:
            names = [name async for name in registry.repositories()]
            tags = await registry.tags(TAGGED)
            return names, tags, dict(registry.statistics().requests)

    return anyio.run(go)


@pytest.mark.parametrize(
    ("paging", "most_catalog_requests"),
    [
        pytest.param(Paging(cap=100, link="relative"), 4, id="n-capped-at-100-relative-link"),
        pytest.param(Paging(cap=40, short_by=3, link="absolute"), 8, id="fewer-than-asked-absolute"),
        pytest.param(Paging(cap=100, link="opaque"), 4, id="opaque-next-page-token"),
        pytest.param(Paging(cap=100, link="multi-rel"), 4, id="several-rel-values"),
        pytest.param(Paging(cap=100, last_page="same-url"), 4, id="last-page-forever-same-url"),
        pytest.param(Paging(cap=100, last_page="new-url"), 4, id="last-page-forever-new-url"),
        pytest.param(Paging(cap=1000, max_entries=100), 7, id="v3-maxentries"),
        pytest.param(Paging(cap=100, link="none"), 4, id="no-link-at-all"),
    ],
)
def test_every_repository_and_tag_exactly_once(
    paged_registry: LocalRegistry, paging: Paging, most_catalog_requests: int
) -> None:
    with PaginatingProxy(paged_registry.host, paging) as proxy:
        names, tags, requests = listed(proxy.host)
    assert names == REPOSITORIES  # each once, in order
    assert sorted(tags) == TAGS and len(tags) == len(TAGS)
    assert requests["catalog"] <= most_catalog_requests  # bounded: pages, refusals, one probe


def test_refused_page_size_is_remembered(paged_registry: LocalRegistry) -> None:
    with PaginatingProxy(paged_registry.host, Paging(cap=1000, max_entries=100)) as proxy:
        listed(proxy.host)
        refused = [r for r in proxy.requests if "n=1000" in r or "n=500" in r or "n=250" in r]
    # 1000, 500 and 250 are refused once for the catalog; the tag listing starts at 100.
    assert len(refused) == 3


def test_a_link_to_another_host_stops_with_the_reason(paged_registry: LocalRegistry) -> None:
    with PaginatingProxy(paged_registry.host, Paging(cap=100, link="foreign")) as proxy:
        with pytest.raises(RegistryProtocolError) as caught:
            listed(proxy.host)
        reason = str(caught.value)
        assert reason == (
            f"{proxy.host} catalog: the next-page Link points off the registry (127.0.0.2:9)")
        assert not any("127.0.0.2" in line for line in proxy.requests)


@pytest.fixture
def default_port_address() -> Iterator[str]:
    """A loopback address of our own on port 80 (the tests run as root here)."""
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    yield address


@pytest.mark.parametrize("spelled_out", [True, False], ids=["host:80", "host"])
def test_default_port_spelled_out_or_not_is_the_same_origin(
    paged_registry: LocalRegistry, default_port_address: str, spelled_out: bool
) -> None:
    # host:80 configured, Links without the port; and the other way round.
    style = "bare-host" if spelled_out else "absolute"
    try:
        proxy = PaginatingProxy(paged_registry.host, Paging(cap=100, link=style),
                                bind=default_port_address, port=80)
    except PermissionError:
        pytest.fail("binding port 80 on loopback needs root (or CAP_NET_BIND_SERVICE)")
    with proxy:
        host = f"{default_port_address}:80" if spelled_out else default_port_address
        names, tags, _ = listed(host)
    assert names == REPOSITORIES
    assert sorted(tags) == TAGS


def test_an_endless_tag_listing_is_cut_at_the_cap(paged_registry: LocalRegistry) -> None:
    with PaginatingProxy(paged_registry.host, Paging(cap=1000, endless=True)) as proxy:

        async def go() -> None:
            endpoint = RegistryEndpoint(host=proxy.host, plain_http=True, timeout_s=5.0)
            async with Registry(endpoint) as registry:
                await registry.tags(TAGGED)

        with pytest.raises(ListingCut) as caught:
            anyio.run(go)
        pages = len(proxy.requests)
    assert str(caught.value) == (
        f"{proxy.host}/{TAGGED} tags: listing cut at {MAX_TAGS} tags (the cap); "
        "the registry kept sending new pages")
    assert pages == MAX_TAGS // 1000 + 1


# -- the pure parts


def test_link_headers_with_several_values_and_rel_tokens() -> None:
    header = '</v2/_catalog?n=1>; rel="first", </v2/_catalog?last=b>; rel="nofollow next"'
    assert links([header]) == [
        ("/v2/_catalog?n=1", frozenset({"first"})),
        ("/v2/_catalog?last=b", frozenset({"nofollow", "next"})),
    ]
    assert next_link([header], "http://h:5000/v2/_catalog?n=1") == (
        "http://h:5000/v2/_catalog?last=b")
    assert next_link(['<list?last=x>;rel=next'], "https://h/v2/r/tags/list?n=5") == (
        "https://h/v2/r/tags/list?last=x")
    assert next_link(['</a>; rel="prev"'], "https://h/") is None
    assert next_link([], "https://h/") is None


def test_origins_normalise_the_default_port() -> None:
    assert origin("https://Registry.Example/v2/") == origin("https://registry.example:443/x")
    assert origin("http://h/") == origin("http://h:80/")
    assert origin("https://h:80/") != origin("http://h:80/")
    assert origin("https://h:5000/") != origin("https://h/")


def test_pager_stops_on_loops_and_cuts_endless_listings() -> None:
    pager = Pager("tags", "h/r tags", "http://h/a", max_entries=5, max_pages=3)
    assert pager.take(Page("http://h/a", ["1", "2"], "http://h/b")) == ["1", "2"]
    assert pager.take(Page("http://h/b", ["2", "3"], "http://h/a")) == ["3"]
    assert (pager.next_url, pager.stopped) == (None, "next page already fetched")

    probing = Pager("tags", "h/r tags", "http://h/a?n=2", max_entries=10, max_pages=10)
    probing.take(Page("http://h/a?n=2", ["1", "2"], None))
    assert probing.next_url == with_query("http://h/a?n=2", last="2") and probing.probing
    assert probing.probe_refused() and probing.next_url is None

    endless = Pager("repositories", "h catalog", "http://h/0", max_entries=100, max_pages=3)
    endless.take(Page("http://h/0", ["a"], "http://h/1"))
    endless.take(Page("http://h/1", ["b"], "http://h/2"))
    with pytest.raises(ListingCut, match="listing cut at 3 pages"):
        endless.take(Page("http://h/2", ["c"], "http://h/3"))
    big = Pager("repositories", "h catalog", "http://h/0", max_entries=2, max_pages=9)
    with pytest.raises(ListingCut, match="listing cut at 2 repositories"):
        big.take(Page("http://h/0", ["a", "b", "c"], None))


def test_plan_ends_an_endless_repository_invalid_and_exits_1(
    paged_registry: LocalRegistry, cli: Any, tmp_path: Any
) -> None:
    with PaginatingProxy(paged_registry.host, Paging(cap=1000, endless=True)) as proxy:
        result = cli(["plan", "--registry", proxy.host, "--plain-http", "--repository", TAGGED,
                      "--state", str(tmp_path / "state.db"), "--log-format", "json"])
    assert result.status == 1
    problems = [e for e in result.events if e.get("event") == "item.invalid"]
    assert len(problems) == 1 and problems[0]["repository"] == TAGGED
    assert f"listing cut at {MAX_TAGS} tags (the cap)" in problems[0]["reason"]
    # 50,000 tags that are not SemVer: not one log line each at the default level.
    assert len(result.events) < 20


def test_head_without_a_digest_header_falls_back_to_a_get(
    seeder: Seeder, registry_factory: Any, akua: Any, cli: Any, tmp_path: Any
) -> None:
    """A registry whose HEAD omits Docker-Content-Digest: a version tagged X and vX
    still imports once (the second tag's digest from a GET), instead of ending invalid."""
    from testkit.registry import package_annotations as notes

    digest = seeder.add_artifact("nohead/pkg", ["1.0.0", "v1.0.0"],
                                 annotations=notes({"type": "object"}, None))
    registry = registry_factory()
    with PaginatingProxy(registry.host, Paging(cap=1000, head_digest=False)) as proxy:
        result = cli(["run", "--registry", proxy.host, "--plain-http", "--state",
                      str(tmp_path / "state.db"), "--log-format", "json",
                      "--api-url", akua.url], env={"AKUA_API_TOKEN": akua.switches.token})
        heads = [r for r in proxy.requests if r.startswith("HEAD ")]
        gets = [r for r in proxy.requests if r.startswith("GET /v2/nohead/pkg/manifests/")]
    assert result.status == 0, result.stderr[-2000:]
    imported = result.named("item.imported")
    assert len(imported) == 1 and imported[0]["digest"] == digest
    assert [body["version"]["ref"] for body in (r.body for r in akua.writes())] == [digest]
    assert heads == ["HEAD /v2/nohead/pkg/manifests/v1.0.0"]
    assert sorted(gets) == ["GET /v2/nohead/pkg/manifests/1.0.0",
                            "GET /v2/nohead/pkg/manifests/v1.0.0"]
