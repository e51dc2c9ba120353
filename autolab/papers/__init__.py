"""Paper sources (``local``, ``arxiv``, ``hf-papers``) and the memory of mined papers."""

from autolab.papers.base import MinedPapers, PaperSourceError

__all__ = ["MinedPapers", "PaperSourceError"]
