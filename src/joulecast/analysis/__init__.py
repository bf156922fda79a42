"""Analysis of a study's runs, after del Rey et al. (2024), section 3.7 "Data analysis".

- :mod:`joulecast.analysis.data`: one row per run (:func:`~joulecast.analysis.data.run_table`),
  and a synthetic study store for tests and benchmarks
  (:func:`~joulecast.analysis.data.synthetic_store`);
- :mod:`joulecast.analysis.clean`: the paper's cleaning rules, with a log of what each removed;
- :mod:`joulecast.analysis.stats`, :mod:`joulecast.analysis.tradeoffs`,
  :mod:`joulecast.analysis.plots`: the tests, trade-offs and figures.

Importing this package imports none of its modules.
"""
