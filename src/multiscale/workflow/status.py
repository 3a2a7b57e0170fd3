"""Progress while cycling, the end-of-run summary, and ``multiscale status DIR``.

Everything is read from ``ROOT/state.json``; ``status`` works while a run is going (the lock
file tells whether a driver holds the root) and after it was killed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from .state import STATE_NAME, RunState

__all__ = ["Reporter", "status_table", "show_status", "root_is_locked", "resolve_root"]

_ICON = {"done": "[green]done[/]", "running": "[cyan]running[/]", "stopped": "[yellow]stopped[/]",
         "failed": "[red]FAILED[/]", "pending": "[dim]pending[/]", "killed": "[yellow]interrupted[/]"}


def make_console():
    """A rich Console; 140 columns when output goes to a file (batch logs), not 80."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=140)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return ""
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}:{s:02d}"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _fmt_e(v: Any) -> str:
    if v is None:
        return ""
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def _epot(en: dict) -> str:
    """Potential energy with what it is: 'avg' over the run's energy frames, 'final' after EM,
    'last' (last frame only: records of older versions)."""
    v = en.get("potential_kj_mol")
    if v is None:
        return ""
    kind = "final" if "converged" in en else ("avg" if en.get("averaged") else "last")
    return f"{_fmt_e(v)} {kind}"


def _avg_note(en: dict, key: str, label: str, unit: str, fmt: str) -> str | None:
    v = en.get(key)
    if v is None:
        return None
    if en.get("averaged"):
        last = en.get(f"last_{key}")
        return f"{label} {v:{fmt}}{unit} avg" + (f" (last {last:{fmt}})" if last is not None else "")
    return f"{label} {v:{fmt}}{unit} (last frame)"


def _size(rec: dict) -> str:
    """'3060 atoms', '255 beads', '3060 atoms -> 255 beads' (coarse-grain), '255 beads -> 3060 atoms'."""
    info = rec.get("info") or {}
    a, b = info.get("atoms"), info.get("beads")
    if a is not None and b is not None:
        return f"{a} atoms -> {b} beads" if rec.get("stage") == "coarse-grain" else f"{b} beads -> {a} atoms"
    if a is not None:
        return f"{a} atoms"
    if b is not None:
        return f"{b} beads"
    return ""


def _notes(rec: dict) -> str:
    info, en = rec.get("info") or {}, rec.get("energies") or {}
    notes = []
    if "converged" in en:
        notes.append(f"Fmax {en.get('fmax', 0):.3g}" + ("" if en["converged"] else " (not converged)"))
    if info.get("frames") is not None:
        notes.append(f"{info['frames']} frames to {info.get('last_time_ps')} ps")
    for key, label, unit, fmt in (("temperature_k", "T", " K", ".1f"), ("density_kg_m3", "rho", " kg/m3", ".0f")):
        note = _avg_note(en, key, label, unit, fmt)
        if note:
            notes.append(note)
    if info.get("apl_nm2") is not None:
        notes.append(f"APL {info['apl_nm2']:.3f} nm2" + (f", D_PP {info['thickness_nm']:.2f} nm" if info.get("thickness_nm") else ""))
    if rec.get("stage") == "martinize" and isinstance(info.get("ss"), dict):
        notes.append("ss " + ", ".join(f"{n} {s}" for n, s in info["ss"].items()))
    if info.get("ns_per_day"):
        notes.append(f"{info['ns_per_day']:.3g} ns/day")
    if "ok" in info:
        clashes = sum(v for k, v in info.items() if k.endswith("clash_pairs_final") and k.startswith(("inter", "intra")))
        chain = [f"{info[f'chain_{k}_final']} {label}" for k, label in (("cis_nonpro", "cis non-Pro peptide bond(s)"),
                 ("clashing_residues", "clashing residue(s)"), ("wrong_centres", "wrong chiral centre(s)"))
                 if info.get(f"chain_{k}_final")]
        notes.append(f"certificate {'ok' if info['ok'] else 'issues'}: {clashes} clash pairs left for EM"
                     + (f"; chains: {', '.join(chain)}" if chain else ""))
    if rec.get("stage") == "train" and info.get("frames") is not None:
        notes = [f"{info['frames']} frames" + (", fine-tuned" if info.get("fine_tuned") else "")]
    att = rec.get("attempts") or []
    if len(att) > 1:
        notes.append(f"{len(att)} attempts" + (", continued" if any(a.get("continued") for a in att) else ""))
    if rec.get("status") in ("failed", "stopped") and rec.get("error"):
        notes.append(str(rec["error"])[:80])
    return "; ".join(notes)


def root_is_locked(root: Path) -> bool:
    """True when a `multiscale cycle` process holds ROOT/.lock."""
    import fcntl

    p = Path(root) / ".lock"
    if not p.is_file():
        return False
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _status_of(rec: dict | None, live: bool) -> str:
    if rec is None:
        return "pending"
    s = rec.get("status", "pending")
    if s == "running" and not live:
        return "killed"
    return s


def status_table(state: RunState, title: str | None = None, keys: list[str] | None = None, width: int | None = None):
    """A rich Table of the stages in ``keys`` (default: the plan).  For a console narrower than
    120 columns (``width``) the size goes into the notes, which then get the room."""
    from rich.table import Table

    live = root_is_locked(state.root)
    narrow = width is not None and width < 120
    from rich import box

    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    names = [re.sub(r"^cycle_\d+/", "", k) for k in (keys if keys is not None else state.plan)]
    # stage names never shrink ('restrained-em' / 'restrained-eq' stay distinguishable at 80 columns)
    for col, kw in (("cyc", {"justify": "right", "no_wrap": True}),
                    ("stage", {"no_wrap": True, "min_width": max(map(len, names), default=5)}),
                    ("status", {"no_wrap": True}), ("wall", {"justify": "right", "no_wrap": True}),
                    ("Epot kJ/mol", {"justify": "right", "no_wrap": True}), ("size", {"justify": "right"}),
                    ("notes", {"overflow": "fold", "ratio": 1})):
        if not (narrow and col == "size"):
            t.add_column(col, **kw)
    now = time.time()
    for key in keys if keys is not None else state.plan:
        rec = state.record(key)
        m = re.match(r"cycle_(\d+)/(.+)", key)
        cyc, name = (str(int(m.group(1))), m.group(2)) if m else ("", key)
        st = _status_of(rec, live)
        wall = rec.get("wall_s") if rec else None
        if rec and st == "running":
            att = (rec.get("attempts") or [{}])[-1]
            try:
                started = time.mktime(time.strptime(att["started"][:19], "%Y-%m-%dT%H:%M:%S"))
                wall = (rec.get("wall_s") or 0) + (now - started)
            except (KeyError, ValueError, TypeError):
                pass
        en = (rec or {}).get("energies") or {}
        size, notes = _size(rec or {}), _notes(rec or {})
        cells = [size, notes] if not narrow else ["; ".join(x for x in (size, notes) if x)]
        t.add_row(cyc, name, _ICON.get(st, st), _fmt_s(wall) if wall else "", _epot(en), *cells)
    t.caption = "Epot, T, rho: averages over each run's energy frames (avg; last frame in brackets); final: after EM"
    t.caption_justify = "left"
    return t


def resolve_root(target: str | os.PathLike, replica: int | None = None) -> Path:
    """An output root from a folder holding state.json, or from a sim.yaml (its ``output``)."""
    p = Path(target).expanduser()
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        from ..config import load_config

        return load_config(p).root(replica)
    if replica is not None and (p / f"replica_{replica}").is_dir():
        return p / f"replica_{replica}"
    if p.is_dir() and not (p / STATE_NAME).is_file() and (p / "sim.yaml").is_file():
        from ..config import load_config

        return load_config(p / "sim.yaml").root(replica)
    return p


def _counts_line(state: RunState, live: bool) -> str:
    plan = state.plan
    c: dict[str, int] = {}
    for k in plan:
        s = _status_of(state.record(k), live)
        c[s] = c.get(s, 0) + 1
    parts = [f"{c.get('done', 0)}/{len(plan)} stages done"]
    for s in ("running", "killed", "stopped", "failed"):
        if c.get(s):
            parts.append(f"{c[s]} {'interrupted' if s == 'killed' else s}")
    cycles = sorted({int(m.group(1)) for k in plan if (m := re.match(r"cycle_(\d+)/", k))})
    done_cycles = [cy for cy in cycles if all(state.status(k) == "done" for k in plan if k.startswith(f"cycle_{cy:03d}/"))]
    if cycles:
        parts.append(f"{len(done_cycles)}/{len(cycles)} cycles complete")
    return ", ".join(parts)


def show_status(target: str | os.PathLike, replica: int | None = None, check: bool = False, console=None) -> int:
    """Print the status table of an output root.  With ``check``: print one line and return
    0 when every planned stage is done, 1 otherwise."""
    root = resolve_root(target, replica)
    state = RunState.load(root)
    live = root_is_locked(root)
    console = console or make_console()
    line = _counts_line(state, live) + (" -- a run is in progress" if live else "")
    if check:
        done = state.is_done()
        console.print(f"{root}: {'all done' if done else 'not finished'} ({line})", highlight=False)
        return 0 if done else 1
    total = sum((state.record(k) or {}).get("wall_s") or 0 for k in state.plan)
    console.print(f"[bold]{root}[/]: {line}; {_fmt_s(total)} of stage time", highlight=False)
    console.print(status_table(state, width=console.width))
    failed = [k for k in state.plan if state.status(k) == "failed"]
    for k in failed:
        rec = state.record(k)
        console.print(f"[red]{k} failed:[/] {rec.get('error')}  [dim](log: {root / (rec.get('log') or '')})[/]", highlight=False)
    report = root / "report" / "report.html"
    if report.is_file():
        console.print(f"report: {report}  (`multiscale report {root}` updates it)", highlight=False, soft_wrap=True)
    return 0


# ------------------------------------------------------------------------------------------
# live progress for `multiscale cycle`


def _mdrun_progress(st) -> str:
    """'step N/M (x %)' from the tail of the stage's mdrun .log, or ''."""
    nsteps = getattr(st, "nsteps", 0)
    p = st.workdir / f"{st.name}.log"
    if not nsteps or not p.is_file():
        return ""
    try:
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - 16384))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    m = None
    for m in re.finditer(r"^\s+Step\s+Time\s*\n\s+(\d+)\s+([-\d.eE+]+)", tail, re.M):  # noqa: B007 (last match used)
        pass
    if m is None:
        return ""
    step = int(m.group(1))
    return f"step {step}/{nsteps} ({100.0 * step / nsteps:.0f} %)"


def live_line(key: str, description: str, elapsed: str, progress: str, continued: bool, width: int) -> str:
    """The running stage's one line, at most ``width`` characters: the stage key, elapsed time
    and progress always whole; the description shortened (or left out) to fit."""
    head = f"{key}  {elapsed}" + (f"  {progress}" if progress else "") + ("  (continued)" if continued else "")
    room = width - len(head) - 2
    if room >= 8 and description:
        d = description if len(description) <= room else description[: room - 1] + "\u2026"
        return f"{head}  {d}"
    return head[:max(width, len(key))]


class Reporter:
    """Stage lines as they finish, a live line for the running stage (on a terminal), and the
    summary table at the end."""

    def __init__(self, console=None, live: bool | None = None):
        self.console = console or make_console()
        self.live_enabled = self.console.is_terminal if live is None else bool(live)
        self.live = None
        self.current = None
        self.t_stage = 0.0
        self.skipped = 0
        self.continued = False

    def __rich__(self):
        from rich.spinner import Spinner

        st = self.current
        if st is None:
            return ""
        el = time.monotonic() - self.t_stage
        extra = _mdrun_progress(st) if st.kind == "gromacs" else ""
        text = live_line(st.key, st.description, _fmt_s(el), extra, self.continued, self.console.width - 3)
        if getattr(self, "_spinner", None) is None:
            self._spinner = Spinner("dots", text=text)
        else:
            self._spinner.update(text=text)
        return self._spinner

    def _print(self, *a, **k):
        self.console.print(*a, highlight=False, **k)

    def start(self, plan, state, root, killed):
        done = sum(1 for s in plan if state.status(s.key) == "done")
        cycles = max((s.cycle for s in plan), default=0)
        self._print(f"[bold]multiscale cycle[/] -> {root}: {len(plan)} stages in {cycles} cycle(s), "
                    f"{done} already done, {len(plan) - done} to run")
        by_cycle: dict[int, list] = {}
        for s in plan:
            by_cycle.setdefault(s.cycle, []).append(s)
        todo = [c for c, ss in by_cycle.items() if any(state.status(s.key) != "done" for s in ss)]
        for c in todo[:3]:
            names = ", ".join(f"[green]{s.name}[/]" if state.status(s.key) == "done" else s.name for s in by_cycle[c])
            self._print(f"  cycle {c}: {names}")
        if len(todo) > 3:
            self._print(f"  ... and {len(todo) - 3} more cycle(s)")
        for k in killed:
            self._print(f"[yellow]{k} was interrupted[/] (process killed): it continues from its checkpoint or is redone")

    def skip(self, st, rec):
        self.skipped += 1

    def begin(self, st, continued):
        if self.skipped:
            self._print(f"[dim]{self.skipped} finished stage(s) skipped (inputs unchanged)[/]")
            self.skipped = 0
        self.current, self.t_stage, self.continued = st, time.monotonic(), continued
        if self.live_enabled:
            from rich.live import Live

            self.live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self.live.start()
        else:
            self._print(f"{time.strftime('%H:%M:%S')} {st.key}: started ({st.description})"
                        + (" -- continuing from checkpoint" if continued else ""))

    def _stop_live(self):
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.current = None

    def end(self, st, rec):
        self._stop_live()
        en = rec.get("energies") or {}
        e = f"  Epot {_epot(en)} kJ/mol" if en.get("potential_kj_mol") is not None else ""
        size = _size(rec)
        notes = _notes(rec)
        self._print(f"{time.strftime('%H:%M:%S')} [green]{st.key}[/] done in {_fmt_s(rec.get('wall_s'))}{e}"
                    + (f"  {size}" if size else "") + (f"  [dim]{notes}[/]" if notes else ""))

    def stopped(self, st, reason):
        self._stop_live()
        self._print(f"{time.strftime('%H:%M:%S')} [yellow]{st.key} stopped[/]: {reason}")

    def failed(self, st, msg, log=None):
        self._stop_live()
        self._print(f"{time.strftime('%H:%M:%S')} [red]{st.key} FAILED[/]: {msg}\n  full log: {log or st.log}")

    def note(self, text):
        self._print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}")

    def finish(self, plan, state, result, wall):
        self._stop_live()
        if self.skipped:
            self._print(f"[dim]{self.skipped} finished stage(s) skipped (inputs unchanged)[/]")
            self.skipped = 0
        keys = [s.key for s in plan]
        self.console.print(status_table(state, title=f"Summary ({result}; this run {_fmt_s(wall)})", keys=keys,
                                        width=self.console.width))
        if result == "done":
            self._print(f"[bold green]all {len(keys)} stages done[/] -- outputs in {state.root}")
        elif result in ("stopped", "stopped-after"):
            self._print("not finished: run the same command again to continue "
                        f"(`multiscale status {state.root}` shows what is left)")
