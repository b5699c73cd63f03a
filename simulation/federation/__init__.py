"""The federation runner: a whole fedpers federation, on Ray or in process.

``run`` is ``fedpers simulate`` on Flower's simulation engine (guarded by
``ray_lifecycle``); ``population`` enrols one device per user; ``recipes`` holds the tuned
hyperparameters for a privacy budget; ``fedsim`` is the in-process driver of the same
rounds (used by the audit and the benchmarks), watched through ``round_observers``.
"""
