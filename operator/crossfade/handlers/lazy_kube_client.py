"""Load kubernetes_asyncio's generated API and model classes on first use, not all at start.

``import kubernetes_asyncio.client`` runs a generated ``__init__.py`` that imports every API
group (65 modules) and every model (767 modules) at once: 34 MiB of the operator's RSS
for a process that calls a handful of endpoints and builds a few dozen model classes
(bench/results/memory.md). kopf imports it too whenever it is installed.

``load_lazily()`` puts three stand-in packages in ``sys.modules`` before anything imports
the client: ``kubernetes_asyncio.client``, ``.client.api`` and ``.client.models``. Each
stand-in has the real package directory as its ``__path__``, so submodules import as
usual (``kubernetes_asyncio.client.api_client``, ``.rest``, ``.exceptions``), and a module
``__getattr__`` (PEP 562) that imports the one submodule defining a name the first time the
name is asked for. The name -> submodule table is read from the real ``__init__.py``
files, whose bodies are nothing but ``from <submodule> import <Name>`` lines, so it follows
the installed version of the client without being executed. The client's deserializer
looks models up with ``getattr(kubernetes_asyncio.client.models, name)``, which the
stand-in answers the same way.

Only ``crossfade run`` calls it (cli.py), first thing, like the other start-up memory
measures. If the client is already imported, nothing changes. Guard tests:
tests/codebase/test_lazy_kube_client.py (every name the real packages export resolves to
the same object) and tests/codebase/test_run_imports.py (``run`` loads no model it does
not use).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

ROOT_PACKAGE = "kubernetes_asyncio"
CLIENT_PACKAGE = "kubernetes_asyncio.client"
# The generated packages made lazy (each one's directory follows from its dotted name).
LAZY_PACKAGES = (CLIENT_PACKAGE, f"{CLIENT_PACKAGE}.api", f"{CLIENT_PACKAGE}.models")
_FROM_IMPORT = re.compile(
    r"^from\s+(kubernetes_asyncio\.client[\w.]*)\s+import\s+(\w+)\s*$", re.MULTILINE
)
_VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"\s*$', re.MULTILINE)


def exported_names(init_source: str) -> dict[str, str]:
    """Map each name a generated ``__init__.py`` imports to the module it comes from."""
    return {name: module for module, name in _FROM_IMPORT.findall(init_source)}


class _LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their submodule when first read."""

    def __init__(self, name: str, directory: Path, exports: dict[str, str]) -> None:
        super().__init__(name)
        self.__path__ = [str(directory)]
        self.__file__ = str(directory / "__init__.py")
        self.__package__ = name
        spec = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
        self.__spec__ = spec
        self._lazy_exports = exports
        self.__all__ = sorted(exports)

    def __getattr__(self, attribute: str) -> Any:
        module_name = self._lazy_exports.get(attribute)
        if module_name is None:
            # Not an export: let ``from package import submodule`` fall back to importing it.
            raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r}")
        value = getattr(importlib.import_module(module_name), attribute)
        setattr(self, attribute, value)  # read once; later reads skip __getattr__
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._lazy_exports))


def load_lazily() -> bool:
    """Install the lazy stand-ins; return False when the client was imported already
    or is not installed (then nothing changes)."""
    if any(name in sys.modules for name in (ROOT_PACKAGE, *LAZY_PACKAGES)):
        return False
    spec = importlib.util.find_spec(ROOT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(next(iter(spec.submodule_search_locations)))
    packages: dict[str, _LazyPackage] = {}
    for name in LAZY_PACKAGES:
        directory = root.joinpath(*name.split(".")[1:])
        source = (directory / "__init__.py").read_text(encoding="utf-8")
        package = _LazyPackage(name, directory, exported_names(source))
        version = _VERSION.search(source)
        if version is not None:
            package.__version__ = version.group(1)  # type: ignore[attr-defined]
        packages[name] = package
    client = packages[CLIENT_PACKAGE]
    client.api = packages[f"{CLIENT_PACKAGE}.api"]  # type: ignore[attr-defined]
    client.models = packages[f"{CLIENT_PACKAGE}.models"]  # type: ignore[attr-defined]
    sys.modules.update(packages)
    # The root package's __init__ imports ``config``, whose first use of ``ApiClient`` then
    # loads ``api_client`` with the root already in sys.modules, as an eager import would.
    # Left to a later submodule import instead, the root would start in the middle of
    # ``api_client`` and meet it half-initialised.
    importlib.import_module(ROOT_PACKAGE)
    return True
