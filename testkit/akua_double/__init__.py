"""A local double of the Akua packages API (``/v1/packages...``) for tests.

It enforces the contract of ``crawler.contract`` strictly and can inject the
faults a crawler must survive: rate limits with ``Retry-After``, 5xx, answers
lost after (or before) a commit, proxy HTML pages, another error envelope.
Run it in process (``AkuaDouble``) or as ``python -m testkit.akua_double``.
"""

from .core import AkuaCore
from .server import AkuaDouble
from .store import Duplicates
from .switches import Switches
from .wire import Received

__all__ = ["AkuaCore", "AkuaDouble", "Duplicates", "Received", "Switches"]
