"""Named factories (timm's ``register_model`` / DiT's ``DiT_models`` dict, grown up)."""

from __future__ import annotations

from typing import Any, Callable

from .errors import UserError


class Registry:
    """Maps names to factories.

    >>> AUTOENCODERS = Registry("autoencoders")
    >>> @AUTOENCODERS.register("taef2")
    ... def _taef2(**kw): ...
    >>> AUTOENCODERS.create("taef2", device="cpu")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind}: '{name}' registered twice")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            raise UserError(
                f"unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} '{name}'",
                f"use one of: {', '.join(self.names())}",
            )
        return self._items[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
