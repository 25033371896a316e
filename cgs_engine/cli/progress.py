"""Progress bars for the CLI (tqdm on stderr), hidden when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    """A callable ``(done, total)`` that drives one tqdm bar."""

    def __init__(self, description: str, unit: str = "it") -> None:
        self.bar = tqdm(
            desc=description,
            unit=unit,
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            leave=False,
        )

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
