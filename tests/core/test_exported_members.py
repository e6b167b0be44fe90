"""Every module declares `__all__`, and every name it exports exists (as httpx's tests check)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import flow

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(flow.__path__, "flow.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_what_it_declares(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if (module.__file__ or "").endswith("__init__.py"):
        exported = exported or []  # a package may only re-export
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"


def test_the_package_exports_its_errors_and_version() -> None:
    assert flow.__version__
    for name in ("FlowError", "ConfigError", "InventoryError", "StorageError", "SSHError", "GPUdError"):
        assert issubclass(getattr(flow, name), Exception)
        assert issubclass(getattr(flow, name), flow.FlowError)
