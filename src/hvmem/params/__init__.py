"""Parameter declarations: every configurable field declared once, beside its component.

What is modelled
----------------
gem5 declares each parameter where its component is defined, with a type, a
default and a description (``size = Param.Unsigned(64, "TLB size")``). hvmem
does the same for the fields of its frozen configuration dataclasses: a field's
default *is* its declaration::

    tlb_entries: int = whole(64, "TLB entries per vCPU (mmu fidelity)", lo=1, hi=1 << 16)

The declaration (a :class:`Param` in the field's metadata) holds the kind of
value, its unit, the default, the bounds, a one-line description, the source of
the number and the key a scenario file uses. Everything else walks the
declarations:

* :func:`check`, called from ``__post_init__``: type, bounds and choices of every
  declared field (cross-field rules stay in the class, which knows them);
* :func:`read` and :func:`build`: a TOML table to constructor arguments, sizes
  and times converted to the stored units, unknown keys refused, errors moved
  from the field to its TOML path;
* :func:`write`: an object back to a table that :func:`read` reads to an equal one;
* :func:`declarations`: the list itself, for ``docs/scenario.md`` and for tests
  that walk every field.

Kinds: what is stored, what a file holds
----------------------------------------
::

    flag     bool                        true / false
    whole    int                         an integer
    number   float                       a number (an integer is taken as it is)
    choice   str                         one of the listed strings
    text     str                         a string
    size     int bytes or int pages      "4GiB" (an integer counts bytes)
    time     int ns, or float s or ms    "15s" (a bare 0 is allowed)
    cost     float ns                    a number of ns, or a time such as "80us"
    table    a declared dataclass        a table of that class's keys (an array
                                         of them with ``array=True``)

Keys. A size's or a time's key is its field name without the unit, which the
value carries (``memory_bytes`` is ``memory = "4GiB"``, ``balance_period_ns`` is
``balance_period = "15s"``); any other key is the field name, unless the
declaration names one (``key="tlb.entries"`` is ``entries`` in a ``tlb`` table).
A table declared ``flatten=True`` has its keys in its parent's table. A field
declared ``key=None`` is not in a file: code sets it (a workload's fidelity is
the scenario's), and ``owner`` names the key that does.

None. An ``optional`` field may hold None, which means what ``none`` says ("no
limit", "as the profile"); a file writes None as ``none_word`` ("unlimited") or
by leaving the key out.

Bounds are in stored units, inclusive unless ``lo_open`` / ``hi_open``. Every
numeric field has both, wide enough for any real host and narrow enough to
refuse nonsense such as a 1 ns tick or 10**15 references a second.

Errors. A failed check raises ``ConfigError("expected ..., found ...",
path=(ClassName, field))``, found values shown as a file would write them
(``'128MiB'``, ``'0s'``); :func:`build` moves the error to the TOML path of the
table it read (``vm[2].workload.alpha``) through the same declarations.
"""

from hvmem.params.declare import (
    REQUIRED,
    Declared,
    Kind,
    Param,
    check,
    choice,
    cost,
    declarations,
    declared,
    fail,
    flag,
    frac,
    number,
    show_raw,
    size,
    table,
    text,
    time,
    whole,
)
from hvmem.params.tables import (
    build,
    construct,
    keys,
    read,
    refuse_unknown,
    relocate,
    toml_path,
    write,
)

__all__ = [
    "REQUIRED",
    "Declared",
    "Kind",
    "Param",
    "build",
    "check",
    "choice",
    "construct",
    "cost",
    "declarations",
    "declared",
    "fail",
    "flag",
    "frac",
    "keys",
    "number",
    "read",
    "refuse_unknown",
    "relocate",
    "show_raw",
    "size",
    "table",
    "text",
    "time",
    "toml_path",
    "whole",
    "write",
]
