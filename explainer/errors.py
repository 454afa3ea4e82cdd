"""The package's exception types and the exit status the command line gives each.

===================  ======  =====================================================
exception            exit    meaning
===================  ======  =====================================================
``InputError``       2       the user gave something we cannot use (a missing file,
                             a non-classifier model, a bad option)
``CapabilityError``  2       an ``InputError``: the model lacks a capability the
                             method needs; the message names the fix
``ModelError``       3       the model failed while running (a runtime error, NaN
                             or a wrongly shaped output)
``ServerError``      3       a server (Triton) could not be reached or failed a
                             request after its retries; a ``ModelError``
===================  ======  =====================================================

Library callers tell them apart by type: ``except InputError`` (also a ``ValueError``)
versus ``except ModelError`` (also a ``RuntimeError``).
"""


class ExplainerError(Exception):
    """Base of every error the package raises on purpose; ``exit_code`` is the CLI's status."""

    exit_code = 1


class InputError(ExplainerError, ValueError):
    """Bad input from the user: a missing file, a non-classifier model, a bad option.

    The command line prints its message on one line and exits with status 2.
    """

    exit_code = 2


class CapabilityError(InputError):
    """The model cannot do what a method asks (no gradients, no layers, no ONNX file...); the
    message names the fix (an export command, another method or backend). Exit status 2."""


class ModelError(ExplainerError, RuntimeError):
    """The model failed while running; the command line prints one line and exits with status 3."""

    exit_code = 3


class ServerError(ModelError):
    """A model server was unreachable or failed a request (after retries); exit status 3."""


EXIT_CODES = {"ok": 0, "internal": 1, "input": InputError.exit_code, "model": ModelError.exit_code,
              "interrupted": 130}
