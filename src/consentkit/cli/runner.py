"""Runs one parsed command line: who acts, the account's settings, the custom channels, the
store and the service."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from consentkit.cli.args import actor_spec, custom_channels_of
from consentkit.cli.context import (
    DEFAULT_ACCOUNT,
    DEFAULT_DB,
    DEFAULT_READER,
    DEFAULT_TIMEZONE,
    Command,
    Context,
    StoreFactory,
)
from consentkit.cli.erase import erasure_key_of
from consentkit.cli.topics import load_topics, topics_file_of
from consentkit.clock import Clock
from consentkit.errors import ValidationError
from consentkit.model import Actor, ActorKind
from consentkit.serialization import make_converter
from consentkit.service import ConsentService
from consentkit.settings import AccountSettings

__all__ = ["run"]


def _actor_of(args: argparse.Namespace, command: Command) -> Actor:
    account = args.account or os.environ.get("CONSENTKIT_ACCOUNT") or DEFAULT_ACCOUNT
    spec: tuple[ActorKind, str] | None = getattr(args, "acting_as", None)
    if command.access == "contact":
        if spec is not None:
            args.parser.error(
                f"{command.name} takes no --as: the message is recorded as the sender's own "
                "act (actor contact:ID, source inbound_keyword); leave --as out"
            )
        # The placeholder only carries the account: the service acts as the sender.
        spec = actor_spec(DEFAULT_READER)
    if spec is None:
        if command.access == "write":
            args.parser.error(
                "--as KIND:ID is required for commands that change data, e.g. --as admin:alice"
            )
        spec = actor_spec(DEFAULT_READER)
    kind, actor_id = spec
    return Actor(kind, actor_id, account)


def _settings_of(args: argparse.Namespace) -> AccountSettings:
    """The account's settings.  Only commands with a ``--timezone`` option read the time zone
    (and CONSENTKIT_TIMEZONE), so a bad value never stops a command that does not use it."""
    if not hasattr(args, "timezone"):
        return AccountSettings()
    given, option = args.timezone, "--timezone"
    if given is None:
        given, option = os.environ.get("CONSENTKIT_TIMEZONE"), "CONSENTKIT_TIMEZONE"
    if not given:
        return AccountSettings(timezone=DEFAULT_TIMEZONE)
    try:
        return AccountSettings(timezone=given)
    except ValidationError as e:
        raise ValidationError(
            "timezone", f"{option} {str(e).removeprefix('timezone: ')}"
        ) from None


def run(
    args: argparse.Namespace,
    store_factory: StoreFactory,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run the parsed command line *args* and return its exit code (*sleep* waits between the
    polls of ``feed --follow``)."""
    command: Command = args.command_spec
    converter = make_converter()
    if command.access == "standalone":
        # No store and no --as: the actor is a placeholder the command never uses.
        ctx = Context(
            None,
            Actor.system(DEFAULT_ACCOUNT, "cli"),
            sys.stdout,
            sys.stderr,
            converter,
            clock,
            store_factory,
            sleep,
        )
        return command.run(ctx, args)
    actor = _actor_of(args, command)
    settings = _settings_of(args)
    custom = custom_channels_of(args)
    declared = load_topics(topics_file_of(args))
    inbound = declared.inbound()
    if inbound is not None:
        settings = attrs.evolve(settings, inbound=inbound)
    db = args.db or Path(os.environ.get("CONSENTKIT_DB") or DEFAULT_DB)
    store = store_factory(db, create=command.creates_db)
    try:
        service = ConsentService(
            store,
            clock=clock,
            settings=settings,
            channels=custom,
            erasure_key=erasure_key_of(os.environ),
            **declared.service_options(),
        )
        ctx = Context(
            service, actor, sys.stdout, sys.stderr, converter, clock, store_factory, sleep
        )
        return command.run(ctx, args)
    finally:
        store.close()
