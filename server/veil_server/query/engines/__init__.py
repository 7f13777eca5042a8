"""Engines beyond embedded DuckDB: PostgreSQL (``postgres``) and Spark SQL (``spark``).

Each renders its SQL from the validated plan (never the analyst's string), binds every literal
as a parameter, pushes the whole aggregate down and returns the same integer sufficient
statistics as :class:`veil_server.query.engine.DuckDBEngine` on the same rows: only aggregates leave
the data source. :class:`veil_server.query.engine.RoutingEngine` picks one by the dataset's format.
"""
