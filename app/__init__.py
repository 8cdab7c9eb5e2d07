"""The EMMA workbench: a Gradio UI over the public `emma` API.

Modules: `catalogue` (default relations and examples from assets/), `build_assets` (regenerates
them), `storage` (SQLite via sqlite-utils), `engine` (one shared model, per-session relation
sets), `session` (per-user state and input checks), `handlers` (event handlers), `plots`
(plotly figures and tables), `layout` (the Blocks), `main` (wiring). `app.py` parses arguments
and launches.
"""
