"""What a user installs: the wheel and sdist built from this tree carry the license and metadata.

The project is built the way ``pip`` and ``python -m build`` build it, through hatchling's PEP 517
hooks, into a temporary folder; the archives are then read as an installer reads them. The version
has one source (``weft_nb/base/release.py``): the wheel's metadata, ``weft_nb.__version__`` and
``weft-nb --version`` must agree.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import weft_nb

REPO = Path(__file__).resolve().parents[1]
VERSION = weft_nb.__version__

BUILD = r"""
import sys
import hatchling.build

kind, out = sys.argv[1], sys.argv[2]
hook = hatchling.build.build_wheel if kind == "wheel" else hatchling.build.build_sdist
print(hook(out))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def build(kind: str, out: Path) -> Path:
    """Build a ``wheel`` or ``sdist`` of this tree into ``out`` with hatchling's PEP 517 hook."""
    pytest.importorskip(
        "hatchling", reason="the build backend (in the dev extra: pip install -e '.[dev]')"
    )
    done = subprocess.run(
        [sys.executable, "-c", BUILD, kind, str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=REPO,  # a PEP 517 hook builds the project in its working directory
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def metadata(text: str) -> Message:
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("wheel", tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_the_license_and_one_version(wheel: Path) -> None:
    assert wheel.name.startswith(f"weft_nb-{VERSION}-"), wheel.name
    info = f"weft_nb-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = metadata(archive.read(f"{info}/METADATA").decode())
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert license_text == (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in license_text and "the weft_nb authors" in license_text
    assert meta["Version"] == VERSION
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "weft_nb/py.typed" in names and "weft_nb/base/release.py" in names
    assert "weft-nb = weft_nb.cli.main:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "docs/", "notebooks/"))]


def test_the_wheel_says_where_it_runs_and_where_it_lives(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        meta = metadata(archive.read(f"weft_nb-{VERSION}.dist-info/METADATA").decode())
    classifiers = set(meta.get_all("Classifier") or [])
    assert {
        "Framework :: Jupyter",
        "Operating System :: POSIX :: Linux",
        "Operating System :: MacOS",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Typing :: Typed",
    } <= classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    # POSIX only (docs/platforms.md): no classifier may promise Windows or "OS Independent".
    assert not [c for c in classifiers if "Windows" in c or "OS Independent" in c]
    # PEP 639: the license is the License-Expression; a "License ::" classifier beside it is
    # deprecated and refused by some tools.
    assert not [c for c in classifiers if c.startswith("License ::")]
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in urls.values())
    assert meta["Requires-Python"] == ">=3.10"


def test_the_sdist_carries_the_license(tmp_path: Path) -> None:
    sdist = build("sdist", tmp_path)
    assert sdist.name == f"weft_nb-{VERSION}.tar.gz"
    root = f"weft_nb-{VERSION}"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
        license_file = archive.extractfile(f"{root}/LICENSE")
        pkg_info = archive.extractfile(f"{root}/PKG-INFO")
        assert license_file is not None and pkg_info is not None
        license_text = license_file.read().decode()
        meta = metadata(pkg_info.read().decode())
    assert license_text == (REPO / "LICENSE").read_text(encoding="utf-8")
    assert meta["Version"] == VERSION and meta["License-Expression"] == "MIT"
    assert f"{root}/pyproject.toml" in names and f"{root}/weft_nb/base/release.py" in names
    assert not [n for n in names if "_cache" in n or n.endswith(".pyc")]  # no tool caches


def test_the_command_line_prints_the_same_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "weft_nb", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"weft-nb {VERSION}"


def test_the_version_is_written_in_one_place() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]  # dynamic: read from the one place below
    assert project["project"]["dynamic"] == ["version"]
    source = REPO / project["tool"]["hatch"]["version"]["path"]
    assert f'__version__ = "{VERSION}"' in source.read_text(encoding="utf-8")
    assert weft_nb.__version__ is sys.modules["weft_nb.base.release"].__version__


# The core install and the extras (docs/quickstart.md, "Install"); tests/test_install.py installs
# them in a fresh venv.
CORE = {"duckdb", "pydantic", "cloudpickle", "ipython", "traitlets", "ipywidgets", "pandas"}
EXTRAS = {
    "dask": {"distributed"},
    "chaos": {"jupyter-client", "nbformat", "ipykernel"},
    "timeline": {"matplotlib"},
    "otel": {"opentelemetry-api"},
}


def project_name(requirement: str) -> str:
    """A requirement's normalised project name (``jupyter_client>=8`` -> ``jupyter-client``)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def test_the_wheel_declares_the_core_and_each_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        meta = metadata(archive.read(f"weft_nb-{VERSION}.dist-info/METADATA").decode())
    requires = meta.get_all("Requires-Dist") or []
    core = {project_name(r) for r in requires if "extra ==" not in r}
    assert core == CORE  # no kernel, kernel client or nbformat: those are the chaos extra's

    def extra(name: str) -> set[str]:
        return {project_name(r) for r in requires if re.search(rf"extra == ['\"]{name}['\"]", r)}

    for name, packages in EXTRAS.items():
        assert extra(name) == packages, name
    assert set().union(*EXTRAS.values()) <= extra("dev")  # `make test` installs [dev]
