"""The root of every avrec error.

Each package (``encoders``, ``deploy.local``, ``streams``) has its own
``exceptions.py`` whose classes derive from :class:`AvrecError`, so a caller can
catch everything avrec raises with one ``except AvrecError``.
"""


class AvrecError(Exception):
    """Base class for all avrec errors. Messages say what to do about it."""


class ConfigError(AvrecError):
    """A setting is missing or inconsistent."""


class VectorStoreError(AvrecError):
    """Milvus rejected or could not complete an operation."""
