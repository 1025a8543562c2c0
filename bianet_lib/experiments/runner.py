"""Running a grid: each run claimed under a lock, trained (resuming a crashed attempt), evaluated and
written atomically as ``<results_dir>/<store>/<run-id>.json``; several processes may share one grid.

A finished run is never repeated; a crashed grid continues where it stopped: each run trains in
``<results_dir>/<store>/runs/<run-id>/`` with ``Trainer.fit(resume=True)``, and that scratch
folder (checkpoints) is deleted once the JSON is written. Each run is claimed under a lock
(``runs/.<run-id>.lock``, an ``flock`` the kernel drops if its holder dies) and re-checked before
it starts, so every run is trained exactly once (:func:`claim_and_execute`). The grids themselves
are defined in ``bianet_lib.experiments.grids``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bianet_lib.experiments.grids import Grid, Run, get_grid, result_path


def lock_path(results_dir: str | Path, grid: Grid | str, run: Run) -> Path:
    """The lock file of one run (held while the run trains; removed when it is released)."""
    store = (grid if isinstance(grid, Grid) else get_grid(grid)).store
    return Path(results_dir) / store / "runs" / f".{run.run_id}.lock"


def _scratch(results_dir: str | Path, grid: Grid, run: Run) -> Path:
    return Path(results_dir) / grid.store / "runs" / run.run_id


def execute_run(grid: Grid, run: Run, results_dir: str | Path, progress: bool = False) -> Path:
    """Train (resuming a crashed attempt), evaluate best.pt (chosen on val), write the JSON.

    The caller holds the run's lock (:func:`claim_and_execute`). A scratch folder left by an
    attempt under another config (the grid's definition changed) is discarded, not mixed in.
    """
    from bianet_lib.data.sources import load_world
    from bianet_lib.data.synthvox import is_fair
    from bianet_lib.engine.evaluate import results_record, write_results_json
    from bianet_lib.engine.protocols import evaluate_model
    from bianet_lib.engine.provenance import provenance_record
    from bianet_lib.engine.trainer import BEST, ConfigMismatchError, Trainer, load_model

    cfg = grid.config(run)
    out = result_path(results_dir, grid, run)
    run_dir = _scratch(results_dir, grid, run)
    start = time.perf_counter()
    provenance = provenance_record(cfg)  # the code as it is now, before training: not at the end
    world = load_world(cfg)
    trainer = Trainer(cfg, world["train"], world["val"], run_dir, progress=progress)
    try:
        history = trainer.fit(resume=True)
    except ConfigMismatchError:
        shutil.rmtree(run_dir)
        trainer = Trainer(cfg, world["train"], world["val"], run_dir, progress=progress)
        history = trainer.fit(resume=True)
    model = load_model(run_dir / BEST, str(trainer.device))
    metrics = evaluate_model(model, world["test"], world["val"], trainer.device)
    record = results_record(metrics, cfg.to_dict(), run.seed)
    record["provenance"] = provenance  # the code that trained it (a stale result is visible)
    if cfg.world_preset == "local" or is_fair(cfg.world_preset):  # the test-bed's mechanism endpoints (bianet_lib.experiments.testbed)
        from bianet_lib.experiments.endpoints import run_endpoints

        record["endpoints"] = run_endpoints(model, cfg, world, trainer.device)
    record["experiment"] = {"grid": grid.name, "name": run.name, "run_id": run.run_id,
                            "overrides": list(run.overrides), "base": list(grid.base), "preset": grid.preset,
                            "wall_s": time.perf_counter() - start, "best_val_acc": trainer.best_val,
                            "epochs_this_attempt": len(history),
                            # every epoch's losses and validation accuracy: how a run that stayed at
                            # chance failed is visible after its checkpoints are gone
                            "history": trainer.records}
    write_results_json(record, out)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


BUSY = "busy"  # claim_and_execute: another process holds the run


def claim_and_execute(grid: Grid, run: Run, results_dir: str | Path, wait: bool = False,
                      progress: bool = False) -> Path | str | None:
    """Run ``run`` unless another process is on it or it is done; safe across processes.

    Takes the run's lock (``fcntl.flock``: released by the kernel when a holder dies, so a
    killed grid never leaves a stale lock), then re-checks the result under the lock. Returns
    the JSON written, None when it was already done (by anyone), or :data:`BUSY` when another
    process holds the lock and ``wait`` is False.
    """
    from bianet_lib.engine.safeio import FileLock

    lock = FileLock(lock_path(results_dir, grid, run))
    if not lock.acquire(blocking=wait):
        return BUSY
    try:
        if result_path(results_dir, grid, run).is_file():  # finished meanwhile (or by a killed
            shutil.rmtree(_scratch(results_dir, grid, run), ignore_errors=True)  # run's leftovers)
            return None
        return execute_run(grid, run, results_dir, progress)
    finally:
        lock.release()


def _remove_finished_scratch(grid: Grid, results_dir: str | Path, finished: list[Run]) -> None:
    """Checkpoints of finished runs that a kill left behind (after the JSON, before the cleanup)."""
    from bianet_lib.engine.safeio import FileLock

    for run in finished:
        if _scratch(results_dir, grid, run).exists():
            lock = FileLock(lock_path(results_dir, grid, run))
            if lock.acquire(blocking=False):
                try:
                    shutil.rmtree(_scratch(results_dir, grid, run), ignore_errors=True)
                finally:
                    lock.release()


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the grid process that started it dies (a killed
    grid must not leave workers training on, and writing results, behind it). Linux: the
    kernel's parent-death signal; elsewhere a thread polling the parent's pid."""
    import signal
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent_pid:  # the parent died before the signal was armed
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _execute_in_worker(grid_name: str, run: Run, results_dir: str, wait: bool) -> str | None:
    out = claim_and_execute(get_grid(grid_name), run, results_dir, wait)
    return None if out is None else str(out)


def pending_runs(grid_name: str, results_dir: str | Path, only: str | None = None) -> list[Run]:
    grid = get_grid(grid_name)
    runs = [r for r in grid.runs if only is None or only in (r.name, r.run_id)]
    if only is not None and not runs:
        raise KeyError(f"grid {grid_name!r} has no run named {only!r}")
    return [r for r in runs if not result_path(results_dir, grid_name, r).is_file()]


def run_grid(grid_name: str, results_dir: str | Path, only: str | None = None, progress: bool = True,
             workers: int | None = None) -> list[Path]:
    """Run every run of the grid that has no result JSON yet; return the JSONs this call wrote.

    Several processes may run one grid on one results folder: each run is claimed under a
    lock and re-checked before it starts (:func:`claim_and_execute`), so every run is trained
    exactly once; runs another process holds are skipped first and waited for at the end (and
    taken over if that process died), so a call returns only when every run is done or failed.

    ``workers`` > 1 trains that many runs at once in separate processes (give each run
    ``num_threads=1`` on a small CPU); None takes the grid's default. Worlds are generated
    once, before any run starts. A run that fails is reported and skipped so that one bad run
    does not cost the rest of a long grid; :class:`GridRunError` then names every failure
    (their runs stay pending, so the next call retries them).
    """
    from tqdm import tqdm

    from bianet_lib.data.sources import load_world

    grid = get_grid(grid_name)
    if grid.check is not None:
        grid.check()
    workers = grid.workers if workers is None else workers
    todo = pending_runs(grid_name, results_dir, only)
    _remove_finished_scratch(grid, results_dir, [r for r in grid.runs if r not in todo])
    done: list[Path] = []
    if not todo:
        return done
    from bianet_lib.data.sources import world_cache_path

    seen = set()
    for run in todo:  # fill the world cache once per distinct world (rho, local scale, ...)
        cfg = grid.config(run)
        key = world_cache_path(cfg) if cfg.data == "synthvox" else None
        if key not in seen:
            seen.add(key)
            load_world(cfg)
    bar = tqdm(total=len(todo), desc=f"grid {grid_name}", disable=not progress, unit="run")
    failed: dict[str, str] = {}
    busy: list[Run] = []

    def finished(run: Run, get_path) -> None:
        try:
            out = get_path()
        except Exception as exc:  # noqa: BLE001 - any failure of one run is reported, not fatal
            failed[run.run_id] = f"{type(exc).__name__}: {exc}"
            bar.write(f"run {run.run_id} failed: {failed[run.run_id]}")
        else:
            if out == BUSY:
                busy.append(run)
                return
            if out is not None:
                done.append(Path(out))
        bar.set_postfix_str(run.run_id)
        bar.update()

    def run_all(runs: list[Run], wait: bool) -> None:
        if workers <= 1:
            for run in runs:
                finished(run, lambda run=run: claim_and_execute(grid, run, results_dir, wait))
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_execute_in_worker, grid_name, run, str(results_dir), wait): run
                       for run in runs}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result)

    run_all(todo, wait=False)
    if busy:  # held by another process: wait for it, then take over what it did not finish
        waiting, busy = busy, []
        run_all(waiting, wait=True)
    bar.close()
    if failed:
        raise GridRunError(grid_name, done, failed)
    return done


class GridRunError(RuntimeError):
    """Some runs of a grid failed; ``written`` holds the results the others wrote."""

    def __init__(self, grid: str, written: list[Path], failed: dict[str, str]):
        self.written, self.failed = written, failed
        lines = "\n".join(f"  {run_id}: {why}" for run_id, why in failed.items())
        super().__init__(f"grid {grid!r}: {len(failed)} run(s) failed ({len(written)} written; "
                         f"rerun to retry the failed ones):\n{lines}")
