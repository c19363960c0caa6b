"""The hot path, shared by ``run`` and ``replay``: record bytes -> decision -> SQL -> dead letters.

Read in this order: :mod:`.decode` (bytes to a valid event or a rejection), :mod:`.apply` (valid
events to version-guarded SQL, one transaction; :mod:`.lanes` runs a batch as several, split by
row key), :mod:`.deadletter` (rejections to the dead-letter topic), :mod:`.batch` (one batch
through all of it; the caller commits the offsets).
"""
