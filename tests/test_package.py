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
        "names = ('tritonclient', 'langchain_core', 'pytriton', 'grpc', 'gevent', 'torch', "
        "'ray', 'pyarrow', 'pandas'); "
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


def test_wheel_is_llmops_xclient_with_py_typed_and_the_console_script(tmp_path):
    """The index name is ``llmops-xclient`` (``xclient`` belongs to an unrelated project); the import
    stays ``Xclient`` and the command ``xclient``."""
    import zipfile

    root = pathlib.Path(__file__).parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("llmops_xclient-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "Xclient/py.typed" in names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Name: llmops-xclient" in archive.read(metadata).decode()
    assert "xclient = Xclient.cli:main" in scripts
