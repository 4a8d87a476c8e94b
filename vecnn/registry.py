"""Name -> class maps for layers and losses.

One registry serves the Python API, the CLI's spec strings and the JSON inside model files:
a saved model names its layers, and loading looks the names up *here*, never by importing a
name found in a file. Users add their own classes with the decorators.
"""

from __future__ import annotations

LAYERS: dict[str, type] = {}
LOSSES: dict[str, type] = {}
#: model classes by name (``Sequential``): what a model file is rebuilt as, found here so that
#: ``vecnn.io`` never imports ``vecnn.model`` (which imports ``io`` to save)
MODELS: dict[str, type] = {}


def _register(table: dict, kind: str, cls=None, *, name: str | None = None):
    def add(c):
        key = name or c.__name__
        old = table.get(key)
        if old is not None and old is not c and (old.__module__, old.__qualname__) != (c.__module__, c.__qualname__):
            raise ValueError(
                f"register_{kind}: the name {key!r} is already taken by "
                f"{old.__module__}.{old.__qualname__}; pass name=... to register under another"
            )
        table[key] = c
        c.registered_name = key
        return c

    return add(cls) if cls is not None else add


def register_layer(cls=None, *, name: str | None = None):
    """Class decorator: make a layer class saveable and loadable under ``name`` (default: class name).

    Examples
    --------
    >>> import vecnn as vn
    >>> @vn.register_layer
    ... class Square(vn.layers.Layer):
    ...     def forward(self, x, training=False):
    ...         self._x = x
    ...         return x * x
    ...     def backward(self, grad_y):
    ...         return 2 * self._x * grad_y
    """
    return _register(LAYERS, "layer", cls, name=name)


def register_loss(cls=None, *, name: str | None = None):
    """Class decorator: make a loss class usable by name and restorable from model files."""
    return _register(LOSSES, "loss", cls, name=name)


def register_model(cls):
    """Register a model class under its own name (``vecnn.model.Sequential``)."""
    MODELS[cls.__name__] = cls
    return cls


def lookup(table: dict, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ValueError(
            f"unknown {kind} {name!r}; known {kind}s: {known}. A custom class must be "
            f"registered with @vecnn.register_{kind} before use or loading"
        ) from None


def check_config(cls, config, where: str | None = None) -> dict:
    """``config`` checked as the constructor arguments of ``cls`` (a layer or loss read from a
    model file): a JSON object whose keys all name parameters of the constructor, with every
    required one present. Returns it; raises ``ValueError`` naming the class and the key.

    Only the names are checked here; the values are checked by the constructor itself.
    """
    import inspect

    where = where or getattr(cls, "registered_name", cls.__name__)
    if not isinstance(config, dict):
        raise ValueError(
            f"{where}: expected its config to be an object of constructor arguments, "
            f"received {type(config).__name__} {_short(config)}"
        )
    for key in config:
        if not isinstance(key, str):
            raise ValueError(f"{where}: config keys must be strings, received {key!r}")
    try:
        inspect.signature(cls).bind(**config)
    except TypeError as e:  # "missing a required argument: 'x'", "got an unexpected keyword ..."
        raise ValueError(f"{where}: config does not match the constructor: {e}") from None
    return config


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
