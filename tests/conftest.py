"""Shared test setup: the support modules in this folder (toylab, hf_fake_hub, slurm_cluster,
llm_scripted_server) are importable from every test package below it.

pytest's default "prepend" import mode puts this file's folder on ``sys.path`` when it loads
the conftest, so ``import toylab`` works from ``tests/run/test_loop.py`` as well. Test file
names must stay unique across the subfolders (they are imported by basename).
"""
