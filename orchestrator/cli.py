"""The `orchestrator` command: plan, run, watch and report the experiments.

Every option can also come from the environment (ORCHESTRATOR_<OPTION>, e.g. ORCHESTRATOR_BUCKET).
Errors are one line; `--debug` shows the traceback.
"""
from __future__ import annotations

import sys

import click

from jobs.errors import JobError

from orchestrator.backends.base import BackendError
from orchestrator.commands.cluster import cancel, logs, render
from orchestrator.commands.gc import gc
from orchestrator.commands.soup import export, soup
from orchestrator.commands.stages import average, evaluate, pipeline, sweep
from orchestrator.commands.status import status
from orchestrator.commands.tables import tables


class OneLineErrors(click.Group):
    """Turns job, store and backend errors into one-line messages unless --debug is given."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (JobError, BackendError) as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(e)) from None


@click.group(cls=OneLineErrors, context_settings={"auto_envvar_prefix": "ORCHESTRATOR", "help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="xlt-averaging")
@click.pass_context
def main(ctx, debug: bool) -> None:
    """Fine-tune over a grid, average snapshots accumulatively, evaluate on every target language."""
    ctx.obj = {"debug": debug}


for command in (sweep, evaluate, average, status, tables, pipeline, soup, export, render, logs, cancel, gc):
    main.add_command(command)


if __name__ == "__main__":
    sys.exit(main())
