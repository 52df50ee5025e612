"""The package's public contract: import paths, lightness, typing marker."""

import pathlib
import subprocess
import sys

import Xclient


def test_import_paths_are_the_contract():
    from Xclient import ModelClient as top
    from Xclient.client import ModelClient
    from Xclient.exceptions import XclientError

    assert top is ModelClient and issubclass(Xclient.exceptions.ModelUnavailableError, XclientError)


def test_import_xclient_loads_nothing_heavy():
    code = (
        "import sys, Xclient; "
        "names = ('tritonclient', 'langchain_core', 'pytriton', 'grpc', 'gevent', 'torch'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_package_ships_py_typed():
    assert (pathlib.Path(Xclient.__file__).parent / "py.typed").exists()


def test_exception_tree_is_documented_in_the_module_docstring():
    doc = Xclient.exceptions.__doc__
    for name in Xclient.exceptions.__all__:
        assert name in doc, name
    assert issubclass(Xclient.exceptions.XclientValueError, ValueError)
    assert issubclass(Xclient.exceptions.XclientTimeoutError, TimeoutError)
