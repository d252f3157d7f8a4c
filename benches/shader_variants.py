"""What the kernel experiments (depth_experiments.py, gemm_experiments.py) share: variants of a
shipped WGSL file written as text edits that fail loudly when the file has changed under them,
and the files `depthlens bench --shader` reads them from."""

import os
import re
import sys


def replaced(text, old, new, count=1):
    """`text` with `old`, which must occur `count` times, replaced by `new`."""
    if text.count(old) != count:
        sys.exit(f"the shipped shader changed: the experiment's anchor is gone:\n{old}")
    return text.replace(old, new)


def between(text, start, end):
    """The part of `text` from `start` up to (not including) the first `end` after it."""
    i = text.index(start)
    return text[i : text.index(end, i)]


def with_consts(text, section, **consts):
    """`text` with constants overridden in `section` (a slice of it): the host prepends its own,
    so the variant renames them there and declares the new values."""
    head, body, tail = text[: section.start], text[section], text[section.stop :]
    decl = ""
    for name, value in consts.items():
        body = re.sub(rf"\b{name}\b", f"X{name}", body)
        decl += f"const X{name}: u32 = {value}u;\n"
    return decl + head + body + tail


def write_variants(variants, directory, filename, wanted):
    """Writes each (name, what, text) variant, or those named in `wanted` when it is not empty, to
    `directory/name/filename`. Returns the runs, the shipped file (no path) first."""
    runs = [("shipped", "", None)]
    for name, what, text in variants:
        if wanted and name not in wanted:
            continue
        path = os.path.join(directory, name, filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        runs.append((name, what, path))
    return runs
