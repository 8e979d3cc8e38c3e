"""The root of nimbus's exception hierarchy.

Every error nimbus raises on purpose derives from `NimbusError`, so apps can catch one type and print a
clear message. Messages name what was wrong and never include secrets or message plaintext.
"""

from __future__ import annotations


class NimbusError(Exception):
    """Base class of every error nimbus raises on purpose."""


class MalformedData(NimbusError):
    """Data from the network or disk does not have the shape the spec requires."""
