"""Errors the user can fix. Each message is one line that says what to fix."""


class UserInputError(ValueError):
    """Bad input: a missing column, an empty completion, a prompt longer than the context, ..."""


class CacheMismatchError(UserInputError):
    """An artefact on disk was made for another model, data set or set of arguments."""


class CurvatureError(RuntimeError):
    """Curvature factors are unusable (NaN/Inf, not fitted)."""
