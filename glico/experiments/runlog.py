"""Finished runs of a ``glico evaluate`` / ``glico ablate`` grid, kept as each one ends.

A grid can take hours; an interruption (Ctrl-C, a killed job, a full disk later on) must lose at most
the run in progress. Every finished (spc, seed, method/variant) run is appended to ``OUT/runs.jsonl``
(one JSON object per line, after a header line that records the grid's settings) and flushed to disk;
under torchrun each rank appends to its own ``OUT/runs.rank<R>.jsonl``, joined into ``runs.jsonl`` by
rank 0 at the end (and by any later resume, with any number of ranks).
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

from glico import distributed
from glico.names import canonical_names

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
        overwrite: start afresh: the runs files and results.json already there are kept as ``*.replaced``.
        ranks: this process's place under torchrun (:func:`glico.distributed.current`; default a world of
            one). Every rank reads and checks the same files; rank 0 rewrites them; with several ranks each
            appends to its own ``runs.rank<R>.jsonl``, and :meth:`finish` joins them into ``runs.jsonl``.
        writer: whether this process keeps runs at all (False: a rank whose runs rank 0 keeps, as in a
            data-parallel grid where every rank runs every cell).
    """

    def __init__(self, out: Path | None, header: dict[str, Any], key: tuple[str, ...], *, resume: bool = False,
                 free: Iterable[str] = (), added_later: Mapping[str, Any] | None = None,
                 overwrite: bool = False, ranks: distributed.Ranks | None = None, writer: bool = True) -> None:
        if resume and overwrite:
            raise ValueError("--resume keeps the finished runs and --overwrite replaces them; give one of them")
        self.key, self.header = key, _plain(header)
        self.ranks = ranks or distributed.Ranks()
        self.previous: dict[tuple, dict] = {}
        self.new: list[dict] = []
        self.nothing_to_resume = False
        self.path = None if out is None else Path(out) / RUNS_FILE
        self.own = self.path  # the file this process appends to
        if self.path is None:
            if resume:
                raise ValueError("resume needs the results folder of the interrupted grid (out=...)")
            return
        folder = self.path.parent
        # Every rank reads and checks the same files, so a refusal is the same on every rank.
        files = [] if overwrite else [f for f in [self.path, *_rank_files(folder)] if f.exists()]
        self.nothing_to_resume = resume and not files
        read = [(f, *_read(f)) for f in files]  # (file, header, runs)
        runs = [r for _, _, rs in read for r in rs]
        # A header with no finished run (e.g. the data failed to load) holds nothing to lose: start afresh.
        if read and (runs or resume):
            if not resume:
                raise ValueError(f"{folder} already holds {len(runs)} finished run(s) of a grid "
                                 f"({RUNS_FILE}); pass --resume to keep them and run only the missing ones, "
                                 f"--overwrite to replace them, or give another --out")
            for f, saved, _ in read:
                problems = _differences(canonical_names(_with_implicit(saved, added_later or {})), self.header,
                                        set(free))
                if problems:
                    raise ValueError(f"cannot resume in {folder}: its runs were made with other settings "
                                     f"({'; '.join(problems)}). Resume with the original command, or give another --out")
            for r in runs:
                self.previous.setdefault(self._ident(r), r)
        elif not read and not overwrite and (folder / "results.json").exists():
            # Results of a grid written before runs were kept one by one (glico < 0.3): nothing to resume
            # from, and starting afresh would overwrite them.
            raise ValueError(f"{folder} already holds results.json of an earlier grid, but no {RUNS_FILE} "
                             f"to {'resume from' if resume else 'check it against'}; give another --out (or move "
                             f"results.json away to start afresh there)")
        distributed.barrier()  # every rank has read before rank 0 rewrites
        if self.ranks.main:
            folder.mkdir(parents=True, exist_ok=True)
            if overwrite:
                # The earlier grid's runs are kept aside (not deleted) until this grid writes its own results.
                for old in [folder / RUNS_FILE, folder / "results.json", *_rank_files(folder)]:
                    if old.exists():
                        os.replace(old, old.with_name(old.name + ".replaced"))
            # (Re)write the file whole: header plus the runs kept (the ranks' files joined in), dropping a line
            # cut short by a kill.
            _write_whole(self.path, [self.header, *self.previous.values()])
            for f in _rank_files(folder):
                f.unlink()
        distributed.barrier()
        if self.ranks.world > 1:
            self.own = folder / f"runs.rank{self.ranks.rank}.jsonl" if writer else None
            if self.own is not None:
                _write_whole(self.own, [self.header])

    def _ident(self, run: dict) -> tuple:
        return tuple(run[k] for k in self.key)

    def done(self, **ident: Any) -> dict | None:
        """The finished run named by ``ident`` (e.g. ``spc=10, seed=0, method='glico'``), or None."""
        return self.previous.get(tuple(ident[k] for k in self.key))

    def add(self, run: dict) -> None:
        """Keep a finished run (appended and flushed to disk at once, to this rank's file under torchrun)."""
        self.new.append(run)
        if self.own is None:
            return
        with open(self.own, "a") as f:
            f.write(json.dumps(_plain(run)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __len__(self) -> int:
        """Runs kept: resumed plus added by this process."""
        return len(self.previous) + len(self.new)

    def finish(self) -> dict[tuple, dict]:
        """Every finished run of the grid by its name, once all ranks are here: under torchrun rank 0 joins
        the ranks' files into the runs file (and gets them all; the other ranks get their own)."""
        distributed.barrier()
        done = {**self.previous, **{self._ident(r): r for r in self.new}}
        if self.ranks.world > 1 and self.ranks.main and self.path is not None and self.own != self.path:
            for f in _rank_files(self.path.parent):
                for r in _read(f)[1]:
                    done.setdefault(self._ident(r), _plain(r))
            _write_whole(self.path, [self.header, *done.values()])
            for f in _rank_files(self.path.parent):
                f.unlink()
        distributed.barrier()
        return done

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
        where = self.own or f"{self.path} (by rank 0)"
        return (f"{len(self)} finished run(s) kept in {where}; the same command with --resume runs only the "
                f"missing ones")


def _rank_files(folder: Path) -> list[Path]:
    """The runs files of a grid's ranks under torchrun (``runs.rank0.jsonl``, ...), in rank order."""
    return sorted(folder.glob("runs.rank*.jsonl"), key=lambda f: int(f.name[9:-6]) if f.name[9:-6].isdigit() else -1)


def _read(path: Path) -> tuple[dict, list[dict]]:
    """The header and runs of a runs file (a last line cut short by a kill is dropped)."""
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0])
    except (IndexError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a runs file written by glico (no header line); "
                         f"move it away or give another --out") from None
    runs = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines):  # only the last line can be cut short by a kill
                raise ValueError(f"{path}: line {i} is not JSON; the file was edited or damaged") from None
    return header, runs


def _write_whole(path: Path, objects: list[dict]) -> None:
    """``path`` written whole (one JSON object per line) through a temporary file, then fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for obj in objects:
            f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
