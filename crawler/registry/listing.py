"""Catalog and tag listings: Link headers, origins, and the pagination guard.

Pure: no I/O.  The client fetches pages; ``Pager`` decides, page by page,
what to ask next and when to stop, so every entry is seen exactly once
whatever a registry does with ``n``, ``last`` and ``Link``:

* follow ``Link: <...>; rel="next"`` (relative or absolute, any number of
  link-values and rel tokens in one header), within the registry's origin;
* a non-empty page without ``Link`` may be a silently capped one: ask once
  more with ``last=<final entry>`` (costs one request per listing when the
  listing really was complete);
* stop on an empty page, a page with nothing new, or a URL already fetched;
* cut a listing that never ends at ``max_entries`` or ``max_pages``
  (``ListingCut``, an ``InvalidArtifact``), so memory and time stay bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from crawler.registry.errors import RegistryProtocolError

PAGE_SIZE: Final = 1000  # n= asked first; distribution caps the catalog at 1000
# Smaller page sizes tried, in order, when a registry refuses n (distribution
# v3 answers 400 PAGINATION_NUMBER_INVALID above its maxentries).
SMALLER_PAGE_SIZES: Final = (500, 250, 100, 50, 25, 10, 5, 1)
# Caps for a listing that never ends.  Tags: far past any real package, and
# at most a few MB per repository held while it is listed.  Catalog: the
# names are kept to hand each out once.
MAX_TAGS: Final = 50_000
MAX_TAG_PAGES: Final = 5_000
MAX_REPOSITORIES: Final = 250_000
MAX_CATALOG_PAGES: Final = 10_000

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LINK_VALUE: Final = re.compile(r"<([^>]*)>((?:\s*;\s*[^,;<]+)*)")
_PARAM: Final = re.compile(r"""\s*([^=\s;]+)\s*(?:=\s*(?:"([^"]*)"|([^;,\s]*)))?""")


class ListingCut(RegistryProtocolError):
    """A listing went past its cap: the registry kept sending new pages."""


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port spelled out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # unparsable: matches nothing
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def links(values: list[str]) -> list[tuple[str, frozenset[str]]]:
    """Every (target, rel tokens) in the given ``Link`` header values (RFC 8288)."""
    found: list[tuple[str, frozenset[str]]] = []
    for value in values:
        for match in _LINK_VALUE.finditer(value):
            rels: set[str] = set()
            for param in _PARAM.finditer(match[2].replace(";", " ;")):
                if param[1].lower() == "rel":
                    rels.update((param[2] if param[2] is not None else param[3] or "").lower().split())
            found.append((match[1].strip(), frozenset(rels)))
    return found


def next_link(values: list[str], page_url: str) -> str | None:
    """The absolute URL of the first ``rel="next"`` link, resolved against the page."""
    for target, rels in links(values):
        if "next" in rels:
            return urljoin(page_url, target)
    return None


def with_query(url: str, **params: str | int) -> str:
    """``url`` with the given query parameters set (replaced if present), others kept."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend((k, str(v)) for k, v in params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def page_size(url: str) -> int | None:
    for key, value in parse_qsl(urlsplit(url).query):
        if key == "n" and value.isascii() and value.isdigit():
            return int(value)
    return None


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # as fetched (after any smaller page size)
    entries: list[str]
    link: str | None  # absolute next-page URL, checked to be on the registry


@dataclass(slots=True)
class Pager:
    """What to fetch next, and the entries not seen before, page by page."""

    what: str  # "tags" or "repositories", for messages
    where: str
    first_url: str
    max_entries: int
    max_pages: int
    next_url: str | None = None
    pages: int = 0
    stopped: str = ""  # why the listing ended, once it did
    probing: bool = False  # next_url is the speculative last= request
    _known: set[str] = field(default_factory=set)
    _fetched: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.next_url = self.first_url

    def take(self, page: Page) -> list[str]:
        """The page's new entries; sets ``next_url`` (None at the end) or raises ``ListingCut``."""
        self.pages += 1
        self._fetched.add(page.url)
        fresh: list[str] = []
        for entry in page.entries:
            if entry not in self._known:
                self._known.add(entry)
                fresh.append(entry)
        if len(self._known) > self.max_entries:
            raise ListingCut(
                f"{self.where}: listing cut at {self.max_entries} {self.what} (the cap); "
                "the registry kept sending new pages"
            )
        following: str | None = None
        self.probing = False
        if not page.entries:
            self.stopped = "empty page"
        elif not fresh:
            self.stopped = "page with nothing new"
        elif page.link is not None:
            following = page.link
        else:
            # No Link: the page may be capped without saying so; ask past its end.
            following = with_query(page.url, last=page.entries[-1])
            self.probing = True
        if following is not None and following in self._fetched:
            self.stopped, following = "next page already fetched", None
        if following is not None and self.pages >= self.max_pages:
            raise ListingCut(
                f"{self.where}: listing cut at {self.max_pages} pages (the cap); "
                "the registry kept sending new pages"
            )
        self.next_url = following
        return fresh

    def probe_refused(self) -> bool:
        """After an error on ``next_url``: True (listing complete) if it was only the probe.

        A registry that pages without Link but cannot take ``last=`` answers
        the probe with a 4xx; what it listed so far is then all there is.
        """
        if not self.probing:
            return False
        self.stopped, self.next_url, self.probing = "last= probe refused", None, False
        return True


__all__ = [
    "MAX_CATALOG_PAGES",
    "MAX_REPOSITORIES",
    "MAX_TAGS",
    "MAX_TAG_PAGES",
    "PAGE_SIZE",
    "SMALLER_PAGE_SIZES",
    "ListingCut",
    "Page",
    "Pager",
    "links",
    "next_link",
    "origin",
    "page_size",
    "with_query",
]
