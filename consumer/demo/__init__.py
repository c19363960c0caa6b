"""The demo: realistic sample traffic (:mod:`.sample`) and ``routing-persistence demo``."""
