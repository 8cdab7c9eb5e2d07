"""The Blocks of the workbench: a header, three tabs each built by its own module, the page load.

Predict (`predict_tab`): mark two entities in a sentence, predict, see recall / why (your labelled
examples) / reranking / attention, give feedback. Relations (`relations_tab`): the catalogue (search,
switch on/off), your own relations (add, edit, delete, import, export), your labelled examples
(counts, remove, import). Feedback (`feedback_tab`): your saved
judgements, filters, export for retraining. Annotate (`annotate_tab`): import a file of instances,
judge them one at a time by keyboard, export (FewRel JSONL, Label Studio, doccano). Improve
(`improve_panel`, in the Feedback tab): fine-tune a copy of the model on your labels, compare, switch.

Named API endpoints (usable from `gradio_client`; state is kept per client session):
/predict(sentence, head, tail), /add_relation(name, description),
/edit_relation(name, description), /delete_relation(name),
/feedback(verdict, correct_relation, note) (a judged sentence becomes a labelled example; a new
correct_relation name becomes a relation of the caller's defined by that sentence),
/remove_example(example_id), /import_queue(file, name, shared), /annotate_accept(choice),
/extract(text) (every relation in a paragraph), /annotate_none, /annotate_skip, /annotate_undo, /improve_model(start_from),
/choose_model(name).

Concurrency: only the model (and SQLite writes) have limits of their own; everything per session
runs in the default pool, and the page load never touches the model.
"""

from __future__ import annotations

import gradio as gr

from . import plots
from .annotate_tab import KEYS_JS, AnnotateTab
from .extract_tab import ExtractTab
from .feedback_tab import FeedbackTab
from .identity import username
from .improve_panel import ImprovePanel
from .predict_tab import PredictTab
from starlette.middleware import Middleware

from .relations_tab import RelationsTab
from .security import RequestGuard, allowed_hosts
from .workbench import EXPORT_TTL_S, PRIVATE, QUIET, UI_CONCURRENCY, WORKER_THREADS, Workbench

MAX_BODY_BYTES = 2_000_000  # one request body (JSON events; uploads included)
MAX_FILE_SIZE = "1mb"  # one uploaded file (a relation set of 500 relations is about 0.6 MB)
MAX_QUEUED = 256  # events waiting at once, all users together; beyond it a request is refused as "queue full"

CSS = """
#catalogue .wrap { max-height: 340px; overflow-y: auto; }
#mark-hint textarea { font-size: 0.9em; }
.panel-help { color: var(--body-text-color-subdued); font-size: 0.92em; }
/* An export box with no file yet, and the Extract tab's entities before the first extraction: one line high,
   not Gradio's empty area of 130-250 pixels with a large icon. */
#relations-file .empty, #fb-files .empty, #annotate-files .empty, #extract-entities .empty { min-height: 0; height: 2.5rem; }
#relations-file .empty .icon, #fb-files .empty .icon, #annotate-files .empty .icon, #extract-entities .empty .icon { height: 1.5rem; }
""" + plots.CHART_CSS

THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

INTRO = """
## EMMA workbench: which relation links two entities in a sentence?
1. **Mark the entities.** Select the first entity in the sentence (the *head*, usually the subject) and press **Head**;
   select the second (the *tail*) and press **Tail**. You can also type the entity strings, or pick an example.
2. **Predict.** EMMA compares the sentence with a written description of every relation switched on
   (tab *Relations*, where you can write your own in plain words: no retraining) and picks the best one.
3. **Check and give feedback.** The panels show how it decided; tell it whether it was right. A sentence you judge
   (right, or wrong with the right relation picked) becomes an example of that relation and counts from your next
   prediction; with enough of them, *Improve the model from my labels* (tab *Feedback*) fine-tunes a version for you.
"""


def build_demo(wb: Workbench) -> gr.Blocks:
    """The workbench UI over a `Workbench` (model, store, catalogue shared by all sessions)."""
    predict, relations, feedback = PredictTab(wb), RelationsTab(wb), FeedbackTab(wb)
    annotate, improve = AnnotateTab(wb), ImprovePanel(wb)
    extract = ExtractTab(wb)
    # delete_cache: Gradio's copies of uploaded and exported files (annotation data) go after EXPORT_TTL_S.
    with gr.Blocks(title="EMMA workbench", analytics_enabled=False, delete_cache=(EXPORT_TTL_S, EXPORT_TTL_S)) as demo:
        session = gr.State(wb.new_session())
        # The browser's workspace token (see `identity`); BrowserState's own encryption is not relied on.
        token = gr.BrowserState(None, storage_key="emma-workbench-token", secret=wb.store.secret())
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            header = gr.Markdown(wb.model_line(None), elem_classes="panel-help", elem_id="model-line")
            # Shown under --auth. Relative, so that it works behind a proxy's path too; this browser's login only.
            logout = gr.Button("Log out", link="logout?all_session=false", size="sm", scale=0, min_width=90, visible=False,
                               elem_id="logout")
        with gr.Tabs() as tabs:
            with gr.Tab("Predict", id="predict-tab"):
                marking = predict.build(session, chips=extract.build_chips)
            with gr.Tab("Extract", id="extract-tab"):
                extract.build(session, predict, tabs)
            with gr.Tab("Annotate", id="annotate-tab") as annotate_tab:
                annotate.build(session, annotate_tab, predict, tabs)
            with gr.Tab("Relations", id="relations-tab") as relations_tab:
                catalogue = relations.build(session)
            with gr.Tab("Feedback", id="feedback-tab") as feedback_tab:
                everyone = feedback.build(feedback_tab, session, marking)
                annotate.build_agreement(session, feedback_tab)
                improve.build(session, feedback_tab, header)

        def on_load(token_, search, sentence, head, tail, spans, request: gr.Request = None):
            """One round trip: the owner's session, the Relations tab's views, the marked sentence."""
            session_, token_, everyone_ = wb.load(token_, request)
            views = relations.relation_views_of(search, session_, request)
            return (session_, token_, everyone_, wb.model_line(session_), gr.update(visible=username(request) is not None),
                    *views, *predict.preview(sentence, head, tail, spans))

        # Feedback saved on the Predict tab adds examples: the Relations tab shows them when opened.
        relations_tab.select(relations.relation_views_of, [catalogue.search, session], catalogue.views, **QUIET)
        demo.load(on_load, [token, catalogue.search, marking.sentence, marking.head, marking.tail, marking.spans],
                  [session, token, everyone, header, logout, *catalogue.views, marking.marked, marking.hint], **PRIVATE)
        demo.load(None, None, None, js=KEYS_JS)  # the Annotate tab's keyboard shortcuts (one handler for the page)
    # api_open=False: Gradio's direct POST route (/gradio_api/run/NAME) would let any client skip a queued event's
    # concurrency limit; only events that are not queued (/predict, bounded by API_PREDICTIONS) answer there.
    demo.queue(default_concurrency_limit=UI_CONCURRENCY, max_size=MAX_QUEUED, api_open=False)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, auth=None, share: bool = False,
           allowed_host=(), **kwargs):
    """Launch with the workbench's settings: run history off (annotation data stays out of the browser's history),
    uploads capped at MAX_FILE_SIZE, request bodies at MAX_BODY_BYTES, and only the bound address (or an
    `allowed_host`) accepted as `Host` (see `security.RequestGuard`)."""
    guard = Middleware(RequestGuard, hosts=allowed_hosts(host, allowed_host), max_body=MAX_BODY_BYTES,
                       suffixes=(".gradio.live",) if share else ())
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=share,
        run_history=False,
        css=CSS,
        theme=THEME,
        footer_links=["api", "settings"],
        max_file_size=MAX_FILE_SIZE,
        max_threads=WORKER_THREADS,
        app_kwargs={"middleware": [guard]},
        **kwargs,
    )
