"""The base of every user-facing error: the CLI prints these as one line, no traceback.

Exit codes follow the shell's convention: 2 for usage errors (a bad option, config key or
value: :class:`UsageError`), 1 for everything that went wrong while running, 130 after Ctrl-C,
141 when the reader of the output went away (``| head``).
"""

from __future__ import annotations

__all__ = ["SimsiamHubError", "UsageError", "MissingExtraError", "import_extra"]


class SimsiamHubError(Exception):
    """Bad input or a failed operation, said clearly: what was expected and what was found."""

    exit_code = 1


class UsageError(SimsiamHubError, ValueError):
    """The command was asked for something it does not take (exit code 2)."""

    exit_code = 2


class MissingExtraError(SimsiamHubError, ImportError):
    """A feature whose packages are in an install extra that is not installed."""


def import_extra(module: str, extra: str, what: str, package: str | None = None):
    """``import module``, or a one-line error naming the extra that installs it: the core
    install (loading weights) carries no training, logging or plotting packages."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{what} needs {package or module.split('.')[0]}, which is not installed: pip install 'simsiam-hub[{extra}]'"
        ) from None


INTERRUPTED_EXIT = 130  # the shell's 128 + SIGINT
CLOSED_OUTPUT_EXIT = 141  # the shell's 128 + SIGPIPE: the reader of stdout went away (`| head`)


def exit_process(code: int):
    """End a command-line process with ``code``; after Ctrl-C, at once: without waiting for the
    threads a library left running (huggingface_hub's download pool joins the downloads under
    way at exit). Streams and log handlers are flushed first, and every write is atomic."""
    import logging
    import os
    import sys

    if code == INTERRUPTED_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def run_command(prog: str, func, *args) -> int:
    """Run one command-line entry point (``simsiam-hub COMMAND``, the transfer scripts) the one way:
    a :class:`SimsiamHubError` is printed as ``PROG: error: ...`` (no traceback) and gives its exit
    code; Ctrl-C is one line and exit 130 (every write is atomic, so nothing partial is left under a
    final name); a reader of stdout that went away (``| head``) ends it quietly, exit 141, as it
    ends Unix tools."""
    import os
    import sys

    try:
        code = func(*args)
        sys.stdout.flush()  # a closed stdout shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # stdout's reader (a network failure reaches here as its client's own error)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        return CLOSED_OUTPUT_EXIT
    except SimsiamHubError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code  # 2 usage, 1 runtime, 128 + N for a run stopped by signal N
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C); no partial file is left under a final name", file=sys.stderr)
        return INTERRUPTED_EXIT
