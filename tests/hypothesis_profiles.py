"""Two Hypothesis profiles: ``fast`` (the default) and ``full``.

Both start from the profile Hypothesis itself would have chosen (``default``, or ``ci``
where the ``CI`` variable is set), so derandomization, deadlines and the database stay
as they were; only the number of examples differs:

* ``full`` runs every property test's own count (Hypothesis's 100, or the
  ``examples(n)`` a test asks for). The slow lane loads it
  (``-m "slow or hypothesis" --hypothesis-profile=full``), so CI runs every property at
  full strength.
* ``fast`` runs a tenth of that count, at least one example: the fast lane, and any run
  that names no profile.

``tests/conftest.py`` imports this module first thing in ``pytest_configure``, before
any test module, so the profile is registered and loaded when the
``@settings``/``@given`` decorators are evaluated; pytest's ``--hypothesis-profile``
loads another right after, before collection.
"""

from __future__ import annotations

from hypothesis import settings

FAST_SHARE = 10  # the fast profile runs 1 in FAST_SHARE of a property test's examples

_BASE = settings.get_profile(settings.get_current_profile_name())
settings.register_profile("full", _BASE)
settings.register_profile("fast", _BASE, max_examples=max(1, _BASE.max_examples // FAST_SHARE))
settings.load_profile("fast")


def examples(full: int) -> int:
    """A property test's example count under the loaded profile: ``full`` under the full
    profile, the same share of it as the profile's default under any other (a tenth
    under ``fast``), at least one."""
    return max(1, full * settings().max_examples // settings.get_profile("full").max_examples)
