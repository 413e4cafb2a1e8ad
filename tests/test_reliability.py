"""Nothing lost, nothing faked: one writer per output, outputs checked before work, errors of the
operating system and signals as one line, and crashes that a re-run recovers from."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datafactory.datasets.dataset import load_manifest

FACTORY = [sys.executable, "-m", "factory_app.cli"]
SMALL = ["--config", "mos2_bilayer_slip", "--size", "48", "-q"]


def factory(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*FACTORY, *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def one_line(err: str) -> str:
    """The single stderr line of a refused command (fails on more, on none, or on a traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative names), to show nothing was touched."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial" in p.name or p.name.endswith(".lock")]


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def wait_for(predicate, seconds: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended (exit {proc.returncode}) before the test could act")
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def recorded_shards(out: Path) -> list[dict]:
    try:
        return json.loads((out / "manifest.json").read_text())["shards"]
    except (OSError, ValueError, KeyError):
        return []


# --------------------------------------------------------------------------- one writer per output


def test_two_concurrent_generates_give_one_refusal_and_one_valid_dataset(tmp_path):
    out = tmp_path / "ds"
    args = [*FACTORY, "generate", *SMALL, "--n", 1500, "--shard-size", 50, "--workers", 1, "--out", out]  # long enough to be running
    first = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".ds.lock"
    wait_for(lambda: lock.is_file() and lock.read_text().strip(), proc=first)
    second = factory(*args[3:])
    assert first.poll() is None, "the first run ended before the second started: the test proved nothing"
    assert second.returncode == 2
    line = one_line(second.stderr)
    assert str(out) in line and f"pid {first.pid}" in line and "generate" in line, line
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert factory("validate", out).returncode == 0
    assert not leftovers(tmp_path)
    # once the first has ended, the same command resumes (nothing to do) and succeeds
    assert factory(*args[3:]).returncode == 0


def test_a_second_claim_in_the_same_process_is_refused(tmp_path):
    from datafactory.errors import FactoryError
    from datafactory.outputs import exclusive_output

    with exclusive_output(tmp_path / "out.h5", "factory simulate"):
        assert "factory simulate" in (tmp_path / ".out.h5.lock").read_text()
        with pytest.raises(FactoryError, match="already being written"):
            with exclusive_output(tmp_path / "out.h5"):
                pass
    assert not (tmp_path / ".out.h5.lock").exists()
    with exclusive_output(tmp_path / "out.h5"):  # released: it can be taken again
        pass


def test_a_stale_lock_file_of_a_killed_writer_is_taken_over(tmp_path):
    from datafactory.outputs import exclusive_output

    (tmp_path / ".out.h5.lock").write_text("pid 1 on elsewhere (factory simulate)\n")  # no process holds it
    with exclusive_output(tmp_path / "out.h5", "factory translate"):
        assert "factory translate" in (tmp_path / ".out.h5.lock").read_text()


# --------------------------------------------------------------------------- outputs checked before any work


def test_outputs_that_cannot_be_used_are_refused_before_work(run_cli, tmp_path):
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    code, _, err = run_cli("simulate", "--n", 1, "--size", 32, "--out", fifo, "-q")
    assert code == 2 and "not a regular file" in one_line(err)
    assert Path(fifo).is_fifo()

    target = tmp_path / "elsewhere.h5"
    target.write_bytes(b"precious")
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    code, _, err = run_cli("simulate", "--n", 1, "--size", 32, "--out", link, "-q")
    assert code == 2 and "symbolic link" in one_line(err)
    assert link.is_symlink() and target.read_bytes() == b"precious"

    (tmp_path / "sim.preview.png").mkdir()  # the preview cannot be written: nothing is
    code, _, err = run_cli("simulate", "--n", 1, "--size", 32, "--out", tmp_path / "sim.h5", "-q")
    assert code == 2 and "sim.preview.png" in one_line(err)
    assert not (tmp_path / "sim.h5").exists()

    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (("generate", *SMALL, "--n", 2, "--out", afile), ("train", "segment", "--data", tmp_path, "--out", afile),
                 ("example", "--out", afile)):
        code, _, err = run_cli(*args)
        assert code == 2 and "is a file" in one_line(err), args
    assert afile.read_text() == "x"
    assert not leftovers(tmp_path)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_unwritable_place_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("simulate", "--n", 1, "--size", 32, "--out", "/proc/self/x/out.h5", "-q")
    assert code == 2 and "cannot write in '/proc/self'" in one_line(err)
    code, _, err = run_cli("example", "--out", "/proc/x")
    assert code == 2 and one_line(err).startswith("error:")
    if Path("/sys").is_dir() and os.statvfs("/sys").f_flag & os.ST_RDONLY:
        code, _, err = run_cli("simulate", "--n", 1, "--size", 32, "--out", "/sys/out.h5", "-q")
        assert code == 2 and "read-only file system" in one_line(err)


# --------------------------------------------------------------------------- out of space, read-only, no permission


def _fail_on_call(monkeypatch, owner, name: str, call: int, error: int, path_arg: bool = False):
    """Make ``owner.name`` raise OSError(``error``) on its ``call``-th call (1-based)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise OSError(error, os.strerror(error), str(args[0]) if path_arg and args else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    return calls


def test_no_space_while_simulating_keeps_the_older_file(run_cli, tmp_path, monkeypatch):
    from datafactory.datasets import shards

    out = tmp_path / "sim.h5"
    assert run_cli("simulate", "--n", 3, "--size", 32, "--out", out, "--workers", 1, "-q")[0] == 0
    before = digest_tree(tmp_path)
    _fail_on_call(monkeypatch, shards.ShardWriter, "write", 2, errno.ENOSPC)
    code, _, err = run_cli("simulate", "--n", 3, "--size", 32, "--seed", 1, "--out", out, "--workers", 1, "-q")
    assert code == 2 and "No space left on device" in one_line(err)
    assert digest_tree(tmp_path) == before and not leftovers(tmp_path)
    monkeypatch.undo()
    assert run_cli("simulate", "--n", 3, "--size", 32, "--seed", 1, "--out", out, "--workers", 1, "-q")[0] == 0


def test_read_only_disk_while_saving_a_style_keeps_the_older_bundle(run_cli, tmp_path, monkeypatch):
    from pathlib import Path as _Path

    assert run_cli("example", "--out", tmp_path / "exp")[0] == 0
    tif = next((tmp_path / "exp").glob("*.tif"))
    style = tmp_path / "style"
    assert run_cli("fit-style", tif, "--method", "parametric", "--out", style, "-q")[0] == 0
    before = digest_tree(style)
    _fail_on_call(monkeypatch, _Path, "write_text", 1, errno.EROFS, path_arg=True)  # style.json
    code, _, err = run_cli("fit-style", tif, "--method", "parametric", "--spread", 0.2, "--out", style, "-q")
    assert code == 2 and "Read-only file system" in one_line(err)
    assert digest_tree(style) == before and not leftovers(tmp_path)


def test_no_space_in_the_middle_of_generate_then_a_rerun_resumes(run_cli, tmp_path, monkeypatch):
    from factory_app.workflows import generate

    out = tmp_path / "ds"
    args = ("generate", *SMALL, "--n", 12, "--shard-size", 4, "--workers", 1, "--out", out)
    _fail_on_call(monkeypatch, generate, "write_json_atomic", 3, errno.ENOSPC)  # 1: skeleton, 2: recovery, 3: first shard
    code, _, err = run_cli(*args)
    assert code == 2 and "No space left on device" in one_line(err)
    assert not leftovers(tmp_path)
    monkeypatch.undo()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert run_cli("validate", out)[0] == 0


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig, whom", [(signal.SIGINT, "group"), (signal.SIGTERM, "parent"), (signal.SIGTERM, "group")])
def test_a_signal_ends_generate_with_one_line_and_a_rerun_resumes(tmp_path, sig, whom):
    out = tmp_path / "ds"
    args = [str(a) for a in [*FACTORY, "generate", *SMALL, "--n", 64, "--shard-size", 4, "--workers", 2, "--out", out]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(recorded_shards(out)) >= 1, proc=proc)
        kept = {s["file"]: os.stat(out / s["file"]) for s in recorded_shards(out)}
        if whom == "group":  # Ctrl-C in a terminal reaches every process of the foreground group
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + sig, err
    line = one_line(err)
    assert line.startswith("interrupted") and "re-run the same command to resume" in line
    wait_for(lambda: not group_alive(proc.pid), seconds=10)  # workers and the resource tracker are gone
    assert not list((out / "shards").glob("*.partial"))
    assert load_manifest(out)["completed"] is None
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for name, info in kept.items():  # the shards finished before the signal were kept, not redone
        now = os.stat(out / name)
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (info.st_ino, info.st_mtime_ns, info.st_size), name
    assert factory("validate", out).returncode == 0


def test_sigterm_ends_simulate_without_partial_files(tmp_path):
    out = tmp_path / "sim.h5"
    args = [str(a) for a in [*FACTORY, "simulate", "--n", 400, "--size", 64, "--workers", 2, "--out", out]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "sim.h5.partial").exists() and (tmp_path / "sim.h5.partial").stat().st_size > 0, proc=proc)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err
    last = [line for line in err.splitlines() if line.strip()][-1]  # the progress bar is on stderr too
    assert last.startswith("interrupted (SIGTERM)") and "Traceback" not in err, err
    wait_for(lambda: not group_alive(proc.pid), seconds=10)
    assert not out.exists() and not leftovers(tmp_path)


# A pool worker told to stop while its result is half sent: the parent's reader thread must
# not be left waiting for the rest of the message (CI once hung 120 s on this in simulate).
STOP_DURING_SEND = """
import multiprocessing, time
from concurrent.futures import ProcessPoolExecutor
from datafactory.interrupt import init_worker_signals, stop_pool

def big_result():
    return b"x" * (192 << 20)

def bytes_read():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=init_worker_signals)
    start = bytes_read()
    future = pool.submit(big_result)
    while bytes_read() - start < (32 << 20):  # the parent has read a sixth of the result
        time.sleep(0.0002)
    stop_pool(pool)
    print("stopped", flush=True)
"""


def test_a_worker_stopped_in_the_middle_of_sending_its_result_does_not_hang_the_parent(tmp_path):
    script = tmp_path / "stop_during_send.py"
    script.write_text(STOP_DURING_SEND)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "stopped", err


def test_select_with_keep_0_is_one_line_before_anything_is_read(run_cli, tmp_path):
    code, _, err = run_cli("select", "--sim", tmp_path / "none.h5", "--exp", tmp_path / "none.tif", "--keep", 0, "--out", tmp_path / "kept.h5")
    assert code == 2 and "--keep" in one_line(err)


# --------------------------------------------------------------------------- Dask scheduler


def test_a_bad_scheduler_is_refused_before_the_dataset_is_touched(run_cli, tmp_path):
    out = tmp_path / "ds"
    code, _, err = run_cli("generate", *SMALL, "--n", 4, "--scheduler", "bogus://x", "--out", out)
    assert code == 2 and "--scheduler" in one_line(err)
    assert not out.exists()
    code, _, err = run_cli("generate", *SMALL, "--n", 4, "--scheduler", "tcp://127.0.0.1:1", "--out", out)
    assert code == 2 and "cannot reach" in one_line(err)
    assert not out.exists() and not leftovers(tmp_path)
    code, _, err = run_cli("generate", *SMALL, "--n", 4, "--workers", 1, "--seed", 3, "--out", out)  # the corrected re-run
    assert code == 0, err


# --------------------------------------------------------------------------- DRIT: kill -9 between checkpoints, then --resume


def test_drit_fit_killed_between_checkpoints_resumes_to_the_same_weights(tmp_path):
    import tifffile
    import torch
    from conftest import make_plan

    from datafactory.simulation.samples import simulate_sample
    from translators.parametric import StyleParameters, render

    pixel_A = 0.12
    plan = make_plan({"microscope": {"image_size_px": 64, "pixel_size_A": pixel_A, "source_size_A": 0.6}})
    noisy = StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, spread=0.0)
    image = render(simulate_sample(plan, 1, 0).image, noisy, pixel_A, np.random.default_rng(0))[0]
    exp = tmp_path / "exp.tif"
    tifffile.imwrite(exp, image, imagej=True, resolution=(1 / pixel_A, 1 / pixel_A), metadata={"unit": "A"})
    common = ["fit-style", exp, "--config", "mos2_monolayer", "--iterations", 16, "--checkpoint-every", 4, "--crop", 32,
              "--pool", 4, "--no-select", "--no-physics-prior", "--threads", 1, "--device", "cpu", "-q"]
    whole = factory(*common, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    style = tmp_path / "killed"
    checkpoint = tmp_path / "killed.training" / "checkpoint.pt"
    proc = subprocess.Popen([*FACTORY, *map(str, common), "--out", str(style)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for(checkpoint.exists, proc=proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not style.exists(), "the run finished before it could be killed"
    iteration = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 4 <= iteration < 16
    resumed = factory(*common, "--resume", "--out", style)
    assert resumed.returncode == 0, resumed.stderr
    assert not leftovers(tmp_path)
    a = torch.load(tmp_path / "whole" / "weights.pt")
    b = torch.load(style / "weights.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _RunsCode:
    """A pickle that would create ``marker`` when loaded by a full unpickler."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_drit_checkpoint_does_not_run_its_code(tmp_path):
    import pickle

    import tifffile

    exp = tmp_path / "exp.tif"
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    tifffile.imwrite(exp, image, imagej=True, resolution=(1 / 0.12, 1 / 0.12), metadata={"unit": "A"})
    work = tmp_path / "style.training"
    work.mkdir()
    marker = tmp_path / "code-ran"
    with open(work / "checkpoint.pt", "wb") as f:
        pickle.dump({"settings": _RunsCode(marker)}, f)
    before = digest_tree(tmp_path)
    result = factory("fit-style", exp, "--method", "drit", "--config", "mos2_monolayer", "--iterations", 4, "--crop", 32, "--pool", 4,
                     "--no-select", "--no-physics-prior", "--threads", 1, "--device", "cpu", "--resume", "-q", "--out", tmp_path / "style")
    assert result.returncode == 2, result.stderr
    assert "checkpoint" in one_line(result.stderr)
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert digest_tree(tmp_path) == before


# --------------------------------------------------------------------------- limits of the disk and of the numbers


def _file_size_limit(n_bytes: int):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return limit


@pytest.mark.parametrize("command", ["simulate", "generate"])
def test_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, command):
    """Under ``ulimit -f`` the HDF5 library used to crash (segmentation fault after the error,
    a BrokenProcessPool traceback from generate) and leave .partial and lock files."""
    out = tmp_path / ("o.h5" if command == "simulate" else "ds")
    args = ["--n", 64, "--shard-size", 8, "--workers", 1] if command == "generate" else ["--n", 64, "--workers", 1]
    result = subprocess.run([*FACTORY, command, "--config", "mos2_monolayer", "--size", "128", "-q", *map(str, args), "--out", str(out)],
                            capture_output=True, text=True, timeout=600, preexec_fn=_file_size_limit(200_000))
    assert result.returncode in (1, 2), result.stderr
    assert "File too large" in one_line(result.stderr)
    assert not leftovers(tmp_path)
    assert not any(p.name.endswith(".lock") for p in tmp_path.iterdir())
    if command == "simulate":
        assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--n", 10**12], "--n: must be <= 10,000,000"),
    (["--seed", 12345678901234567890123], "--seed: must be between 0 and 4294967295"),
    (["--n", 9_000_000, "--size", 4096], "needs at least"),  # 300 TB
])
@pytest.mark.parametrize("command", ["simulate", "generate"])
def test_impossible_runs_are_refused_before_work(tmp_path, command, args, message):
    out = tmp_path / ("o.h5" if command == "simulate" else "ds")
    n_args = [] if "--n" in args else ["--n", 4]
    result = factory(command, "--config", "mos2_monolayer", "--size", 48, "-q", *n_args, *args, "--out", out)
    assert result.returncode == 2, result.stderr
    assert message in one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_generate_submits_a_window_of_shards_not_the_whole_run(tmp_path):
    """Memory flat in --n: the driver holds a few submitted shards, never one task per shard of the run."""
    from concurrent.futures import Future

    from tqdm import tqdm

    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan
    from factory_app.workflows.generate import GenerateRequest, _run_tasks

    cfg, path = load_config("mos2_monolayer", {"microscope.image_size_px": 32})
    plan = Plan.from_config(cfg, base_dir=path.parent)
    request = GenerateRequest(
        config_yaml=cfg.to_yaml(), base_dir=str(path.parent.resolve()), n=40, seed=1, out=tmp_path / "ds", shard_size=1,
        command="test", pixel_size_A=float(cfg.microscope.pixel_size_A.values[0]), image_shape=plan.image_shape,
        channel_names=list(plan.channel_names), n_interfaces=plan.n_interfaces,
    )

    class Recorder:
        def __init__(self):
            self.pending, self.most = 0, 0

        def submit(self, fn, task):
            self.pending += 1
            self.most = max(self.most, self.pending)
            future = Future()
            future.add_done_callback(lambda _: setattr(self, "pending", self.pending - 1))
            from factory_app.workflows.generate import make_shard

            future.set_result(make_shard(task))
            return future

    executor = Recorder()
    manifest = _run_tasks(request, executor, False, False, tqdm, 3)
    assert len(manifest["shards"]) == 40
    assert executor.most <= 3


def test_kill_9_of_generate_leaves_no_worker_behind(tmp_path):
    """The pool's workers and its resource tracker used to live on for minutes after the driver
    was killed, writing shards while a re-run held the lock and keeping the caller's stdout open."""
    out = tmp_path / "ds"
    args = [str(a) for a in [*FACTORY, "generate", *SMALL, "--n", 400, "--shard-size", 4, "--workers", 2, "--out", out]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(recorded_shards(out)) >= 1, proc=proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: it has no chance to stop its pool
        proc.wait()
        wait_for(lambda: not group_alive(proc.pid), seconds=10)
        assert proc.stdout.read() == b""  # end of file: no survivor holds the caller's stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    on_disk = sorted(p.name for p in (out / "shards").iterdir())
    time.sleep(1.0)
    assert sorted(p.name for p in (out / "shards").iterdir()) == on_disk  # nothing written after the workers went
    assert not list((out / "shards").glob("*.partial"))
    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert factory("validate", out).returncode == 0


def test_a_file_size_limit_in_any_writer_is_one_line_and_leaves_nothing(tmp_path):
    """torch.save raised a RuntimeError traceback under ``ulimit -f``; plots and the example left half-written files."""
    data = tmp_path / "ds"
    assert factory("generate", *SMALL, "--n", 24, "--shard-size", 12, "--workers", 1, "--out", data).returncode == 0
    assert factory("train", "regress", "--data", data, "--epochs", 1, "-q", "--out", tmp_path / "m").returncode == 0
    place = tmp_path / "limited"
    place.mkdir()
    for args in (("train", "regress", "--data", data, "--epochs", 1, "-q", "--out", place / "m2"),
                 ("evaluate", tmp_path / "m", "--data", data, "-q", "--out", place / "metrics.json"),
                 ("preview", data, "--out", place / "p.png"),
                 ("example", "--out", place / "ex")):
        result = subprocess.run([*FACTORY, *map(str, args)], capture_output=True, text=True, timeout=600, preexec_fn=_file_size_limit(20_000))
        assert result.returncode == 2, (args[0], result.stderr)
        assert "File too large" in one_line(result.stderr) or "written" in result.stderr, result.stderr
        assert list(place.iterdir()) == [], (args[0], list(place.iterdir()))
