"""Every docstring example in the package runs and prints what it says; public names have one."""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import dgl_rbgt

MODULES = sorted(m.name for m in pkgutil.walk_packages(dgl_rbgt.__path__, "dgl_rbgt.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def _is_result_type(cls) -> bool:
    """Exceptions, enums, named tuples and dataclasses: values returned or raised, documented by
    the function that makes them."""
    import dataclasses
    import enum

    return (issubclass(cls, (Exception, enum.Enum)) or dataclasses.is_dataclass(cls)
            or (issubclass(cls, tuple) and hasattr(cls, "_fields")))


PUBLIC = [("dgl_rbgt.nn", None), ("dgl_rbgt.transforms", None), ("dgl_rbgt.models", None), ("dgl_rbgt.data", None)]


@pytest.mark.parametrize("package", [p for p, _ in PUBLIC])
def test_public_classes_and_functions_have_examples(package):
    module = importlib.import_module(package)
    missing = []
    for attr in module.__all__:
        obj = getattr(module, attr)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if inspect.isclass(obj) and _is_result_type(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        if ">>>" not in doc:
            missing.append(attr)
    assert not missing, f"public names of {package} without a runnable example: {missing}"
