"""The FAISS support index (stable ids, add/remove without rebuild) and crash-safe snapshot storage."""
from __future__ import annotations

from fewshot.index.support_index import INDEX_TYPES, ClassEntry, IndexType, SupportIndex

__all__ = ["INDEX_TYPES", "ClassEntry", "IndexType", "SupportIndex"]
