"""The analysis layer: results (the project's or the paper's) -> `AnalysisInputs` -> tables and plots.

Entry points: `variants.build_inputs`, `paper.load_paper_results`, `collect.collect_results` /
`collect.collect_draws`, `tables.cumulative_table` / `hyperparameter_table` / `per_language_table`,
`render.render`, `plots.plot_cumulative` / `plot_gain`.
"""
