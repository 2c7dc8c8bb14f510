from collections.abc import Callable, Sequence
from typing import Final, final

from consentkit.keywords import KeywordMatch

MAX_SCAN_CHARS: Final[int]

@final
class AsciiClassifier:
    def __init__(
        self,
        exact: Sequence[tuple[str, KeywordMatch]],
        possible: Sequence[tuple[str, KeywordMatch]],
        no_match: KeywordMatch,
        scan_chars: int,
        fallback: Callable[[str], KeywordMatch],
    ) -> None: ...
    def classify(self, body: str, /) -> KeywordMatch: ...
