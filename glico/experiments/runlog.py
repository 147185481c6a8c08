"""Finished runs of a ``glico evaluate`` / ``glico ablate`` grid, kept as each one ends.

A grid can take hours; an interruption (Ctrl-C, a killed job, a full disk later on) must lose at most
the run in progress. Every finished (spc, seed, method/variant) run is appended to ``OUT/runs.jsonl``
(one JSON object per line, after a header line that records the grid's settings) and flushed to disk.
``resume=True`` (``--resume``) reads that file back, checks that the settings are the same, and runs
only what is missing: every run seeds itself, so the final table equals the one an uninterrupted
command writes. Without ``resume``, a folder that already holds finished runs is refused rather than
overwritten.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

RUNS_FILE = "runs.jsonl"


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), for comparisons with a read file."""
    return json.loads(json.dumps(value))


class RunLog:
    """The finished runs of one grid, on disk as they finish.

    Args:
        out: the results folder (None: nothing is kept, and ``resume`` is refused).
        header: what identifies the grid (command, glico version, settings); a resumed grid must have
            the same header, except for the keys in ``free``.
        key: the fields that name a run, e.g. ``("spc", "seed", "method")``.
        resume: keep the runs already in ``out`` and report them as done.
        free: top-level header keys (or ``section.key``) that may differ on resume (e.g. the device).
        added_later: header keys (``section.key``) that a later glico version added, each with the value a
            grid written before it implicitly had (e.g. ``{"config.schedule": "step"}``): a saved header
            without the key reads as having that value, so such a grid can still be resumed.
    """

    def __init__(self, out: Path | None, header: dict[str, Any], key: tuple[str, ...], *, resume: bool = False,
                 free: Iterable[str] = (), added_later: Mapping[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        if resume and overwrite:
            raise ValueError("--resume keeps the finished runs and --overwrite replaces them; give one of them")
        self.key, self.header = key, _plain(header)
        self.previous: dict[tuple, dict] = {}
        self.added = 0
        self.nothing_to_resume = False
        self.path = None if out is None else Path(out) / RUNS_FILE
        if self.path is None:
            if resume:
                raise ValueError("resume needs the results folder of the interrupted grid (out=...)")
            return
        if overwrite:
            # The earlier grid's runs are kept aside (not deleted) until this grid writes its own results.
            for name in (RUNS_FILE, "results.json"):
                old = self.path.parent / name
                if old.exists():
                    os.replace(old, old.with_name(old.name + ".replaced"))
        self.nothing_to_resume = resume and not self.path.exists()
        # A header with no finished run (e.g. the data failed to load) holds nothing to lose: start afresh.
        saved, runs = self._read() if self.path.exists() else (None, [])
        if saved is not None and (runs or resume):
            if not resume:
                raise ValueError(f"{self.path.parent} already holds {len(runs)} finished run(s) of a grid "
                                 f"({RUNS_FILE}); pass --resume to keep them and run only the missing ones, "
                                 f"--overwrite to replace them, or give another --out")
            problems = _differences(_with_implicit(saved, added_later or {}), self.header, set(free))
            if problems:
                raise ValueError(f"cannot resume in {self.path.parent}: its runs were made with other settings "
                                 f"({'; '.join(problems)}). Resume with the original command, or give another --out")
            self.previous = {self._ident(r): r for r in runs}
        elif saved is None and (self.path.parent / "results.json").exists():
            # Results of a grid written before runs were kept one by one (glico < 0.3): nothing to resume
            # from, and starting afresh would overwrite them.
            raise ValueError(f"{self.path.parent} already holds results.json of an earlier grid, but no {RUNS_FILE} "
                             f"to {'resume from' if resume else 'check it against'}; give another --out (or move "
                             f"results.json away to start afresh there)")
        # (Re)write the file whole: header plus the runs kept, dropping a line cut short by a kill.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            for obj in [self.header, *self.previous.values()]:
                f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _ident(self, run: dict) -> tuple:
        return tuple(run[k] for k in self.key)

    def _read(self) -> tuple[dict, list[dict]]:
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])
        except (IndexError, json.JSONDecodeError):
            raise ValueError(f"{self.path} is not a runs file written by glico (no header line); "
                             f"move it away or give another --out") from None
        runs = []
        for i, line in enumerate(lines[1:], start=2):
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines):  # only the last line can be cut short by a kill
                    raise ValueError(f"{self.path}: line {i} is not JSON; the file was edited or damaged") from None
        return header, runs

    def done(self, **ident: Any) -> dict | None:
        """The finished run named by ``ident`` (e.g. ``spc=10, seed=0, method='glico'``), or None."""
        return self.previous.get(tuple(ident[k] for k in self.key))

    def add(self, run: dict) -> None:
        """Keep a finished run (appended and flushed to disk at once)."""
        if self.path is None:
            return
        self.added += 1
        with open(self.path, "a") as f:
            f.write(json.dumps(_plain(run)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __len__(self) -> int:
        """Runs kept on disk: resumed plus added."""
        return len(self.previous) + self.added

    def resume_line(self, total: int) -> str | None:
        """What a resumed grid reports before it starts (None when there is nothing to say)."""
        if self.previous:
            return f"  resuming: {len(self.previous)} of {total} runs already finished in {self.path.parent}"
        if self.nothing_to_resume:
            return f"  note: --resume, but {self.path.parent} holds no finished runs of a grid; starting the grid there"
        return None

    def interrupted_message(self) -> str:
        if self.path is None:
            return "nothing was kept (no results folder)"
        return (f"{len(self)} finished run(s) kept in {self.path}; the same command with --resume runs only "
                f"the missing ones")


def _with_implicit(saved: dict, added_later: Mapping[str, Any]) -> dict:
    """``saved`` with each missing ``section.key`` of ``added_later`` set to its implicit value."""
    out = json.loads(json.dumps(saved))
    for dotted, value in added_later.items():
        *path, last = dotted.split(".")
        node = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last not in node:
            node[last] = _plain(value)
    return out


def _differences(saved: dict, now: dict, free: set[str]) -> list[str]:
    problems = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if k in free or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            inner = {x.split(".", 1)[1] for x in free if x.startswith(k + ".")}
            problems += [f"{k}.{p}" for p in _differences(a, b, inner)]
        else:
            problems.append(f"{k}: {a!r} then, {b!r} now")
    return problems
