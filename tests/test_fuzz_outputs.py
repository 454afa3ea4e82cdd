"""Output sets, resume, --out and signals (issue 14, classes 9-12): generated cases, real files.

An output set appears whole or not at all; ``--resume`` keeps only sets that are intact
and made with the same settings; ``--out`` is checked before computing; SIGTERM and
SIGHUP end a run like Ctrl-C (one line, no partial set, no temporary files).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from explainer.cli import main
from explainer.errors import InputError
from explainer.explanation import Explanation
from explainer.output_set import Terminated, _signals_held, check_out_dir, is_complete, signals_as_interrupt
from tiny import linear_classifier

ROOT = Path(__file__).resolve().parent.parent


def _explanation(extra: int) -> Explanation:
    rng = np.random.default_rng(extra)
    return Explanation(map=rng.normal(size=(8, 8)).astype(np.float32), target=1, label="one", score=0.5,
                       method="occlusion", params={"mask_size": 4},
                       arrays={f"extra{i}": rng.normal(size=(3,)) for i in range(extra)},
                       images={"tile": np.zeros((4, 4, 3), np.uint8)} if extra else {})


@pytest.mark.parametrize("extra", [0, 2])
@pytest.mark.parametrize("blocked", ["npy", "png", "json", "extra0.npy", "tile.png", "input.npy"])
def test_a_failed_write_leaves_no_part_of_the_set(tmp_path, extra, blocked):
    """A non-empty folder where one file must go makes its rename fail: nothing of the set remains."""
    e = _explanation(extra)
    name = f"img.input.npy" if blocked == "input.npy" else f"img.occlusion.{blocked}"
    if blocked in ("extra0.npy", "tile.png") and not extra:
        pytest.skip("no extras in this set")
    (tmp_path / name).mkdir()
    (tmp_path / name / "keep").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        e.save(tmp_path, "img", save_input=True, input_tensor=np.zeros((1, 3, 8, 8), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # only the obstacle, no temporaries


@pytest.mark.parametrize("extra", [0, 1, 3])
def test_a_written_set_is_complete_and_every_damage_is_seen(tmp_path, extra):
    e = _explanation(extra)
    settings = {"method": "occlusion", "mask_size": 4}
    written = e.save(tmp_path, "img", settings=settings)
    record = tmp_path / "img.occlusion.json"
    assert is_complete(record, settings)
    assert not is_complete(record, {**settings, "mask_size": 5})
    for path in written:
        data = path.read_bytes()
        damages = [b"", data[: len(data) // 2], data[:-1] + bytes([data[-1] ^ 1]), None]
        for damaged in damages:
            if damaged is None:
                path.unlink()
            else:
                path.write_bytes(damaged)
            assert not is_complete(record, settings), (path.name, damaged and len(damaged))
            path.write_bytes(data)
        assert is_complete(record, settings)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    model = linear_classifier(d / "m.onnx", np.random.default_rng(3).normal(size=(3, 3, 8, 8)).astype(np.float32))
    images = []
    for i in range(3):
        images.append(d / f"im{i}.npy")
        np.save(images[-1], np.random.default_rng(10 + i).normal(size=(1, 3, 8, 8)).astype(np.float32))
    return d, model, images


def _explain(capsys, run, out, *extra):
    d, model, images = run
    code = main(["explain", *map(str, images), "--model", str(model), "--method", "occlusion", "--out", str(out),
                 "--json", "--resume", "--mask-size", "4", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [Path(r["source"]).stem for r in json.loads(captured.out)]


DAMAGE = ["truncate_npy", "empty_json", "garbage_json", "delete_png", "flip_npy", "old_format_json"]
FAST_DAMAGE = {"truncate_npy", "garbage_json", "delete_png"}


@pytest.mark.parametrize("damage", [pytest.param(d, marks=() if d in FAST_DAMAGE else pytest.mark.slow)
                                    for d in DAMAGE])
def test_resume_recomputes_exactly_the_damaged_sets(capsys, run, tmp_path, damage):
    out = tmp_path / "out"
    assert _explain(capsys, run, out) == ["im0", "im1", "im2"]
    reference = (out / "im1.occlusion.npy").read_bytes()
    assert _explain(capsys, run, out) == []  # intact: all kept
    target = out / f"im1.occlusion.{'json' if 'json' in damage else 'png' if 'png' in damage else 'npy'}"
    data = target.read_bytes()
    if damage == "truncate_npy":
        target.write_bytes(data[:-7])
    elif damage == "flip_npy":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 0x55]))
    elif damage == "empty_json":
        target.write_bytes(b"")
    elif damage == "garbage_json":
        target.write_bytes(b"{not json")
    elif damage == "old_format_json":
        target.write_text(json.dumps({k: v for k, v in json.loads(data).items() if k != "output_set"}))
    else:
        target.unlink()
    assert _explain(capsys, run, out) == ["im1"]
    assert (out / "im1.occlusion.npy").read_bytes() == reference


@pytest.mark.parametrize("change", [["--mask-size", "2"], ["--target", "2"],
                                    pytest.param(["--stride", "2"], marks=pytest.mark.slow),
                                    pytest.param(["--save-input"], marks=pytest.mark.slow)])
def test_resume_recomputes_when_settings_change(capsys, run, tmp_path, change):
    out = tmp_path / "out"
    _explain(capsys, run, out)
    assert _explain(capsys, run, out, *change) == ["im0", "im1", "im2"]
    assert _explain(capsys, run, out, *change) == []


def _out_case(tmp_path, kind):
    (tmp_path / "file").write_text("x")
    return {"empty": "", "file": tmp_path / "file", "under_file": tmp_path / "file" / "sub",
            "devnull": "/dev/null", "deep_under_file": tmp_path / "file" / "a" / "b"}[kind]


@pytest.mark.parametrize("kind", ["empty", "file", "under_file", "devnull", "deep_under_file"])
def test_unusable_out_is_refused_before_computing(capsys, run, tmp_path, kind):
    d, model, images = run
    t0 = time.perf_counter()
    code = main(["explain", str(images[0]), "--model", str(model), "--method", "lime", "--num-samples", "50000",
                 "--out", str(_out_case(tmp_path, kind))])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - t0 < 10  # refused before 50000 samples were run
    assert not Path("image").exists() and not any(Path(".").glob("*.lime.*"))


@pytest.mark.parametrize("needed", [10**15, 10**18])
def test_out_without_room_is_refused_with_the_numbers(tmp_path, needed):
    with pytest.raises(InputError, match=r"MB free, the outputs need about"):
        check_out_dir(tmp_path / "new", needed)
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    for out in (tmp_path / "ro", tmp_path / "ro" / "sub"):
        with pytest.raises(InputError, match="cannot write"):
            check_out_dir(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signals_are_held_during_the_renames_then_raised(sig):
    with signals_as_interrupt():
        with pytest.raises(Terminated) as caught:
            with _signals_held():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)
                held = True  # reached: the signal waited for the block's end
        assert held and caught.value.signum == sig


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signalled_run_ends_like_ctrl_c(tmp_path, run, sig):
    d, model, images = run
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "EXPLAINER_GRAPH_CACHE": "off"}
    proc = subprocess.Popen([sys.executable, "-m", "explainer", "explain", *map(str, images), "--model", str(model),
                             "--method", "lime", "--num-samples", "400000", "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"explainer: interrupted{'' if sig == signal.SIGINT else f' ({sig.name})'}"]
    # no temporary file and no partial set: what is left are whole sets of images finished before the signal
    sets: dict[str, set[str]] = {}
    for p in out.iterdir() if out.exists() else []:
        assert not p.name.startswith("."), p
        sets.setdefault(".".join(p.name.split(".")[:2]), set()).add(p.name)
    for prefix, names in sets.items():
        record = json.loads((out / f"{prefix}.json").read_text())
        assert names == {f"{prefix}.json", *record["output_set"]["files"]}, (names, record["output_set"])
    assert len(sets) < len(images)  # the signal did stop the run
    assert list(tmp.iterdir()) == []  # no pymp-*, no .ses, nothing


# --- files outside --out (class 13) ---

DOCUMENTED = ("cache/explainer/graphs/", "cache/matplotlib/", "config/matplotlib/")


def _written(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("method, switch", [
    ("occlusion", "default"), pytest.param("gradient", "default", marks=pytest.mark.slow),
    ("gradient", "off"), pytest.param("occlusion", "off", marks=pytest.mark.slow)])
def test_nothing_undocumented_is_written_outside_out(tmp_path, run, method, switch):
    """HOME, XDG folders and TMPDIR are fresh: afterwards they hold only the documented caches
    (none at all with EXPLAINER_CACHE_DIR=off and MPLCONFIGDIR inside the run's own folder)."""
    d, model, images = run
    home = tmp_path / "home"
    for sub in ("cache", "config", "data", "tmp"):
        (home / sub).mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(home),
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "TMPDIR": str(home / "tmp")}
    if switch == "off":
        env.update(EXPLAINER_CACHE_DIR="off", MPLCONFIGDIR=str(tmp_path / "mpl"))
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "explainer", "explain", str(images[0]), "--model", str(model),
                    "--method", method, "--out", str(out), "--quiet"], env=env, check=True, timeout=120,
                   cwd=tmp_path)
    stray = [f for f in _written(home) if not (switch == "default" and f.startswith(DOCUMENTED))]
    assert stray == [], stray
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["home", "out"] + (["mpl"] if switch == "off" else []))


@pytest.mark.parametrize("kind", ["outside", "inside", "relative_up", "dangling"])
def test_labels_symlink_is_not_followed(tmp_path, kind):
    import explainer

    folder = tmp_path / "model"
    folder.mkdir()
    model = linear_classifier(folder / "m.onnx", np.ones((2, 3, 8, 8), np.float32), preprocessing={"size": [8, 8]})
    (tmp_path / "secret.txt").write_text("root:x:0\nhunter2\n")
    (folder / "real.txt").write_text("a\nb\n")
    target = {"outside": tmp_path / "secret.txt", "inside": folder / "real.txt",
              "relative_up": Path("../secret.txt"), "dangling": tmp_path / "nope.txt"}[kind]
    os.symlink(target, folder / "labels.txt")
    if kind == "dangling":
        assert explainer.load_model(model).spec.labels == ("class 0", "class 1")
        return
    with pytest.raises(InputError, match="labels.txt"):
        explainer.load_model(model)


@pytest.mark.parametrize("limit, by", [("1.5", "env"), ("1.5", "flag"), pytest.param("3", "env", marks=pytest.mark.slow)])
def test_the_run_deadline_ends_a_long_run_without_a_partial_set(capsys, monkeypatch, run, tmp_path, limit, by):
    d, model, images = run
    if by == "env":
        monkeypatch.setenv("EXPLAINER_RUN_TIMEOUT", limit)
    else:
        monkeypatch.setenv("EXPLAINER_RUN_TIMEOUT", "1000")  # the flag wins over the environment
    t0 = time.perf_counter()
    code = main(["explain", *map(str, images), "--model", str(model), "--method", "lime", "--num-samples", "2000000",
                 "--out", str(tmp_path / "out"), "--quiet", *(["--run-timeout", limit] if by == "flag" else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and err == [f"explainer: error: the run did not finish within {float(limit):g} s "
                                 "(--run-timeout / $EXPLAINER_RUN_TIMEOUT)"], err
    assert time.perf_counter() - t0 < float(limit) + 8
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
@pytest.mark.parametrize("by", ["env", "flag"])
def test_a_bad_run_deadline_is_exit_2(capsys, monkeypatch, run, value, by):
    if by == "env":
        monkeypatch.setenv("EXPLAINER_RUN_TIMEOUT", value)
    args = ["classify", str(run[2][0]), "--model", str(run[1])] + ([f"--run-timeout={value}"] if by == "flag" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert ("EXPLAINER_RUN_TIMEOUT" if by == "env" else "--run-timeout") in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["file", "under_file", "devnull"])
def test_audit_refuses_an_unusable_out_before_loading(capsys, run, tmp_path, kind):
    d, model, _ = run
    code = main(["audit", str(d), "--model", str(model), "--out", str(_out_case(tmp_path, kind))])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1, err
