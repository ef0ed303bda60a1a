"""User-facing errors: what the command-line tools report in one line, exit code 2."""

import argparse
import sys


class InputError(ValueError):
    """Bad user input (path, flag, budget, model). The CLIs print it and exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single line on stderr, exit 2."""

    def error(self, message):
        fail(message, prog=self.prog)


def fail(message, prog=None) -> "NoReturn":  # noqa: F821
    """Print ``prog: error: message`` on one line to stderr and exit with status 2."""
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{prog or sys.argv[0]}: error: {text}", file=sys.stderr)
    sys.exit(2)
