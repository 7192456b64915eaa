"""Demo data: a deterministic source database for demos, tests and benchmarks, and the quick start.

time_units   epoch microseconds, the unit all generated times are built in
edge_cases   the crafted rows, one per awkward case the pipeline must survive
generate     the bulk random rows plus the crafted ones: generate() -> DemoData
database     writing the demo source to a database: create_schema, load, write_demo_source
data         the generator's command line: python -m feedback_assets.demo.data --help
quickstart   python -m feedback_assets.demo: a demo source, a local key, recent days exported
"""
