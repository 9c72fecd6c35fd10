"""ponder: a distributed engine for test-time compute."""

__version__ = "0.1.0"
