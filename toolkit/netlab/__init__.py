"""The lab network: namespaces joined by veth links, impairment on the router, cleanup.

Describe, plan, apply (ARCHITECTURE.md decision 4): a topology and an impairment are plain
data; pure functions turn them into a Plan of Steps (plan.py); one executor applies the
steps and pushes each undo onto a stack, so every exit path can unwind exactly what was done.
"""
