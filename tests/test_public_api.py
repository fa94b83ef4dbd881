"""The public surface is small and pinned."""

import e5v


def test_exports_are_pinned():
    assert sorted(e5v.__all__) == sorted([
        "E5V", "EncodeResult", "PromptSet", "E5VError", "InputError", "ModelLoadError", "ConfigMismatchError",
        "MissingExtraError", "__version__",
    ])
    for name in e5v.__all__:
        assert getattr(e5v, name) is not None


def test_error_hierarchy():
    assert issubclass(e5v.InputError, ValueError) and issubclass(e5v.InputError, e5v.E5VError)
    assert issubclass(e5v.ModelLoadError, OSError) and issubclass(e5v.MissingExtraError, ImportError)
