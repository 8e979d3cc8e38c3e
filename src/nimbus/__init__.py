"""nimbus: a privacy-first, decentralized Matrix messenger.

Layers (imports point one way, checked by import-linter in the tests):
types <- api <- crypto <- store <- client <- ai <- apps. `homeserver` stands alone.
"""

__version__ = "0.1.0"
