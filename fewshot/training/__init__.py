"""Weight training beside the run-time path (never imported by it): the text-encoder fine-tune behind
``FewShotEngine.refine("encoder")`` and supervised image-encoder transfer (``fewshot transfer``)."""
from __future__ import annotations
