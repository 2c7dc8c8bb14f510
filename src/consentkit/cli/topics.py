"""Topics on the command line: the ``--topics FILE`` declarations and ``consentkit topics``.

The file is JSON::

    {"topics": [{"key": "promotions", "title": "Offers and sales",
                 "message_class": "marketing", "default": "opt_in"}],
     "surviving_classes": {"email": ["transactional"]}}

``default`` may be left out (``opt_in``), and so may ``surviving_classes`` (nothing survives).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from consentkit.channels import Channel
from consentkit.cli import render
from consentkit.cli.args import add_format
from consentkit.cli.context import Context
from consentkit.errors import ValidationError
from consentkit.topics import MessageClass, Topic, TopicRules

__all__ = ["TopicFile", "load_topics", "topics", "topics_arguments", "topics_file_of"]

TopicFile = tuple[list[Topic], Mapping[Channel | str, Iterable[MessageClass | str]]]
"""The declarations of a ``--topics`` file: the topics and the surviving classes per channel."""


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
        return [], {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValidationError("--topics", f"cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError("--topics", f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict) or not set(document) <= {"topics", "surviving_classes"}:
        raise ValidationError(
            "--topics",
            f"{path} must hold an object with 'topics' (a list) and optionally "
            "'surviving_classes' (an object)",
        )
    declared = document.get("topics", [])
    surviving = document.get("surviving_classes", {})
    if not isinstance(declared, list) or not isinstance(surviving, dict):
        raise ValidationError(
            "--topics", f"{path}: 'topics' must be a list and 'surviving_classes' an object"
        )
    survival: dict[Channel | str, Iterable[MessageClass | str]] = {}
    for key, classes in surviving.items():
        if not isinstance(classes, list):
            raise ValidationError(
                "--topics", f"{path}: surviving_classes of {key!r} must be a list of classes"
            )
        survival[key] = classes
    found: list[Topic] = []
    for entry in declared:
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
            found.append(Topic(**entry))
        except ValidationError as error:
            raise ValidationError("--topics", f"{path}: {error}") from None
    return found, survival


def topics_arguments(parser: argparse.ArgumentParser) -> None:
    """The format."""
    add_format(parser)


def topics(ctx: Context, args: argparse.Namespace) -> int:
    """The declared topics, with their class and default, and the survival rules (read from
    the file alone: no database is needed)."""
    rules = TopicRules(*load_topics(topics_file_of(args)))
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
        return 0
    ctx.print_lines(
        render.table_lines(
            ("TOPIC", "TITLE", "CLASS", "DEFAULT"),
            (
                (t.key, render.escape(t.title), t.message_class.value, t.default.value)
                for t in rules.topics
            ),
        )
    )
    if rules.surviving_classes:
        for key, classes in sorted(rules.surviving_classes.items()):
            names = ", ".join(sorted(c.value for c in classes))
            ctx.print(f"survives an unsubscribe of {key}: {names} (never after a complaint)")
    else:
        ctx.print("nothing survives a channel unsubscribe")
    return 0
