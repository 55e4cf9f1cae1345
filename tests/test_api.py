"""The public surface: `import ntps` gives the documented entry points, and their examples run."""

import doctest
import importlib

import pytest

import ntps

MODULES_WITH_EXAMPLES = ["ntps.models", "ntps.extract", "ntps.score", "ntps.probes", "ntps.data"]


def test_every_public_name_resolves_to_a_documented_object():
    for name in ntps.__all__:
        value = getattr(ntps, name)
        if name == "__version__":
            continue
        assert value.__doc__ and "Examples" in value.__doc__, f"ntps.{name} has no Examples section"
        # one name, one object: the top-level name is the object of the module that defines it
        assert getattr(importlib.import_module(value.__module__), name) is value


def test_public_names_do_not_shadow_modules():
    # `ntps.score` must stay the module and `ntps.extract_moments` the function: a top-level name
    # equal to a submodule's name would make one of them unreachable.
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(ntps.__path__)}
    assert not submodules & set(ntps.__all__)
    # the names that collided before the redesign are gone: score.ntps (the package's name),
    # extract.moments (the module ntps.moments), two correlation_table, two plain `load`
    old = {"ntps.score": "ntps", "ntps.extract": "moments", "ntps.experiments": "correlation_table",
           "ntps.paper": "correlation_table", "ntps.models": "load", "ntps.lora": "evaluate"}
    assert [f"{m}.{n}" for m, n in old.items() if hasattr(importlib.import_module(m), n)] == []


@pytest.mark.parametrize("module", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0
