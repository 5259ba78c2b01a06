"""Exceptions raised by the file bus."""


class BusError(Exception):
    """Base class of every bus error; its message is one line fit for an operator."""


class WriterLockedError(BusError):
    """A second writer tried to open a topic that already has one."""


class UnknownTopicError(BusError):
    """A topic name outside the contract was asked for."""


class BadRecord(BusError):
    """A record that cannot be delivered: unparseable, or failing its schema.

    ``reason`` says why; ``raw`` holds the text as it was read.
    """

    def __init__(self, reason: str, raw: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
