"""operator/ is a source root, never a package: the standard library's `operator` must win."""

import importlib
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_module_is_the_standard_library():
    module = importlib.import_module("operator")
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    location = getattr(module, "__file__", None)
    # CPython may serve `operator` as a frozen or builtin module; otherwise it is a stdlib file.
    if location is not None:
        assert Path(location).resolve().is_relative_to(stdlib), location
    assert hasattr(module, "itemgetter")


def test_source_roots_are_not_packages():
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "runner" / "__init__.py").exists()


def test_source_roots_on_path_do_not_shadow():
    assert any(Path(p).resolve() == ROOT / "operator" for p in sys.path if p)
    spec = importlib.util.find_spec("operator")
    assert spec is not None and spec.origin is not None
    assert not Path(spec.origin).resolve().is_relative_to(ROOT)
