"""User-facing errors: each carries one readable line that names the key or the file at fault."""


class RnnlabError(Exception):
    """Base class of errors caused by the user's input rather than by a bug."""


class ConfigError(RnnlabError, ValueError):
    """A bad value in the composed config."""


class DataError(RnnlabError, ValueError):
    """A data file or data package that cannot be used."""
