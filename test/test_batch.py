"""speechsr batch (batch_upsample.py, speechsr.batch, speechsr.cluster, speechsr.storage): planning,
resuming and the results manifest in-process (fast), then on a local Ray session shared by the
module's slow tests: outputs byte-identical to `speechsr upsample`, a re-run that skips
everything, a worker killed mid-run, and two Ray nodes started by `ray start` on loopback.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT, run_script, speech_like
from speechsr import audio, batch, cli, settings, storage
from speechsr.channel import TelephoneChannel

N_FILES = 20


def write_archive(root: Path, n: int = N_FILES) -> Path:
    """``n`` files in three folders: 4 kHz (wav, flac; 3 s = one window, or 6 s = two), 8 kHz
    telephone-channel calls, and one broken file."""
    for i in range(n - 1):
        x = speech_like(3.0 if i % 3 else 6.0, seed=i)
        sub = root / f"spk{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 4 == 3:
            audio.write_audio(sub / f"call{i:02d}.wav", TelephoneChannel().apply(x, 16000, seed=i), 8000, "PCM_16")
        else:
            audio.write_audio(sub / f"clip{i:02d}.{'flac' if i % 2 else 'wav'}",
                              audio.sox_downsample(x, 16000, 4000), 4000, "PCM_16")
    (root / "spk0" / "broken.wav").write_bytes(b"RIFF\x00\x01garbage" + os.urandom(2000))
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive") / "in")


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


def cli_reference(script_main, src: Path, out: Path, cpus: int) -> dict[str, str]:
    """`speechsr upsample SRC -o OUT` with this process limited to ``cpus`` CPUs, as a worker with
    ``--cpus-per-worker cpus`` runs (LiteRT's lone-window interpreter uses that many threads)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(saved)[:cpus]))
    try:
        res = script_main("upsample_audio_file.py", src, "-o", out, "-q")
    finally:
        os.sched_setaffinity(0, saved)
    assert res.returncode == 2 and "1 of 20 files failed" in res.stderr  # the broken file
    return digests(out)


def statuses(rows) -> dict[str, str]:
    return {Path(r["input"]).name: r["status"] for r in rows}


def check_rows(rows, archive: Path) -> None:
    assert len(rows) == N_FILES
    st = statuses(rows)
    assert st.pop("broken.wav").startswith("error: ") and "broken.wav" in rows[0]["status"]
    assert set(st.values()) == {"ok"}
    by_name = {Path(r["input"]).name: r for r in rows}
    assert by_name["call03.wav"]["input_rate"] == 8000 and "telephone" in by_name["call03.wav"]["reason"]
    assert by_name["clip00.wav"]["model"] == "pretrained" and by_name["clip00.wav"]["duration_s"] == 6.0
    assert all(r["model_version"] and r["worker"] and r["output_bytes"] > 0 for r in rows if r["status"] == "ok")


# ------------------------------------------------------------------ in-process (no Ray)

def test_plan_mirrors_the_tree_and_reads_manifests(archive, tmp_path):
    tasks = batch.plan(str(archive), str(tmp_path / "out"))
    assert len(tasks) == N_FILES and tasks[0]["input"].endswith("spk0/broken.wav")
    assert {Path(t["output"]).relative_to(tmp_path / "out").as_posix() for t in tasks} >= {
        "spk1/clip01_upsampled.wav", "spk0/call03_upsampled.wav"}
    globbed = batch.plan(str(archive / "spk*" / "*.flac"), str(tmp_path / "out"))
    assert [Path(t["output"]).relative_to(tmp_path / "out").as_posix() for t in globbed] == [
        "spk0/clip09_upsampled.wav", "spk1/clip01_upsampled.wav", "spk1/clip13_upsampled.wav",
        "spk2/clip05_upsampled.wav", "spk2/clip17_upsampled.wav"]
    rows = [{"path": "in/spk1/clip01.flac", "output": "a/x.wav"}, {"path": str(archive / "spk2/clip02.wav"), "output": ""}]
    with (archive.parent / "list.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["path", "output"])
        w.writeheader()
        w.writerows(rows)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), archive.parent / "list.parquet")
    for manifest in ("list.csv", "list.parquet"):
        tasks = batch.plan(str(archive.parent / manifest), str(tmp_path / "out"))
        assert [t["output"] for t in tasks] == [str(tmp_path / "out/a/x.wav"), str(tmp_path / "out/spk2/clip02_upsampled.wav")]
    (archive.parent / "bad.csv").write_text("file\nx.wav\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        batch.plan(str(archive.parent / "bad.csv"), str(tmp_path / "out"))


def test_run_in_process_resumes_and_rows_errors(archive, tmp_path):
    """The job without Ray: a broken file is a row; a re-run skips every complete file and
    retries the failed one; a missing output or a changed size is redone."""
    up = settings.load("upsampling", settings.DEFAULT_SETTINGS_DIR)
    out = tmp_path / "out"
    tasks = [t for t in batch.plan(str(archive), str(out)) if "spk0" in t["input"]]  # 7 files
    worker = batch.FileWorker(up)
    rows = batch.run(tasks, str(out), batch.execute_here(worker))
    assert [r["status"] for r in rows].count("ok") == len(tasks) - 1
    manifest = list(csv.DictReader((out / "results.csv").open()))
    assert [r["status"] for r in manifest] == [r["status"] for r in rows]
    assert not list(out.rglob(".*part*"))
    again = batch.run(tasks, str(out), batch.execute_here(worker))
    assert [r["status"] for r in again][1:] == ["skipped"] * (len(tasks) - 1) and again[0]["status"].startswith("error")
    Path(rows[1]["output"]).unlink()
    (out / "results.parquet").unlink()  # the CSV serves alone
    redo = batch.run(tasks, str(out), batch.execute_here(worker))
    assert redo[1]["status"] == "ok" and {r["status"] for r in redo[2:]} == {"skipped"}
    kept = [k for k in batch.COLUMNS if k not in ("status", "seconds")]
    assert [redo[2][k] for k in kept] == [rows[2][k] for k in kept]  # read back from the CSV, typed


def test_interrupted_job_keeps_its_rows_and_resumes(archive, tmp_path):
    """Ctrl-C after three files: the manifest written on the way out holds them, and the re-run
    does only the rest."""
    up = settings.load("upsampling", settings.DEFAULT_SETTINGS_DIR)
    out = tmp_path / "out"
    tasks = [t for t in batch.plan(str(archive), str(out)) if "spk1" in t["input"]]
    worker = batch.FileWorker(up)

    def interrupted(todo):
        for i, task in enumerate(todo):
            if i == 3:
                raise KeyboardInterrupt
            yield worker.process(task)

    with pytest.raises(KeyboardInterrupt):
        batch.run(tasks, str(out), interrupted)
    assert [r["status"] for r in batch.read_results(str(out))] == ["ok"] * 3
    done = []
    rows = batch.run(tasks, str(out), batch.execute_here(worker), on_row=done.append)
    assert [r["status"] for r in rows] == ["skipped"] * 3 + ["ok"] * (len(tasks) - 3) and len(done) == len(tasks) - 3


def test_remote_locations_through_fsspec(archive, tmp_path):
    """Inputs, outputs and the manifest on a filesystem that only fsspec knows (memory://)."""
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("pyarrow")
    mem = fsspec.filesystem("memory")
    src = archive / "spk1" / "clip01.flac"
    mem.pipe("/archive/a/clip01.flac", src.read_bytes())
    tasks = batch.plan("memory://archive", "memory://out")
    assert [t["output"] for t in tasks] == ["memory://out/a/clip01_upsampled.wav"]
    up = settings.load("upsampling", settings.DEFAULT_SETTINGS_DIR)
    rows = batch.run(tasks, "memory://out", batch.execute_here(batch.FileWorker(up)))
    assert rows[0]["status"] == "ok"
    local = tmp_path / "clip01_upsampled.wav"
    batch.FileWorker(up).process({"index": 0, "input": str(src), "output": str(local)})
    assert mem.cat("/out/a/clip01_upsampled.wav") == local.read_bytes()
    assert batch.read_results("memory://out")[0]["output_bytes"] == local.stat().st_size
    assert batch.resume(tasks, "memory://out")[0] == []


def test_without_ray_one_line_and_exit_2(archive, tmp_path, script_main, monkeypatch):
    from speechsr import cluster
    monkeypatch.setattr(cluster, "available", lambda: False)
    res = script_main("batch_upsample.py", archive, "-o", tmp_path / "out")
    assert res.returncode == 2 and res.stderr.strip() == f"error: {cluster.INSTALL_HINT}"
    res = script_main("batch_upsample.py", tmp_path / "missing", "-o", tmp_path / "out")
    assert res.returncode == 2 and res.stderr.strip().endswith("missing: not found")
    res = script_main("batch_upsample.py", archive, "-o", tmp_path / "out", "--num-workers", "0")
    assert res.returncode == 2 and "--num-workers must be >= 1" in res.stderr
    assert "batch" in cli.COMMANDS
    assert [cluster.num_blocks(n, w) for n, w in ((1, 2), (20, 2), (10**6, 64))] == [1, 16, 20000]  # <= 50 files each


# ------------------------------------------------------------------ on Ray (slow: Ray's start-up)

@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=max(2, len(os.sched_getaffinity(0))), include_dashboard=False,
             log_to_driver=False)  # "local": never a cluster another test started with `ray start`
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_local_ray_matches_upsample_and_reruns_skip(ray_session, archive, tmp_path, script_main):
    cpus = len(os.sched_getaffinity(0))
    reference = cli_reference(script_main, archive, tmp_path / "ref", cpus)
    out = tmp_path / "out"
    res = script_main("batch_upsample.py", archive, "-o", out, "--num-workers", 1, "--cpus-per-worker", cpus)
    assert res.returncode == 0, res.stderr
    assert "20 files: 19 upsampled" in res.stdout and "1 failed" in res.stdout
    assert digests(out) == reference  # byte-identical, every file
    check_rows(batch.read_results(str(out)), archive)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    res = script_main("batch_upsample.py", archive, "-o", out, "--num-workers", 1, "--cpus-per-worker", cpus)
    assert res.returncode == 0 and "19 skipped" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == mtimes
    st = statuses(batch.read_results(str(out)))
    assert st.pop("broken.wav").startswith("error: ") and set(st.values()) == {"skipped"}


@pytest.mark.slow
def test_worker_killed_mid_run_loses_no_row(ray_session, archive, tmp_path, script_main):
    from speechsr import cluster
    reference = cli_reference(script_main, archive, tmp_path / "ref", 1)
    up = settings.load("upsampling", settings.DEFAULT_SETTINGS_DIR)
    out, killed = tmp_path / "out", []

    def kill_first_worker(row):
        host, pid = row["worker"].rsplit(":", 1)
        if not killed and host == socket.gethostname():
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))

    tasks = batch.plan(str(archive), str(out))
    rows = batch.run(tasks, str(out), lambda todo: cluster.execute(todo, {"up": up}, 2, 1), on_row=kill_first_worker)
    assert killed
    check_rows(rows, archive)
    assert len({r["worker"] for r in rows}) >= 2
    assert digests(out) == reference
    assert not list(out.rglob(".*part*"))


@pytest.mark.slow
def test_two_nodes_on_loopback(tmp_path):
    """A head and a worker node, each its own `ray start --block` process (stopped by pid), run
    the job from a third process that joins with --address."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               RAY_AUTH_MODE="disabled")  # a token would have to be shared with the driver
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    archive = write_archive(tmp_path / "in", 8)
    nodes = []
    try:
        nodes.append(subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard",
                                       "false", *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        nodes.append(subprocess.Popen([ray_cli, "start", "--address", address, *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(60):  # until both nodes are up
            status = subprocess.run([ray_cli, "status", "--address", address], env=env, capture_output=True,
                                    text=True, timeout=60)
            if "0.0/2.0 CPU" in status.stdout:
                break
        res = run_script("batch_upsample.py", archive, "-o", tmp_path / "out", "--address", address,
                         "--num-workers", 2, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        assert "8 files: 7 upsampled" in res.stdout and "2 CPUs, 2 workers" in res.stderr
        rows = batch.read_results(str(tmp_path / "out"))
        assert len(rows) == 8 and len({r["worker"] for r in rows if r["status"] == "ok"}) == 2
    finally:
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # left by the head: `ray.init()`
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):  # would try to join it
            current.unlink()
