"""The Blocks of the workbench: three tabs wired to the handlers of `Workbench`.

Predict: mark two entities in a sentence, predict, see recall / reranking / attention, give
feedback. Relations: the catalogue (search, switch on/off), your own relations (add, edit,
delete, import, export). Feedback: the saved judgements, filters, export for retraining.

Named API endpoints (usable from `gradio_client`; state is kept per client session):
/predict(sentence, head, tail), /add_relation(name, description),
/edit_relation(name, description), /delete_relation(name),
/feedback(verdict, correct_relation, note).
"""

from __future__ import annotations

import gradio as gr

from .handlers import Workbench

MODEL_CONCURRENCY = 1  # model calls at a time (the queue holds the rest)
DB_CONCURRENCY = 8  # SQLite writes at a time (WAL + busy timeout serialise them safely)
UI_CONCURRENCY = 16  # cheap events: previews, tables

CSS = """
#catalogue .wrap { max-height: 340px; overflow-y: auto; }
#mark-hint textarea { font-size: 0.9em; }
.panel-help { color: var(--body-text-color-subdued); font-size: 0.92em; }
"""

THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

INTRO = """
## EMMA workbench: which relation links two entities in a sentence?
1. **Mark the entities.** Select the first entity in the sentence (the *head*, usually the subject) and press **Head**;
   select the second (the *tail*) and press **Tail**. You can also type the entity strings, or pick an example.
2. **Predict.** EMMA compares the sentence with a written description of every relation switched on
   (tab *Relations*, where you can write your own in plain words: no retraining) and picks the best one.
3. **Check and give feedback.** The panels show how it decided; tell it whether it was right. Feedback is saved for retraining.
"""

HELP_RECALL = """**Stage 1, recall.** The sentence (with its two entities) and every relation description are turned
into vectors; each bar is how similar the sentence is to one description. The orange top-k go to stage 2."""

HELP_RERANK = """**Stage 2, classifier.** A second model reads the sentence together with each of the k descriptions and
gives probabilities. Models that combine the two stages multiply them with recall's own confidence ("combined"), so a
hesitant classifier does not overrule a sure recall. When the pick is not recall's #1, stage 2 has corrected recall."""

HELP_ATTENTION = """**Why these descriptions?** Each description is summarised twice, once for the head entity and once for the
tail (two "virtual entities"). Each row shows how much weight each word of the description got."""


def build_demo(wb: Workbench) -> gr.Blocks:
    """The workbench UI over a `Workbench` (model, store, catalogue shared by all sessions)."""
    first = wb.examples[0] if wb.examples else None
    # delete_cache: Gradio's copies of uploaded and exported files (annotation data) go after an hour.
    with gr.Blocks(title="EMMA workbench", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session = gr.State(wb.new_session())
        spans = gr.State({"head": first["head"], "tail": first["tail"]} if first else {})
        selection = gr.State(None)
        # The browser's workspace token (see `identity`); BrowserState's own encryption is not relied on.
        browser_id = gr.BrowserState(None, storage_key="emma-workbench-token", secret=wb.store.secret())

        gr.Markdown(INTRO)
        gr.Markdown(f"Model `{wb.engine.checkpoint_id}` · classifier reranks the top k = {wb.engine.k} · "
                    f"device {wb.engine.extractor.device}", elem_classes="panel-help")

        with gr.Tabs():
            # ---------------------------------------------------------------- Predict
            with gr.Tab("Predict", id="predict-tab"):
                with gr.Row():
                    with gr.Column(scale=3):
                        sentence = gr.Textbox(
                            first["text"] if first else "", label="Sentence (select words, then press Head or Tail)",
                            lines=3, max_lines=8, elem_id="sentence",
                        )
                        with gr.Row():
                            head_btn = gr.Button("Head ← selection", elem_id="mark-head", size="sm")
                            tail_btn = gr.Button("Tail ← selection", elem_id="mark-tail", size="sm")
                            clear_btn = gr.Button("Clear", elem_id="clear-marks", size="sm")
                        with gr.Row():
                            head = gr.Textbox(first["head_text"] if first else "", label="Head entity (subject)", elem_id="head")
                            tail = gr.Textbox(first["tail_text"] if first else "", label="Tail entity (object)", elem_id="tail")
                        marked = gr.HighlightedText(
                            label="Marked sentence", elem_id="marked", color_map={"HEAD": "#f4a261", "TAIL": "#2a9d8f"},
                            show_legend=False, combine_adjacent=False,
                        )
                        hint = gr.Textbox(show_label=False, interactive=False, lines=1, elem_id="mark-hint", container=False)
                        predict_btn = gr.Button("Predict the relation", variant="primary", elem_id="predict")
                    with gr.Column(scale=2):
                        label = gr.Label(label="Prediction", elem_id="label")
                        summary = gr.Textbox(label="In words", interactive=False, lines=3, elem_id="summary")
                        latency = gr.Markdown(elem_id="latency")
                        with gr.Accordion("Give feedback on this prediction", open=True):
                            verdict = gr.Radio([("Correct", "correct"), ("Wrong", "wrong")], label="Was it right?", elem_id="verdict")
                            correct_relation = gr.Dropdown(
                                [], label="Correct relation (if wrong: pick one, or type a new name)", allow_custom_value=True,
                                elem_id="correct-relation", value=None,
                            )
                            note = gr.Textbox(label="Note (optional)", lines=1, elem_id="note")
                            feedback_btn = gr.Button("Save feedback", elem_id="submit-feedback")
                            feedback_status = gr.Textbox(show_label=False, interactive=False, elem_id="feedback-status", container=False)
                if wb.examples:
                    gr.Examples(
                        [[e["text"], e["head_text"], e["tail_text"]] for e in wb.examples],
                        inputs=[sentence, head, tail], outputs=[spans], fn=wb.example_spans, run_on_click=True,
                        label="Examples (FewRel validation sentences, entities already marked)", elem_id="examples",
                        api_visibility="private", cache_examples=False,
                    )
                gr.Markdown(HELP_RECALL, elem_classes="panel-help")
                recall_plot = gr.Plot(label="Recall scores", elem_id="recall-plot")
                gr.Markdown(HELP_RERANK, elem_classes="panel-help")
                rerank = gr.Dataframe(label="Reranking: recall rank → classifier rank", interactive=False, elem_id="rerank", wrap=True)
                gr.Markdown(HELP_ATTENTION, elem_classes="panel-help")
                attention_plot = gr.Plot(label="Attention of the two virtual entities over description words", elem_id="attention-plot")
                with gr.Accordion("Raw prediction (JSON, as returned by the /predict API)", open=False):
                    prediction_json = gr.JSON(elem_id="prediction-json")

            # ---------------------------------------------------------------- Relations
            with gr.Tab("Relations", id="relations-tab"):
                relation_count = gr.Markdown(elem_id="relation-count")
                with gr.Row():
                    with gr.Column(scale=3):
                        search = gr.Textbox(label="Search the catalogue (FewRel and Wiki-ZSL relations)", elem_id="relation-search",
                                            placeholder="e.g. birth, country, P17")
                        with gr.Row():
                            enable_btn = gr.Button("Switch on all shown", size="sm", elem_id="enable-shown")
                            disable_btn = gr.Button("Switch off all shown", size="sm", elem_id="disable-shown")
                            reset_btn = gr.Button("Default set", size="sm", elem_id="reset-catalogue")
                        catalogue = gr.CheckboxGroup(label="Switched on (tick to use a relation in predictions)", elem_id="catalogue")
                    with gr.Column(scale=2):
                        gr.Markdown("**Your own relations.** Describe how the head relates to the tail, like the catalogue does: "
                                    "*founded by: founder or co-founder of this organization*. The model reads \"name: description\"; "
                                    "a new relation is usable at once.", elem_classes="panel-help")
                        rel_name = gr.Textbox(label="Name", elem_id="rel-name")
                        rel_desc = gr.Textbox(label="Description", lines=3, elem_id="rel-desc")
                        with gr.Row():
                            add_btn = gr.Button("Add", variant="primary", elem_id="add-relation")
                            edit_btn = gr.Button("Save changes", elem_id="edit-relation")
                            delete_btn = gr.Button("Delete", variant="stop", elem_id="delete-relation")
                        relation_status = gr.Textbox(show_label=False, interactive=False, elem_id="relation-status", container=False)
                        user_table = gr.Dataframe(label="Your relations (click a row to edit it)", interactive=False,
                                                  elem_id="user-relations", wrap=True)
                        with gr.Row():
                            import_btn = gr.UploadButton("Import relation set (JSON)", file_types=[".json"], size="sm",
                                                         elem_id="import-relations")
                            export_btn = gr.Button("Export relations in force", size="sm", elem_id="export-relations")
                        relations_file = gr.File(label="Exported relation set", elem_id="relations-file", interactive=False)
                catalogue_table = gr.Dataframe(label="Catalogue relations matching the search", interactive=False,
                                               elem_id="catalogue-table", wrap=True, max_height=420)

            # ---------------------------------------------------------------- Feedback
            with gr.Tab("Feedback", id="feedback-tab") as feedback_tab:
                with gr.Row():
                    fb_verdict = gr.Dropdown([("all", "all"), ("correct", "correct"), ("wrong", "wrong")], value="all",
                                             label="Verdict", elem_id="fb-verdict")
                    fb_contains = gr.Textbox(label="Contains (sentence, relation or note)", elem_id="fb-contains")
                    fb_everyone = gr.Checkbox(label="Everyone's feedback (admins only)", value=False, visible=False, elem_id="fb-everyone")
                    fb_refresh = gr.Button("Refresh", size="sm", elem_id="fb-refresh")
                fb_table = gr.Dataframe(label="Saved feedback (newest first)", interactive=False, elem_id="fb-table", wrap=True)
                with gr.Row():
                    fb_export = gr.Button("Export shown rows: JSONL (FewRel format) + descriptions + CSV", elem_id="fb-export")
                fb_status = gr.Textbox(show_label=False, interactive=False, elem_id="fb-status", container=False)
                fb_files = gr.File(label="Exports (train with: python -m emma train --data feedback.jsonl --descriptions descriptions.json)",
                                   file_count="multiple", interactive=False, elem_id="fb-files")

        # -------------------------------------------------------------------- events
        private = dict(api_visibility="private")
        quiet = dict(api_visibility="private", show_progress="hidden")
        relation_outputs = [catalogue, catalogue_table, relation_count, user_table]
        fb_filters = [fb_verdict, fb_contains, fb_everyone, session]

        demo.load(wb.load, [browser_id], [session, browser_id, fb_everyone], **private).then(
            wb.relation_views, [search, session], relation_outputs, **private
        ).then(wb.preview, [sentence, head, tail, spans], [marked, hint], **quiet)

        # One queue slot for selecting and marking, so a Head/Tail click never overtakes the selection before it.
        marking = dict(concurrency_id="marking", concurrency_limit=1, **quiet)
        sentence.select(wb.remember_selection, [sentence], [selection], **marking)
        head_btn.click(wb.mark_head, [sentence, selection, head, tail, spans], [head, tail, spans], **marking).then(
            wb.preview, [sentence, head, tail, spans], [marked, hint], **quiet)
        tail_btn.click(wb.mark_tail, [sentence, selection, head, tail, spans], [head, tail, spans], **marking).then(
            wb.preview, [sentence, head, tail, spans], [marked, hint], **quiet)
        clear_btn.click(wb.clear_marks, None, [head, tail, spans, selection], **quiet)
        head.input(wb.forget_head, [spans], [spans], **quiet)
        tail.input(wb.forget_tail, [spans], [spans], **quiet)
        for box in (sentence, head, tail):
            box.change(wb.preview, [sentence, head, tail, spans], [marked, hint], trigger_mode="always_last", **quiet)

        predict_btn.click(
            wb.predict, [sentence, head, tail, spans, session], [prediction_json, session],
            api_name="predict", concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY,
        ).success(
            wb.show_prediction, [session],
            [marked, label, summary, recall_plot, rerank, attention_plot, latency, correct_relation], **private,
        ).success(lambda: (None, "", ""), None, [verdict, note, feedback_status], **quiet)

        feedback_btn.click(
            wb.feedback, [verdict, correct_relation, note, session], [feedback_status],
            api_name="feedback", concurrency_id="db", concurrency_limit=DB_CONCURRENCY,
        ).success(wb.feedback_view, fb_filters, [fb_table], **quiet)

        for button, handler, api_name in ((add_btn, wb.add_relation, "add_relation"), (edit_btn, wb.edit_relation, "edit_relation")):
            button.click(
                handler, [rel_name, rel_desc, session], [session, relation_status],
                api_name=api_name, concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY,
            ).success(wb.relation_views, [search, session], relation_outputs, **private)
        delete_btn.click(
            wb.delete_relation, [rel_name, session], [session, relation_status],
            api_name="delete_relation", concurrency_id="db", concurrency_limit=DB_CONCURRENCY,
        ).success(wb.relation_views, [search, session], relation_outputs, **private)
        user_table.select(wb.pick_user_relation, [session], [rel_name, rel_desc], **quiet)

        search.change(wb.catalogue_view, [search, session], [catalogue, catalogue_table, relation_count],
                      trigger_mode="always_last", **quiet)
        catalogue.input(wb.set_shown_enabled, [catalogue, search, session], [session], trigger_mode="always_last", **quiet).success(
            wb.relation_views, [search, session], relation_outputs, **quiet)
        for button, handler in ((enable_btn, wb.enable_shown), (disable_btn, wb.disable_shown)):
            button.click(handler, [search, session], [session], **private).success(
                wb.relation_views, [search, session], relation_outputs, **private)
        reset_btn.click(wb.reset_catalogue, [session], [session], **private).success(
            wb.relation_views, [search, session], relation_outputs, **private)
        import_btn.upload(wb.import_relations, [import_btn, session], [session, relation_status],
                          concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY, **private).success(
            wb.relation_views, [search, session], relation_outputs, **private)
        export_btn.click(wb.export_relations, [session], [relations_file], **private)

        for trigger in (fb_refresh.click, fb_verdict.change, fb_everyone.change, fb_contains.submit, feedback_tab.select):
            trigger(wb.feedback_view, fb_filters, [fb_table], **quiet)
        fb_export.click(wb.export_feedback, fb_filters, [fb_files, fb_status], **private)

    demo.queue(default_concurrency_limit=UI_CONCURRENCY)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, auth=None, share: bool = False, **kwargs):
    """Launch with the workbench's settings: run history off (annotation data stays out of the browser's history)."""
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=share,
        run_history=False,
        css=CSS,
        theme=THEME,
        footer_links=["api", "settings"],
        **kwargs,
    )
