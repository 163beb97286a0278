"""Every workaround for oras-py, in one place, each with its reason.

The crawler uses oras-py (the user's choice) as its registry client: its
``requests`` session, its auth backends (the token dance of Docker Hub-style
registries, Basic credentials, docker config) and its ``do_request``.  The
version the tests prove is pinned in pyproject.toml; each workaround below
has a canary in ``tests/test_oras_compat.py`` that fails when an oras-py
upgrade changes the behaviour it works around, so it can be dropped.

Workarounds (oras-py 0.2.43):

W1. ``Registry.do_request`` is wrapped in ``@retry``: it retries any
    exception (and turns a 500 into one) with sleeps of 3, 5, 11, 29 and
    83 s, so a refused connection looks like a two-minute hang.  We call the
    undecorated function (``__wrapped__``); ``crawler.registry.facade`` is the
    only layer that retries.
W2. No request carries a timeout, the auth backends' token requests
    included; and ``requests``' own timeouts are per socket read, which a
    server dripping one byte a second never trips.  The shared session gets
    ``crawler.deadline.DeadlineAdapter``: a total deadline per request, token
    requests included, and an abort the event loop can use.
W3. Every non-2xx answer is logged at ERROR through the ``oras`` logger,
    which has no handler (Python's last-resort handler prints it).  Those are
    outcomes we report ourselves, so the ``oras`` logger tree is silenced.
W4. The default token backend treats a Basic challenge's realm as a token
    URL; the basic backend cannot do tokens.  ``ChallengeAuth`` answers both,
    and sends Basic credentials pre-emptively once a registry asked for them
    (stock Basic costs two round trips per call).
W5. Token auth keeps the first token for every later scope, so a second
    repository or the catalog fails: on a 401 while holding a token we drop
    it and let the challenge fetch one for the new scope.
W6. ``do_request`` writes into the headers dict it is given: each attempt
    gets a fresh copy.
W7. Docker config credentials are loaded by some oras calls only (not
    ``get_tags``, not hand-made requests), oras' name parser mistakes
    ``localhost`` for a path, its loader ignores ``DOCKER_CONFIG`` and runs
    credential helpers without a timeout: ``crawler.credentials`` reads the
    config and runs the helpers instead, once, for the registry host itself.
W8. An unanswerable 401 challenge raises a bare ``ValueError``: ``send``
    turns it into ``AuthChallengeFailed``.
W9. With ``trust_env`` (the default), ``requests`` re-reads proxy variables,
    ``no_proxy`` and ``~/.netrc`` on every request; for one registry they are
    read once, at session creation (a measurable share of a crawl's CPU).
W10. The token backend sends the Basic credentials to whatever realm the
    registry's challenge names, over any scheme: ``ChallengeAuth`` checks the
    realm first (``crawler.registry.auth.check_realm``).
W11. ``do_request`` goes through ``Session.request``, which re-merges
    cookies, hooks, params, auth and environment settings and re-parses the
    URL on every call: about a fifth of a manifest request's client CPU.
    Manifest requests (URLs the client built) skip it: a prepared request
    with the header oras' auth holds goes to the same session's ``send``
    (same adapters, timeout, proxies, TLS settings, redirects); a 401/403
    is answered with oras' own auth backend (``authenticate_request``), as
    ``do_request`` does, without its extra unauthenticated try.
W12. oras holds one token at a time (W5), so manifests of several
    repositories read by one thread in turn (one pool over all manifests)
    would cost a 401 and a token request each time the repository changes.
    The lean path keeps the last good token per repository (LRU, 256); an
    expired one gets a 401 and is fetched again.
W13. Under ``Session.send`` a manifest request still costs about 0.85 ms of
    CPU (requests' adapter, urllib3's pool and response, ``http.client``
    parsing the head with the ``email`` package): more than the rest of an
    artifact's work together.  Unless a proxy applies to the registry, the
    lean path sends manifest requests over the thread's own connection
    (``crawler.registry.direct``: ``crawler.http1`` on a kept socket, the same deadline,
    abort, TLS settings and error classes); a redirect or an encoded body
    is handed back to the session.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Final

import oras.auth
import oras.auth.utils
import oras.provider
import requests
from requests.structures import CaseInsensitiveDict

from crawler.api.proxy import env_proxy
from crawler.deadline import DeadlineAdapter
from crawler.registry import auth as credentials
from crawler.registry.direct import DirectLine
from crawler.registry.endpoint import RegistryEndpoint

# W3: oras logs every non-2xx answer (404 for a missing tag included) at ERROR.
_oras_log = logging.getLogger("oras")
_oras_log.addHandler(logging.NullHandler())
_oras_log.propagate = False
_oras_log.setLevel(logging.CRITICAL + 1)


# W12: tokens kept per repository by one session (LRU); a token is a few hundred bytes.
MAX_CACHED_TOKENS: Final = 256


def _repository_of(url: str) -> str:
    """The repository of a ``/v2/<name>/manifests/<reference>`` URL."""
    return url.partition("/v2/")[2].rpartition("/manifests/")[0]


class AuthChallengeFailed(Exception):
    """oras gave up on a 401 challenge (W8); carries no credentials."""


class ChallengeAuth(oras.auth.TokenAuth):  # type: ignore[misc]
    """W4: oras token auth that also answers ``Basic`` challenges (htpasswd registries).

    Which one a registry wants is only known from its challenge.
    """

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        super().__init__()
        self.basic_scheme = False
        self._endpoint = endpoint

    def basic_header(self) -> str | None:
        encoded = getattr(self, "_basic_auth", None)
        return f"Basic {encoded}" if encoded else None

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str], refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        challenge = original.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme != "basic":
            fetching = scheme == "bearer" and not (self.token and not refresh)
            if fetching and getattr(self, "_basic_auth", None):
                # W10: a token request is coming, carrying the credentials.
                realm = oras.auth.utils.parse_auth_header(challenge).realm or ""
                if not realm.startswith("http"):
                    realm = f"{self.prefix}://{realm}"  # what oras itself will fetch
                credentials.check_realm(realm, self._endpoint)
            result: tuple[dict[str, str], bool] = super().authenticate_request(
                original, headers, refresh
            )
            return result
        self.basic_scheme = True
        header = self.basic_header()
        if header is None:
            return headers or {}, False
        return {**(headers or {}), "Authorization": header}, True


class OrasSession(oras.provider.Registry):  # type: ignore[misc]
    """oras' Registry with one attempt per request and a fresh token per scope."""

    def __init__(self, endpoint: RegistryEndpoint) -> None:
        super().__init__(
            hostname=endpoint.host,
            insecure=endpoint.plain_http,
            tls_verify=not endpoint.insecure,
        )
        adapter = DeadlineAdapter(endpoint.timeout_s)  # W2
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # W9: read proxies, no_proxy and the CA bundle once, then stop requests
        # from reading the environment (and ~/.netrc) on every request.
        self.session.proxies.update(requests.utils.get_environ_proxies(endpoint.base_url))
        if (endpoint.plain_http and not endpoint.allow_plain_http_credentials
                and (endpoint.username is not None or endpoint.use_docker_config)
                and env_proxy(endpoint.base_url, os.environ) is None):
            # Credentials over plain HTTP: config checked the route with env_proxy (NO_PROXY as
            # httpx reads it); go direct whenever it said "direct", so check and traffic agree.
            self.session.proxies.clear()
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if endpoint.ca_file:  # the configured CA wins over the environment's
            ca_bundle = endpoint.ca_file
        if ca_bundle and not endpoint.insecure:
            self._tls_verify = ca_bundle  # oras passes it to every request as verify=
        if endpoint.client_cert and endpoint.client_key:
            # requests merges the session's client certificate into every request, the
            # token dance's included (the auth backend shares this session).
            self.session.cert = (endpoint.client_cert, endpoint.client_key)
        self.session.trust_env = False
        # W4: same wiring as oras.auth.get_auth_backend, with our backend.
        auth = ChallengeAuth(endpoint)
        auth.session = self.session
        auth.prefix = self.prefix
        auth._tls_verify = self._tls_verify
        self.auth = auth
        credentials.apply(auth, endpoint)  # W7
        self._tokens: OrderedDict[str, str] = OrderedDict()  # W12: repository -> token
        # W13: manifests over the thread's own connection, unless a proxy applies.
        self._max_manifest_bytes = endpoint.max_manifest_bytes
        self._direct: DirectLine | None = None
        if requests.utils.select_proxy(endpoint.base_url + "/v2/", self.session.proxies) is None:
            self._direct = DirectLine(endpoint.base_url, timeout_s=endpoint.timeout_s,
                                      verify=self._tls_verify, cert=self.session.cert)

    @property
    def challenge_auth(self) -> ChallengeAuth:
        auth: ChallengeAuth = self.auth
        return auth

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        attempt = oras.provider.Registry.do_request.__wrapped__  # W1
        auth = self.challenge_auth

        def once() -> requests.Response:
            fresh = dict(headers or {})  # W6
            basic = auth.basic_header() if auth.basic_scheme else None
            if basic is not None:
                fresh["Authorization"] = basic  # W4: skip the 401 round trip
            response: requests.Response = attempt(self, url, method, data, fresh, json, stream)
            return response

        response = once()
        if response.status_code == 401 and auth.token:
            # W5: drop the token of another scope and let the challenge fetch one.
            response.close()
            auth.token = None
            response = once()
        return response

    def send(
        self, method: str, url: str, accept: str, *, stream: bool, lean: bool = False
    ) -> requests.Response:
        """One request through oras; transport errors propagate as ``requests`` exceptions.

        ``lean`` (W11) is for URLs the client built itself (manifests): the
        request goes straight to the session's ``send`` with the auth header
        oras holds; a 401/403 is answered with oras' auth backend.
        """
        if lean:
            return self._lean_with_challenge(method, url, accept, stream)
        try:
            return self.do_request(url, method, headers={"Accept": accept}, stream=stream)
        except requests.RequestException:
            raise
        except ValueError as exc:
            # W8: oras raises a bare ValueError when it cannot answer a 401
            # challenge: no credentials, or the token endpoint refused them.
            raise AuthChallengeFailed(str(exc)) from exc

    def _lean_with_challenge(
        self, method: str, url: str, accept: str, stream: bool
    ) -> requests.Response:
        auth = self.challenge_auth
        key = _repository_of(url)
        # W12: the token this thread last used for the repository, else oras' current one.
        used = self._tokens.get(key) or auth.token
        headers = {"Accept": accept}
        if used:
            headers["Authorization"] = f"Bearer {used}"
        elif auth.basic_scheme and (basic := auth.basic_header()) is not None:
            headers["Authorization"] = basic
        response = self._lean(method, url, headers, stream)
        for refresh in (False, True):  # as oras' do_request: the challenge, then once on 403
            if response.status_code not in (401, 403) or (refresh and response.status_code != 403):
                break
            self._tokens.pop(key, None)
            if response.status_code == 401:
                auth.token = None  # W5: a token of another scope (or expired)
            try:
                headers, changed = auth.authenticate_request(
                    response, {"Accept": accept}, refresh=refresh
                )
            except requests.RequestException:
                response.close()
                raise
            except ValueError as exc:  # W8, from the token request
                response.close()
                raise AuthChallengeFailed(str(exc)) from exc
            if not changed:
                if refresh:
                    return response
                response.close()
                raise AuthChallengeFailed("Cannot respond to request for authentication.")
            response.close()
            used = auth.token
            response = self._lean(method, url, headers, stream)
        if used and response.status_code < 400:
            self._tokens[key] = used
            self._tokens.move_to_end(key)
            while len(self._tokens) > MAX_CACHED_TOKENS:
                self._tokens.popitem(last=False)
        return response

    def _lean(
        self, method: str, url: str, headers: dict[str, str], stream: bool
    ) -> requests.Response:
        merged = CaseInsensitiveDict(self.session.headers)
        merged.update(headers)
        if self._direct is not None:  # W13
            answer = self._direct.send(method, url, merged, self._max_manifest_bytes)
            if answer is not None:
                return answer
        request = requests.PreparedRequest()
        request.method = method
        request.url = url  # built by the client: already quoted, no params
        request.headers = merged
        request.body = None
        request.hooks = {"response": []}
        response: requests.Response = self.session.send(
            request,
            stream=stream,
            verify=self._tls_verify,
            cert=self.session.cert,
            proxies=self.session.proxies,
        )
        return response

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self.session.close()

    def secrets(self) -> tuple[str | None, ...]:
        """What this session holds that must never appear in a message."""
        auth = self.challenge_auth
        return (getattr(auth, "_basic_auth", None), auth.token)


__all__ = ["AuthChallengeFailed", "ChallengeAuth", "OrasSession"]
