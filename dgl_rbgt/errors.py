"""Errors caused by the user's input (recipes, files, options), as opposed to bugs.

The CLI prints these as one line and exits with status 2; anything else is a bug and keeps its
traceback.
"""
__all__ = ["EXIT_USER_ERROR", "UserError", "RecipeError", "CheckpointError", "TrainingDiverged"]


#: Exit status of the CLI and of every distributed process for a user mistake.
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and how to fix it."""


class RecipeError(UserError, ValueError):
    """A recipe that does not validate: the message names the key path, the value and what is allowed."""


class CheckpointError(UserError):
    """A checkpoint or run directory that cannot be used (missing, corrupt, or from another recipe)."""


class TrainingDiverged(UserError, RuntimeError):
    """Training produced a non-finite loss or gradient; the recipe's optimiser settings need a change.

    Raised before the optimiser step, so the parameters (and the run directory's checkpoints)
    are those of the last finite step.
    """
