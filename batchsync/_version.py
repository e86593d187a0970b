"""The batchsync version, in one place for the package, the User-Agent and the report."""

__version__ = "0.1.0"
