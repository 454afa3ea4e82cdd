"""Cluster runs (``--workers`` / ``--scheduler``) on real Dask clusters of worker processes.

The outputs must be the single-process run's, byte for byte, apart from timings and
timestamps; a worker killed mid-run has its tasks rerun; a scheduler that goes away ends
the run with one line (exit 3) and no partial outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import explainer
from explainer.backends.cpu_parallel import THREADS_ENV, cpu_cores, machine_cores, session_options
from explainer.cli import main
from explainer.errors import InputError

pytest.importorskip("distributed")

from explainer.cluster import commands as cluster_commands  # noqa: E402
from explainer.cluster.connect import connect, run_tasks  # noqa: E402
from explainer.cluster.worker import explain_task  # noqa: E402

SHORTCUT = Path(__file__).resolve().parent.parent / "models" / "shortcut"
MODEL = str(SHORTCUT / "model.onnx")
VARYING = ("timings", "timestamp")  # what may differ between runs; everything else may not


def _subset(tmp: Path, per_class: int) -> Path:
    """The first ``per_class`` test images of each class (and their object masks) in ``tmp``."""
    for cls in ("circle", "square", "triangle"):
        for kind, src in (("testset", SHORTCUT / "testset"), ("masks", SHORTCUT / "masks" / "object")):
            (tmp / kind / cls).mkdir(parents=True, exist_ok=True)
            for p in sorted((src / cls).glob("*.png"))[:per_class] + sorted((src / cls).glob("*_wm.png"))[:1]:
                shutil.copy(p, tmp / kind / cls / p.name)
    return tmp


def _same_outputs(a: Path, b: Path) -> None:
    """Same file names; arrays and pictures byte-identical; JSON equal apart from VARYING."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and names
    for name in names:
        if name.endswith(".json"):
            ja, jb = (json.loads((d / name).read_text()) for d in (a, b))
            assert {k: v for k, v in ja.items() if k not in VARYING} == \
                   {k: v for k, v in jb.items() if k not in VARYING}, name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of 2 worker processes, joined with --scheduler by the tests that share it."""
    with connect(workers=2) as c:
        c.client.wait_for_workers(2, timeout=60)
        yield c


def test_explain_on_cluster_equals_single_process_and_resumes(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written into the working directory
    work = tmp_path / "work"
    images = sorted(str(p) for p in (_subset(work, 2) / "testset").rglob("*.png"))
    base = ["explain", "--model", MODEL, "--quiet"]
    for method in ("occlusion", "integrated-gradients"):
        single, spread = tmp_path / f"single-{method}", tmp_path / f"cluster-{method}"
        assert main([*base, *images, "--method", method, "--out", str(single)]) == 0
        # half the images first, then all with --resume: only the rest are computed
        assert main([*base, *images[:4], "--method", method, "--out", str(spread),
                     "--scheduler", cluster.address]) == 0
        first = {p.name: p.stat().st_mtime_ns for p in spread.iterdir()}
        capsys.readouterr()
        assert main([*base[:-1], *images, "--method", method, "--out", str(spread), "--json", "--resume",
                     "--scheduler", cluster.address, "--chunk", "2"]) == 0  # 5 images: tasks of 2, 2, 1
        printed = capsys.readouterr()
        summary = json.loads(printed.out)
        assert printed.err == f"Dask dashboard: {cluster.dashboard or cluster.client.dashboard_link}\n"
        assert [s["source"] for s in summary] == images[4:]  # in input order, the rest only
        assert {s["worker"] for s in summary} <= set(cluster.client.nthreads())
        assert all(p.stat().st_mtime_ns == t for p in spread.iterdir() if (t := first.get(p.name)))
        _same_outputs(single, spread)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["work"] + [f"{k}-{m}" for k in ("single", "cluster") for m in ("occlusion", "integrated-gradients")])


@pytest.mark.parametrize("per_class", [2, pytest.param(None, marks=pytest.mark.slow)])
def test_audit_on_two_workers_equals_single_process(per_class, tmp_path, monkeypatch):
    """``per_class=None``: the issue's check, the whole shortcut test set with default settings."""
    monkeypatch.chdir(tmp_path)
    temp = tmp_path / "tmp"  # Dask's scratch space goes here, and must be gone at the end
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    if per_class is None:
        (tmp_path / "work").mkdir()
        testset, masks, steps = SHORTCUT / "testset", SHORTCUT / "masks" / "object", []
    else:
        work = _subset(tmp_path / "work", per_class)
        testset, masks, steps = work / "testset", work / "masks", ["--steps", "8"]
    runs = {}
    for name, extra in (("single", []), ("cluster", ["--workers", "2", "--chunk", "3"])):
        runs[name] = tmp_path / name
        assert main(["audit", str(testset), "--model", MODEL, "--out", str(runs[name]), *steps,
                     "--masks", str(masks), "--quiet", *extra]) == 0
    a, b = runs["single"], runs["cluster"]
    for name in ("index.html", "results.json", "tsne.csv"):  # findings, metrics and every map drawn
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    _same_outputs(a / "cache", b / "cache")
    findings = json.loads((b / "results.json").read_text())["findings"]
    assert [(f["label"], f["region"]) for f in findings if f["flagged"]] == [("circle", "lower-left")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster", "single", "tmp", "work"]
    assert [p.name for p in temp.iterdir() if "dask" in p.name] == []


def test_worker_killed_mid_run_has_its_tasks_rerun(tmp_path):
    images = sorted(str(p) for p in (_subset(tmp_path, 1) / "testset").rglob("*.png"))
    model = explainer.load_model(MODEL)
    options = {"mask_size": 6, "stride": 1}  # ~3,500 forward passes an image: tasks are in flight
    tasks = [(explain_task, (model.describe(), model.spec.sha256, "occlusion", options, "off", None,
                             cluster_commands.image_task(p))) for p in images]
    got: dict[int, tuple] = {}
    with connect(workers=2) as c:
        c.client.wait_for_workers(2, timeout=60)
        pids = c.client.run(os.getpid)
        killed: list[str] = []

        def done(i: int, result: tuple) -> None:
            got[i] = result
            if not killed:  # the first image back: kill the other worker, busy with its own image
                victim = next(a for a in pids if a != result[1])
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(victim)

        run_tasks(c, tasks, len(tasks), done)
        after = c.client.run(os.getpid)
        started = c.client.run_on_scheduler(
            lambda dask_scheduler: sum(1 for t in dask_scheduler.transition_log if t[2] == "processing"))
    assert sorted(got) == list(range(len(images)))
    assert pids[killed[0]] not in after.values()  # the worker really went (its nanny started another)
    assert started > len(images)  # the killed worker's image was started again on another worker
    for i, path in enumerate(images):  # every map as the single-process run makes it
        ref = explainer.occlusion_sensitivity(model, path, **options)
        assert np.array_equal(got[i][0].map, ref.map), path


def _start(args: list[str], tmp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_scheduler_gone_ends_the_run_with_one_line(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    scheduler = _start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--no-dashboard", "--scheduler-file", str(sched_file)], tmp_path)
    worker = None
    try:
        for _ in range(300):
            if sched_file.is_file() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker = _start(["distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard",
                         "--local-directory", str(tmp_path / "worker")], tmp_path)
        out = tmp_path / "out"
        images = sorted(str(p) for p in (SHORTCUT / "testset").rglob("*.png"))
        run = subprocess.Popen([sys.executable, "-m", "explainer", "explain", *images, "--model", MODEL,
                                "--method", "occlusion", "--mask-size", "6", "--stride", "1", "--quiet",
                                "--out", str(out), "--scheduler", address], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(1200):
            if out.is_dir() and any(out.glob("*.json")) or run.poll() is not None:
                break
            time.sleep(0.05)
        scheduler.kill()
        _, err = run.communicate(timeout=120)
        assert run.returncode == 3, err
        assert err.count("\n") == 1 and err.startswith("explainer: error: lost the Dask scheduler at "), err
        done = sorted(out.glob("*.json"))
        assert 0 < len(done) < len(images)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            f"{p.name[:-len('.json')]}.{ext}" for p in done for ext in ("json", "npy", "png"))
        again = subprocess.run([sys.executable, "-m", "explainer", "explain", images[0], "--model", MODEL,
                                "--method", "occlusion", "--out", str(out), "--scheduler", address],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert again.returncode == 3 and again.stderr.count("\n") == 1, again.stderr
        assert again.stderr.startswith("explainer: error: cannot reach the Dask scheduler at "), again.stderr
    finally:
        for p in (scheduler, worker):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_bad_cluster_options_are_one_line(tmp_path, capsys):
    image = str(next((SHORTCUT / "testset").rglob("*.png")))
    for extra, words in ((["--workers", "0"], "--workers must be a positive integer"),
                         (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "at most one of"),
                         (["--scheduler", "127.0.0.1:8786"], "tcp://HOST:8786"),
                         (["--workers", "2", "--chunk", "0"], "--chunk: expected a positive integer")):
        for cmd in (["explain", image, "--method", "occlusion"], ["audit", str(SHORTCUT / "testset")]):
            assert main([*cmd, "--model", MODEL, "--out", str(tmp_path / "o"), *extra]) == 2
            err = capsys.readouterr().err
            assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_task_size_is_checked(tmp_path, monkeypatch):
    image = tmp_path / "big.png"
    image.write_bytes(b"\0" * 2048)
    assert cluster_commands.image_task(image).data == image.read_bytes()
    monkeypatch.setattr(cluster_commands, "MAX_TASK_BYTES", 1024)
    with pytest.raises(InputError, match="at most 0 MiB|carries the image file's bytes"):
        cluster_commands.image_task(image)


def test_threads_env_caps_sessions(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert cpu_cores() == machine_cores() and session_options().intra_op_num_threads == 0
    assert session_options(3).intra_op_num_threads == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    assert cpu_cores() == 1
    assert session_options().intra_op_num_threads == 1 and session_options(3).intra_op_num_threads == 1
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(InputError, match=THREADS_ENV):
        cpu_cores()


def test_worker_side_errors_reach_the_client_as_the_package_errors(cluster):
    model = explainer.load_model(MODEL)
    image = cluster_commands.image_task(next((SHORTCUT / "testset").rglob("*.png")))
    other_copy = [(explain_task, (model.describe(), "0" * 64, "occlusion", {}, "off", None, image))]
    with pytest.raises(InputError, match="differs from the client's"):
        run_tasks(cluster, other_copy, 1, lambda i, r: None)
    corrupt = cluster_commands.ImageTask("broken.png", b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="broken.png"):
        run_tasks(cluster, [(explain_task, (model.describe(), "", "occlusion", {}, "off", None, corrupt))], 1,
                  lambda i, r: None)
