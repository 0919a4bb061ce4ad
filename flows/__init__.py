"""Prefect orchestration of the FLIP pipeline: thin flows over the plain ``flip_core`` functions.

``convert`` (:mod:`flows.convert`), ``train`` (:mod:`flows.train`), ``evaluate`` (:mod:`flows.evaluate`) and
``convert-and-train`` (:mod:`flows.convert_and_train`) with typed parameters (:mod:`flows.params`), artifacts
(:mod:`flows.artifacts`), Ray/Prefect connection checks (:mod:`flows.runtime`) and ``flip run`` (:mod:`flows.cli`).
Deployments are in ``prefect.yaml`` at the repository root.
"""
