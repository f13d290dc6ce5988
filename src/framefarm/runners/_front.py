"""What the command line knows of a runner without importing it: its flags and how its options
are built from them. A runner's front is light (argparse and framefarm.config): `framefarm
--help` and every command build their parser from every registered runner's front, and only the
chosen runner's own module (boto3, temporalio …) is imported, when it runs.

A front declares its flags once, in `add_arguments` (the `render` command's group) and
`add_connection_arguments` (the flags `resume`, `cancel` and `worker` share, if any); the names
it refuses under another runner are read back from those declarations.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from framefarm.errors import UserError

if TYPE_CHECKING:
    from framefarm.model import RunRecord

Announce = Callable[[str], None]


class RunnerFront:
    """One runner, as the command line sees it. Subclasses set `name` (the --runner value),
    `runner` (its Runner class, "module:class") and `title` (how help and messages name it)."""

    name: ClassVar[str]
    runner: ClassVar[str]
    title: ClassVar[str] = ""
    container_hook: ClassVar[tuple[str, str] | None] = None
    """For a runner whose plan job, run in its own container, starts the jobs after it: the
    function that builds the hook ("module:function", given the environment) and the contract
    variable that says the container is the runner's."""
    replaces_hook_of: ClassVar[tuple[str, ...]] = ()
    """Runners whose container hook this one's replaces when both variables are set (Step
    Functions runs Batch's job definitions, which name a job queue)."""
    shared_flags: ClassVar[tuple[str, ...]] = ()
    """Flags another runner declares that this one takes too (argparse names: Step Functions
    takes Batch's --stack and --wait)."""
    attaches: ClassVar[bool] = False
    """A run started again with the same --run-id is the runner's to find (it follows the run
    already started rather than refusing): Temporal's workflow, Step Functions' execution."""

    @property
    def group_title(self) -> str:
        """The heading of its flags in `framefarm render --help`."""
        return f"{self.title} (--runner {self.name})"

    def add_arguments(self, group: argparse._ActionsContainer) -> None:
        """The runner's own `render` flags (none by default)."""

    def add_connection_arguments(self, group: argparse._ActionsContainer) -> None:
        """Flags `resume` and `cancel` take for this runner's runs (none by default)."""

    def render_flags(self) -> tuple[str, ...]:
        """The argparse names of this runner's own `render` flags."""
        return _dests(self.add_arguments)

    def connection_flags(self) -> tuple[str, ...]:
        return _dests(self.add_connection_arguments)

    def options(self, args: argparse.Namespace, common: Mapping[str, object], *,
                announce: Announce) -> tuple[dict[str, str], dict[str, object]]:
        """Storage and job-log defaults (a stack's outputs, say) and the runner's options for
        `framefarm render`, from the flags; `common` holds the options every runner takes."""
        del args, announce
        return {}, dict(common)

    def lifecycle_options(self, run: RunRecord, args: argparse.Namespace) -> dict[str, object]:
        """This runner's options for `resume` or `cancel` of `run`, from the flags given there
        (they beat the run's record); a UserError when they were given for another runner's run."""
        given = {name: getattr(args, name, None) for name in self.connection_flags()}
        given = {name: value for name, value in given.items() if value is not None}
        if given and (run.runner or "local") != self.name:
            raise UserError(self.foreign_run(run))
        return self.connection_options(given)

    def connection_options(self, given: Mapping[str, Any]) -> dict[str, object]:
        """Runner options from the connection flags given (argparse names -> values)."""
        return dict(given)

    def foreign_run(self, run: RunRecord) -> str:
        """The line for connection flags given to another runner's run."""
        names = [f"--{name.replace('_', '-')}" for name in self.connection_flags()]
        shown = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        return (f"{shown} are for {self.title or self.name} runs, and run {run.run_id} is a "
                f"{run.runner or 'local'} run: leave them out")

    def refuse_stray(self, args: argparse.Namespace, *, allowed: tuple[str, ...] = ()) -> None:
        """Refuse this runner's own flags given for another runner's run (UserError), but for
        the `allowed` ones (that runner's shared_flags)."""
        given = [f"--{name.replace('_', '-')}" for name in self.render_flags()
                 if name not in allowed and getattr(args, name, None)]
        if given:
            raise UserError(f"{', '.join(given)} only work with --runner {self.name}; add "
                            f"--runner {self.name} or leave them out")


def _dests(declare: Callable[[argparse._ActionsContainer], None]) -> tuple[str, ...]:
    scratch = argparse.ArgumentParser(add_help=False)
    declare(scratch)
    return tuple(action.dest for action in scratch._actions)


class LocalFront(RunnerFront):
    """Worker processes on this machine: the flags every runner takes are its whole story."""

    name = "local"
    runner = "framefarm.runners.local:LocalRunner"
    title = "local"
