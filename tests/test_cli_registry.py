"""The command line's flag registry, per-method help, --version and exit statuses."""

from __future__ import annotations

import pytest

import explainer
from explainer.cli import main
from explainer.errors import InputError, ModelError, ServerError
from explainer.methods import MethodInfo, Option, discover, flag_registry


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"explainer {explainer.__version__}"


def test_method_help_shows_that_methods_options_only(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--method", "lime", "--help"])
    out = capsys.readouterr().out
    assert "--method lime" in out and "--num-features" in out and "(default: 2048)" in out
    assert "--mask-size" not in out and "--method occlusion" not in out and "examples:" not in out


def test_plain_help_groups_every_method_and_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    out = capsys.readouterr().out
    assert all(f"--method {name}" in out for name in discover())
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "examples:" in capsys.readouterr().out


def test_registry_refuses_conflicting_declarations():
    f = lambda *a, **k: None  # noqa: E731
    a = MethodInfo("a", f, (Option("--n", "n", dict(type=int, help="a's n")),))
    same = MethodInfo("b", f, (Option("--n", "n", dict(type=int, help="b's own help")),))
    assert set(flag_registry({"a": a, "b": same})) == {"--n"}
    for other in (Option("--n", "n", dict(type=float)), Option("--n", "count", dict(type=int))):
        with pytest.raises(ValueError, match="--n is declared differently by methods 'a' and 'c'"):
            flag_registry({"a": a, "c": MethodInfo("c", f, (other,))})


def test_error_types_and_exit_statuses():
    assert issubclass(InputError, ValueError) and InputError.exit_code == 2
    assert issubclass(ServerError, ModelError) and issubclass(ModelError, RuntimeError)
    assert ModelError.exit_code == ServerError.exit_code == 3 and not issubclass(ModelError, ValueError)


def _broken(batch):
    raise RuntimeError("the device fell off")


def test_a_failing_model_exits_3_and_bad_option_exits_2(capsys, tmp_path, monkeypatch):
    import explainer.api as api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: explainer.from_function(
        _broken, input_shape=(3, 8, 8), num_classes=2))
    img = tmp_path / "x.npy"
    import numpy as np
    np.save(img, np.zeros((1, 3, 8, 8), np.float32))
    assert main(["explain", str(img), "--method", "occlusion", "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("explainer: error: the model function failed") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert main(["explain", str(img), "--method", "occlusion", "--num-features", "3", "--out", str(tmp_path / "o")]) == 2


def test_every_method_option_has_help(capsys):
    """Each method's --help explains every one of its flags, not only a metavar or a default."""
    from explainer.cli_methods import COMMON_HELP

    missing = [(m.name, o.flag) for m in discover().values() for o in m.options
               if not (o.kwargs.get("help") or COMMON_HELP.get(o.flag))]
    assert missing == []
    with pytest.raises(SystemExit):
        main(["explain", "--method", "occlusion", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "windows may hang over the edge" in out and "the same seed gives the same map" not in out
