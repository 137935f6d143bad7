"""Which paths a property's examples took, and a check that each was reached often enough.

The property tests record the paths each example took (a completed reference, a
copy-on-write break, a swap-in, ...) with :func:`took`; their pytest test runs
the property through :func:`assert_reached`, which fails when a path was taken
in fewer examples than its stated share, so a strategy that stops reaching a
path is noticed. :func:`examples` scales example counts by the hypothesis
profile (``--hypothesis-profile=long`` or ``HYPOTHESIS_PROFILE=long``: ten times).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import event, settings

#: Examples that took each path (and "examples": how many ran), over one property run.
REACHED: Counter[str] = Counter()
#: Times each path was taken, over the same run.
TAKEN: Counter[str] = Counter()


def examples(n: int) -> int:
    """``n`` examples, scaled by the profile (100 by default and in CI; ``long``: 1000)."""
    return max(1, n * settings.default.max_examples // 100)


def took(paths: Counter) -> None:
    """Record the paths one example took: a hypothesis event each, and in the tallies."""
    REACHED["examples"] += 1
    for name, n in sorted(paths.items()):
        if n > 0:
            event(name)
            REACHED[name] += 1
            TAKEN[name] += n


def assert_reached(run_property, minima: dict[str, float]) -> None:
    """Run a property's examples; each path must be taken in ``minima[path]`` of them."""
    REACHED.clear()
    TAKEN.clear()
    run_property()
    n = REACHED["examples"]
    taken = "\n".join(f"  {path}: in {REACHED[path]} of {n} examples, {TAKEN[path]} times"
                      for path in sorted(TAKEN))
    print(f"paths taken:\n{taken}")
    short = [f"{path}: {REACHED[path]} of {n} examples, want {share:.0%}"
             for path, share in minima.items() if REACHED[path] < share * n]
    assert not short, "paths too rarely reached:\n" + "\n".join(short) + f"\nall:\n{taken}"
