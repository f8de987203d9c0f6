import types

import trio_mcp
import trio_mcp.testing


def test_public_api_is_all() -> None:
    public = {
        name
        for name in dir(trio_mcp)
        if not name.startswith("_") and not isinstance(getattr(trio_mcp, name), types.ModuleType)
    }
    assert public == set(trio_mcp.__all__)
    for name in trio_mcp.__all__:
        obj = getattr(trio_mcp, name)
        if isinstance(obj, type):
            assert obj.__module__ == "trio_mcp", name


def test_testing_exports() -> None:
    assert set(trio_mcp.testing.__all__) == {
        "Baseline",
        "FaultProxy",
        "History",
        "InvariantViolationError",
        "ScriptedServer",
        "Violation",
        "memory_server",
    }
    for name in trio_mcp.testing.__all__:
        assert hasattr(trio_mcp.testing, name)


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("trio_mcp").joinpath("py.typed").is_file()
