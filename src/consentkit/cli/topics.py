"""Topics on the command line: the ``--topics FILE`` declarations and ``consentkit topics``.

The file is JSON::

    {"topics": [{"key": "promotions", "title": "Offers and sales",
                 "message_class": "marketing", "default": "opt_in"}],
     "surviving_classes": {"email": ["transactional"]},
     "revoke_all_exempt": ["informational"],
     "scope": "topic",
     "senders": {"+15550100": "promotions"}}

Only ``topics`` is needed: ``default`` may be left out (``opt_in``), and so may the rest
(nothing survives, nothing is exempt, the ``group`` opt-out scope, no senders).  ``scope`` is the
opt-out scope of inbound messages (``group``, ``channel``, ``topic``, ``sender``,
``revoke_all``) and ``senders`` maps the numbers replies go to to topics (the ``sender`` scope).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from consentkit.channels import Channel
from consentkit.cli import render
from consentkit.cli.args import add_format, custom_channels_of
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.inbound import InboundSettings
from consentkit.service import ConsentService
from consentkit.storage.memory import InMemoryStore
from consentkit.topics import MessageClass, Topic

__all__ = ["TopicFile", "load_topics", "topics", "topics_arguments", "topics_file_of"]

_KEYS = frozenset({"topics", "surviving_classes", "revoke_all_exempt", "scope", "senders"})


@attrs.frozen
class TopicFile:
    """The declarations of a ``--topics`` file (all empty without one)."""

    topics: list[Topic] = attrs.Factory(list)
    surviving_classes: Mapping[Channel | str, Iterable[MessageClass | str]] = attrs.Factory(dict)
    revoke_all_exempt: list[str] = attrs.Factory(list)
    scope: str | None = None
    senders: Mapping[str, str] = attrs.Factory(dict)

    def service_options(self) -> dict[str, Any]:
        """The ConsentService keyword arguments these declarations give."""
        return {
            "topics": self.topics,
            "surviving_classes": self.surviving_classes,
            "revoke_all_exempt": self.revoke_all_exempt,
        }

    def inbound(self) -> InboundSettings | None:
        """The inbound settings of ``scope`` and ``senders`` (None when neither is given)."""
        if self.scope is None and not self.senders:
            return None
        try:
            return InboundSettings(scope=self.scope or "group", senders=self.senders)
        except ValidationError as error:
            raise ValidationError("--topics", str(error)) from None


def topics_file_of(args: argparse.Namespace) -> Path | None:
    """The ``--topics`` file (given after the subcommand, before it, or CONSENTKIT_TOPICS)."""
    given = getattr(args, "topics_file_after", None) or getattr(args, "topics_file", None)
    if given is not None:
        return Path(given)
    env = os.environ.get("CONSENTKIT_TOPICS")
    return Path(env) if env else None


def load_topics(path: Path | None) -> TopicFile:
    """The topics and surviving classes a ``--topics`` file declares (none without a file).

    Raises:
        ValidationError: naming ``--topics``: unreadable, not JSON, or not the shape above.
    """
    if path is None:
        return TopicFile()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValidationError("--topics", f"cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError("--topics", f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict) or not set(document) <= _KEYS:
        raise ValidationError(
            "--topics",
            f"{path} must hold an object with 'topics' (a list) and optionally "
            "'surviving_classes', 'senders' (objects), 'revoke_all_exempt' (a list) and "
            "'scope' (a string)",
        )
    declared = document.get("topics", [])
    surviving = document.get("surviving_classes", {})
    exempt = document.get("revoke_all_exempt", [])
    scope = document.get("scope")
    senders = document.get("senders", {})
    if not isinstance(declared, list) or not isinstance(surviving, dict):
        raise ValidationError(
            "--topics", f"{path}: 'topics' must be a list and 'surviving_classes' an object"
        )
    if not isinstance(exempt, list) or not isinstance(senders, dict):
        raise ValidationError(
            "--topics", f"{path}: 'revoke_all_exempt' must be a list and 'senders' an object"
        )
    if scope is not None and not isinstance(scope, str):
        raise ValidationError("--topics", f"{path}: 'scope' must be a string")
    survival: dict[Channel | str, Iterable[MessageClass | str]] = {}
    for key, classes in surviving.items():
        if not isinstance(classes, list):
            raise ValidationError(
                "--topics", f"{path}: surviving_classes of {key!r} must be a list of classes"
            )
        survival[key] = classes
    return TopicFile([_topic(path, entry) for entry in declared], survival, exempt, scope, senders)


def _topic(path: Path, entry: object) -> Topic:
    """One entry of the file's ``topics``."""
    if not isinstance(entry, dict) or not {"key", "title", "message_class"} <= set(entry):
        raise ValidationError(
            "--topics", f"{path}: each topic needs key, title and message_class: {entry!r}"
        )
    unknown = set(entry) - {"key", "title", "message_class", "default"}
    if unknown:
        raise ValidationError(
            "--topics", f"{path}: unknown topic field(s) {', '.join(sorted(unknown))}"
        )
    try:
        return Topic(**entry)
    except ValidationError as error:
        raise ValidationError("--topics", f"{path}: {error}") from None


def topics_arguments(parser: argparse.ArgumentParser) -> None:
    """The file (also accepted here, after the command) and the format."""
    parser.add_argument(
        "--topics",
        dest="topics_file_after",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the JSON file declaring the topics (as before the command)",
    )
    add_format(parser)


def topics(ctx: Context, args: argparse.Namespace) -> int:
    """The declared topics, with their class and default, and the survival rules (read from
    the file alone: no database is needed)."""
    declared = load_topics(topics_file_of(args))
    declared.inbound()  # a bad scope or senders entry is refused here too
    # Built as a service builds them: the channels of surviving_classes must be known ones.
    rules = ConsentService(
        InMemoryStore(), channels=custom_channels_of(args), **declared.service_options()
    ).topics
    if args.format == "json":
        ctx.print(
            render.json_text(
                {
                    "topics": [
                        {
                            "key": t.key,
                            "title": t.title,
                            "message_class": t.message_class.value,
                            "default": t.default.value,
                        }
                        for t in rules.topics
                    ],
                    "surviving_classes": {
                        key: sorted(c.value for c in classes)
                        for key, classes in sorted(rules.surviving_classes.items())
                    },
                }
            )
        )
        return 0
    if not rules.topics:
        ctx.print("no topics declared (declare them with --topics FILE)")
    ctx.print_lines(
        render.table_lines(
            ("TOPIC", "TITLE", "CLASS", "DEFAULT"),
            (
                (t.key, render.escape(t.title), t.message_class.value, t.default.value)
                for t in rules.topics
            ),
        )
    )
    if rules.revoke_all_exempt:
        names = ", ".join(sorted(c.value for c in rules.revoke_all_exempt))
        ctx.print(f"exempt from revoke all: {names}")
    if declared.scope is not None:
        ctx.print(f"opt-out scope: {declared.scope}")
    if rules.surviving_classes:
        for key, classes in sorted(rules.surviving_classes.items()):
            names = ", ".join(sorted(c.value for c in classes))
            ctx.print(f"survives an unsubscribe of {key}: {names} (never after a complaint)")
    else:
        ctx.print("nothing survives a channel unsubscribe")
    return 0
