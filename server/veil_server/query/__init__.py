"""The query path: SQL in, a validated plan, a policy decision, per-group statistics, a release.

    planner (sqlglot AST -> plan)  ->  policy (grant, rules, approval)  ->  engine (statistics)
        ->  release (fixed-point cells, suppression, Paillier encryption)

- :mod:`.catalog`: datasets and column controls; :mod:`.plan`: the validated plan's value types.
- :mod:`.planner` (with :mod:`.planner_ast`, :mod:`.planner_filters`): the only SQL parser.
- :mod:`.policy`: approve, queue for review, or reject; :mod:`.domain`: the public group domain.
- :mod:`.engine`: DuckDB and the SQL every engine renders; :mod:`.engines`: PostgreSQL, Spark;
  :mod:`.routing`: which engine runs a dataset; :mod:`.stats`: what engines return;
  :mod:`.sources`: where rows live; :mod:`.fingerprints`: noticing that they changed;
  :mod:`.range_proof`: skipping a clamp the Parquet footer proves useless.
- :mod:`.release`: cells of a result, encrypted; :mod:`.encrypted_input`: sums under an
  analyst's encrypted weights.

Nothing here knows gRPC.
"""
