"""The ctscribe browser app (gradio 6): upload → viewer → draft review → chat → export.

``build_app(pipeline, config)`` makes the ``gr.Blocks``; ``launch_app`` starts it offline (127.0.0.1 by default, no
share link, no analytics, local fonts only). The behaviour lives in ``chatapp.ui.callbacks`` as plain functions;
this module only lays out components and wires events. Per-user state is one ``Session`` in a ``gr.State`` whose
temp dir is deleted when the tab closes or the state expires.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from chatapp.sessions import Session, close_session, sweep_stale
from chatapp.ui import callbacks as cb
from chatapp.ui.viewer import PLANES
from vision.errors import CTScribeError
from vision.registry import WINDOWS

log = logging.getLogger(__name__)

CSS = """
.gradio-container {max-width: 1500px !important; margin: auto;}
#cts-header h1 {margin: 0; font-size: 1.5rem;}
#cts-header p {margin: 0; color: var(--body-text-color-subdued);}
.cts-notice {background: #fff7e0; color: #6b4e00; border: 1px solid #f0d58a; border-radius: 6px; padding: 6px 10px;
  font-size: 0.9rem; margin-top: 4px;}
.cts-demo {background: #b3261e; color: #fff; border-radius: 6px; padding: 8px 12px; font-weight: 600;}
.cts-meta {color: var(--body-text-color-subdued); font-size: 0.85rem;}
.cts-evidence ul {margin: 4px 0 4px 18px;}
.cts-ev-text {font-weight: 600; margin-bottom: 2px;}
.cts-cites-title {font-weight: 600; margin-top: 8px;}
.cts-cite summary {cursor: pointer; color: var(--link-text-color, #2563eb);}
.cts-cite blockquote {margin: 4px 0 8px 8px; padding-left: 8px; border-left: 3px solid #cbd5e1; font-size: 0.9rem;}
.cts-report p {margin: 4px 0;}
.cts-s.cts-edited {background: #e0f2fe;}
.cts-s.cts-accepted {background: #dcfce7;}
.cts-legend {font-size: 0.85rem;}
.cts-swatch {display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 8px;}
.cts-view {background: #0b0f19 !important;}
.cts-view img {object-fit: contain;}
#cts-sentences table, #cts-sentences table *, #cts-measurements table, #cts-measurements table * {
  font-family: ui-sans-serif, system-ui, "Segoe UI", Roboto, sans-serif !important; font-size: 0.9rem;}
"""


def make_theme() -> gr.themes.Base:
    """The default look with system fonts only: nothing is fetched from a font CDN."""
    return gr.themes.Soft(primary_hue="blue", neutral_hue="slate",
                          font=("ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"),
                          font_mono=("ui-monospace", "Consolas", "monospace"))


def _session(s: Session | None) -> Session:
    return s if isinstance(s, Session) else Session.create()


def build_app(pipeline: Any, config: Any = None) -> gr.Blocks:
    """Build the app around a Pipeline (or anything with its ``analyze/report/ask_stream`` methods).

    Args:
        pipeline: ``chatapp.pipeline.Pipeline`` (tests pass ``tests.fake_pipeline.FakePipeline``).
        config: ``chatapp.config.Config``; its ``app`` section sets ``concurrency_limit`` and ``session_ttl_s``.
    """
    app_cfg = config.section("app") if config is not None else {}
    limit = int(app_cfg.get("concurrency_limit") or 2)
    ttl = float(app_cfg.get("session_ttl_s") or 6 * 3600)
    sweep_stale(ttl_s=ttl)

    # Uploaded CTs and exports also sit in gradio's file cache: purge it on the same schedule as the sessions.
    with gr.Blocks(title="ctscribe: CT report drafting", analytics_enabled=False,
                   delete_cache=(max(60, int(ttl) // 4), int(ttl))) as demo:
        state = gr.State(None, time_to_live=ttl, delete_callback=close_session)
        selected = gr.State("")

        with gr.Row(elem_id="cts-header"):
            gr.HTML("<h1>ctscribe</h1><p>Region-grounded CT report drafting and questions about the scan</p>")
        banner = gr.HTML(cb.banner_html(None), elem_id="cts-banner")

        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                files = gr.File(label="CT study: DICOM zip, DICOM series files, or NIfTI", file_count="multiple",
                                elem_id="cts-upload", height=140)
                status = gr.Markdown("Upload a CT study to begin.", elem_id="cts-status")
                window = gr.Radio(list(WINDOWS), value="lung", label="Window", elem_id="cts-window")
                overlays = gr.CheckboxGroup([], value=[], label="Overlays (regions and findings)",
                                            elem_id="cts-overlays")
                alpha = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Overlay opacity")
                legend = gr.HTML("")
            with gr.Column(scale=3):
                imgs, sliders = [], []
                with gr.Row():
                    for plane in PLANES:
                        with gr.Column(min_width=200):
                            imgs.append(gr.Image(label=plane.capitalize(), interactive=False, height=340,
                                                 elem_id=f"cts-img-{plane}", elem_classes=["cts-view"],
                                                 buttons=["fullscreen"], format="png"))
                            sliders.append(gr.Slider(0, 1, value=0, step=1, label=f"{plane} slice",
                                                     elem_id=f"cts-slider-{plane}"))
                measures = gr.Dataframe(headers=cb.MEASUREMENT_HEADERS, value=[], label="Measurements",
                                        interactive=False, wrap=True, elem_id="cts-measurements", max_height=260)

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown("### Draft report")
                table = gr.Dataframe(headers=cb.SENTENCE_HEADERS, value=[], interactive=False, wrap=True,
                                     elem_id="cts-sentences", max_height=560,
                                     column_widths=["5%", "14%", "55%", "9%", "10%", "7%"],
                                     label="Click a sentence to see its evidence and jump to its region")
                with gr.Row():
                    editor = gr.Textbox(label="Selected sentence", lines=2, elem_id="cts-editor", scale=4,
                                        placeholder="Click a sentence in the table above")
                with gr.Row():
                    accept_btn = gr.Button("Accept", variant="primary", size="sm", elem_id="cts-accept")
                    edit_btn = gr.Button("Save edit", size="sm", elem_id="cts-save-edit")
                    remove_btn = gr.Button("Remove", variant="stop", size="sm", elem_id="cts-remove")
                    restore_btn = gr.Button("Restore", size="sm", elem_id="cts-restore")
                evidence = gr.HTML("", elem_id="cts-evidence")
                with gr.Accordion("Report preview (as exported)", open=True):
                    preview = gr.HTML(cb.report_preview_html(None), elem_id="cts-preview")
                with gr.Row():
                    formats = gr.CheckboxGroup(["txt", "json", "pdf"], value=["txt", "json", "pdf"],
                                               label="Export formats", scale=2)
                    export_btn = gr.Button("Export report", variant="primary", elem_id="cts-export", scale=1)
                exported = gr.File(label="Exported files", file_count="multiple", interactive=False,
                                   elem_id="cts-exported")
            with gr.Column(scale=2):
                gr.Markdown("### Ask about the scan")
                chat = gr.Chatbot(label="Chat", height=420, elem_id="cts-chat", buttons=["copy"],
                                  feedback_options=None, placeholder="Answers cite the passages they rely on.")
                with gr.Row():
                    question = gr.Textbox(placeholder="e.g. Is there a lung nodule? What follow-up is advised?",
                                          show_label=False, scale=5, elem_id="cts-question", submit_btn=False)
                    ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="cts-ask")
                cites = gr.HTML("", elem_id="cts-cites")

        # ------------------------------------------------------------------------------------------- handlers
        view_inputs = [state, *sliders, window, overlays, alpha]

        upload_outputs = [state, status, banner, *imgs, *sliders, overlays, window, legend, measures, table, preview,
                          evidence, chat, cites]

        def on_upload(session, upload, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress this way)
            session = _session(session)
            n_out = len(upload_outputs)
            try:
                cb.load_study(pipeline, session, upload, lambda f, m: progress(f, desc=m))
            except CTScribeError as e:
                gr.Warning(str(e))
                return (session, f"**Could not load the study:** {e}", *([gr.update()] * (n_out - 2)))
            except Exception as e:
                log.exception("analysis failed")
                gr.Warning(f"internal error: {type(e).__name__}")
                return (session, (f"**Internal error** ({type(e).__name__}: {e}). The server log has details; "
                                  "try another file or report the problem."), *([gr.update()] * (n_out - 2)))
            setup = cb.slider_setup(session)
            mids = [setup[p][1] for p in PLANES]
            images = cb.render_all(session, mids, "lung", [], 0.4)
            return (session, cb.status_message(session), cb.banner_html(session), *images,
                    *[gr.update(maximum=setup[p][0], value=setup[p][1]) for p in PLANES],
                    gr.update(choices=cb.available_overlays(session), value=[]), gr.update(value="lung"), "",
                    cb.measurement_rows(session), cb.sentence_rows(session), cb.report_preview_html(session),
                    "", [], "")

        files.upload(on_upload, [state, files], upload_outputs, concurrency_limit=limit)

        def make_plane_handler(i: int):
            def handler(session, idx, win, ovl, a):
                return cb.render_plane(session, PLANES[i], int(idx), win, ovl, a)
            return handler

        for i, sl in enumerate(sliders):
            sl.release(make_plane_handler(i), [state, sl, window, overlays, alpha], imgs[i], show_progress="hidden")

        def on_view(session, i0, i1, i2, win, ovl, a):
            return (*cb.render_all(session, [i0, i1, i2], win, ovl, a), cb.overlay_legend(session, ovl))

        for comp in (window, overlays):
            comp.change(on_view, view_inputs, [*imgs, legend], show_progress="hidden")
        alpha.release(on_view, view_inputs, [*imgs, legend], show_progress="hidden")

        def on_select(session, ovl, win, a, evt: gr.SelectData):
            if session is None or session.report is None:
                return ("", "", "", *([gr.update()] * 7))
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)
            s, c = cb.select_sentence(session, int(row))
            ovl = list(ovl or [])
            choices = cb.available_overlays(session)
            mask_name = s.mask if s.mask in choices else (f"regions/{s.region}" if f"regions/{s.region}" in choices
                                                          else None)
            if mask_name and mask_name not in ovl:
                ovl.append(mask_name)
            if c is None:
                return (s.id, s.text, cb.evidence_panel(session, s), *([gr.update()] * 6), gr.update(value=ovl))
            idx = cb.centroid_indices(c)
            images = cb.render_all(session, [idx[p] for p in PLANES], win, ovl, a)
            return (s.id, s.text, cb.evidence_panel(session, s), *images,
                    *[gr.update(value=idx[p]) for p in PLANES], gr.update(value=ovl))

        table.select(on_select, [state, overlays, window, alpha],
                     [selected, editor, evidence, *imgs, *sliders, overlays])

        def make_action(action: str):
            def handler(session, sid, text):
                try:
                    s = cb.set_sentence(session, sid, action, text)
                except CTScribeError as e:
                    gr.Warning(str(e))
                    return gr.update(), gr.update(), gr.update(), gr.update()
                return (cb.sentence_rows(session), cb.report_preview_html(session), s.text,
                        cb.evidence_panel(session, s))
            return handler

        for btn, action in ((accept_btn, "accept"), (edit_btn, "edit"), (remove_btn, "remove"),
                            (restore_btn, "restore")):
            btn.click(make_action(action), [state, selected, editor], [table, preview, editor, evidence])

        def on_ask(session, q):
            session = _session(session)
            try:
                for hist, html_cites in cb.chat_stream(pipeline, session, q):
                    yield session, hist, html_cites, ""
            except CTScribeError as e:
                gr.Warning(str(e))
                yield session, gr.update(), gr.update(), gr.update()

        for trigger in (ask_btn.click, question.submit):
            trigger(on_ask, [state, question], [state, chat, cites, question], concurrency_limit=limit)

        def on_export(session, fmts):
            try:
                return cb.export_files(session, fmts)
            except CTScribeError as e:
                gr.Warning(str(e))
                return None

        export_btn.click(on_export, [state, formats], exported)

    demo.queue(default_concurrency_limit=limit, max_size=int(app_cfg.get("queue_size") or 32))
    return demo


def launch_app(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, auth: list[tuple[str, str]] | None
               = None, max_file_size: str | int | None = None, prevent_thread_lock: bool = False) -> Any:
    """Start the server offline: no share link, no SSR/node, local fonts, errors shown as messages."""
    return demo.launch(server_name=host, server_port=port, auth=auth, share=False, max_file_size=max_file_size,
                       theme=make_theme(), css=CSS, ssr_mode=False, show_error=True, quiet=True,
                       footer_links=["settings"], inbrowser=False, prevent_thread_lock=prevent_thread_lock,
                       enable_monitoring=False, mcp_server=False, pwa=False)
