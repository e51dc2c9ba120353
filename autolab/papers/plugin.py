"""Registers the built-in paper sources (entry point ``papers``)."""

from __future__ import annotations

from autolab.papers.arxiv import ArxivSource
from autolab.papers.hf_papers import HFPapersSource
from autolab.papers.local import LocalSource
from autolab_core.hookspecs import Register, hookimpl


@hookimpl
def autolab_register_paper_sources(register: Register) -> None:
    register(LocalSource)
    register(ArxivSource)
    register(HFPapersSource)
