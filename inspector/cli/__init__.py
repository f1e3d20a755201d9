"""The command line: the only entry point. ``inspector --help`` lists the commands.

Exit codes: 0 ok, 2 bad usage or configuration (the message names the key and why), 1 runtime
failure.

* :mod:`.app`: the parser of every command, :func:`main` and :func:`entry` (the console
  script, ``python -m inspector``): logging, and what a command raises as one error line;
* :mod:`.options`: what the commands' parsers share (help formatter, flags derived from the
  configuration models);
* one module per group of commands, each adding its own subparsers: :mod:`.model` (train,
  eval, predict, calibrate), :mod:`.conversion` (import-anomalib, export, quantize),
  :mod:`.dataset` (dataset export), :mod:`.daemon` (run, cameras), :mod:`.tools` (synth, demo,
  simulate, bench) and :mod:`.schema`.
"""

from inspector.cli.app import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]
