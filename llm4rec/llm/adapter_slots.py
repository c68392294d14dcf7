"""The adapters attached to the backbone's PeftModel, by name: loaded once, the least recently used unloaded.

An adapter's name in the PeftModel is its place in the adapter store and its recipe key, so an adapter
retrained under another recipe never collides with the old one. At most :data:`MAX_LOADED_ADAPTERS` stay
attached; older ones are deleted from the model (they stay on disk and load again when asked for).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from llm4rec.llm.adapter_store import AdapterStore

MAX_LOADED_ADAPTERS = 6


class AdapterSlots:
    def __init__(self, backbone, store: AdapterStore) -> None:
        self.backbone, self.store = backbone, store
        self.loaded: OrderedDict[str, Path] = OrderedDict()  # adapter name -> directory, least recent first

    def name(self, path: Path, key: str) -> str:
        """The peft adapter name of a store directory's adapter (peft names may not contain dots)."""
        relative = Path(path).resolve().relative_to(self.store.root.resolve())
        return "_".join(relative.parts).replace(".", "_").replace("-", "_") + "_" + key[:8]

    def attached(self, name: str, path: Path) -> None:
        """Note an adapter attached by training (the most recently used now)."""
        self.loaded[name] = path
        self.loaded.move_to_end(name)

    def load(self, path: Path, key: str) -> str:
        """Attach the adapter at ``path`` (recipe ``key``) unless it is attached already; its name."""
        from peft import PeftModel

        from llm4rec.llm.adapters import load_adapter

        name = self.name(path, key)
        model = self.backbone.model
        if isinstance(model, PeftModel) and name in model.peft_config:
            self.attached(name, path)
            return name
        self.backbone.model = load_adapter(self.backbone, path, name)
        self.attached(name, path)
        while len(self.loaded) > MAX_LOADED_ADAPTERS:
            self._unload(next(iter(self.loaded)))
        return name

    def _unload(self, name: str) -> None:
        from peft import PeftModel

        self.loaded.pop(name, None)
        model = self.backbone.model
        if isinstance(model, PeftModel) and name in model.peft_config and len(model.peft_config) > 1:
            if model.active_adapter == name:
                model.set_adapter(next(n for n in model.peft_config if n != name))
            model.delete_adapter(name)
