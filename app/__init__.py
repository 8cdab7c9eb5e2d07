"""The EMMA workbench: a Gradio UI over the public `emma` API.

Modules: `catalogue` (default relations and examples from assets/), `build_assets` (regenerates
them), `storage` (SQLite via sqlite-utils), `engine` (one shared model, per-session relation
sets and labelled examples), `serving` (the model's thread, batching concurrent predictions), `session` (per-user
state and input checks), `identity` (owners, tokens, admins), `security` (passwords, login rate
limits, the Host / body size / session-binding middleware),
`workbench` (the shared resources and whose session an event is), one module per tab with its
builder and handlers (`predict_tab`, `relations_tab`, `feedback_tab`), `records` (prediction and
feedback records, exports), `plots` (the prediction's HTML charts and tables), `layout` (the Blocks and launch),
`browser` (Debian's Chromium for the screenshot and the browser tests),
`main` (wiring). `app.py` parses arguments and launches. Measurements of a running server (load,
kill -9 durability, perceived latency in a browser) are research tools: `python -m research loadtest |
crashtest | ui-latency`; see SECURITY.md.
"""
