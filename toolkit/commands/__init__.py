"""Subcommands of `labkit` beyond analyze and demo, one module each.

A module here defines `register(sub)`, which adds its parser to the argparse subparsers
and sets `func` (a callable taking the parsed args and returning the exit status). The CLI
imports every module here at start-up, so a module keeps its top-level imports light
(argparse and the standard library) and imports the heavy parts inside its func.
"""
