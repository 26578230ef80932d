"""The page: the Slicer panel's controls on the left, Slicer's three slice views on the right.

Menus are plain HTML selects and checkboxes bound to the trame state the bridge fills from
the logic's description of the model (the same texts as the Slicer panel); the element ids
are what the browser tests click. The colour bar is drawn from the Inferno table the
heatmaps use, labelled with the shown map's value range.
"""
from __future__ import annotations

HEAT_TABLE_FILE = "Inferno.txt"


def colour_bar_css() -> str:
    """A CSS gradient of the heat colour table (every 16th of its 256 entries)."""
    from ..mrml.colors import COLOR_TABLE_DIR, read_color_table_file

    entries = read_color_table_file(COLOR_TABLE_DIR / HEAT_TABLE_FILE)
    stops = [f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})" for _, _, r, g, b, _ in entries[::16]]
    return "linear-gradient(to right, " + ", ".join(stops) + ")"


STYLE = """
.xai-panel { width: 360px; min-width: 360px; overflow-y: auto; padding: 8px 12px; font-size: 14px; }
.xai-panel label.xai-caption { display: block; margin-top: 10px; font-weight: 600; }
.xai-panel select, .xai-panel input[type=text] { width: 100%; padding: 3px; color: inherit;
  background: rgba(255,255,255,0.08); border: 1px solid rgba(255,255,255,0.3); border-radius: 3px; }
.xai-panel option { color: black; }
.xai-methods { max-height: 180px; overflow-y: auto; border: 1px solid rgba(255,255,255,0.2); padding: 2px 6px; }
.xai-methods label { display: block; }
.xai-error { color: #ff8a80; white-space: pre-wrap; }
.xai-status { white-space: pre-wrap; font-size: 12px; opacity: 0.85; }
.xai-views { flex: 1 1 auto; position: relative; min-width: 0; }
"""


def build_page(server, scene_app, title: str = "XAIExplain"):
    """The page's layout on ``server``; returns the layout object."""
    from trame.ui.vuetify3 import VAppLayout
    from trame.widgets import client, html
    from trame.widgets import vuetify3 as v

    ctrl = server.controller

    server.state.trame__title = title
    with VAppLayout(server, fill_height=True) as layout:
        layout.root.theme = "dark"
        client.Style(STYLE)
        with v.VAppBar(density="compact"):
            v.VToolbarTitle(title)
            html.Div("{{ review_title }}", id="review-title", classes="mr-4")
        with v.VMain(), html.Div(style="display: flex; height: calc(100vh - 48px);"):
            with html.Div(classes="xai-panel", id="panel"):
                _review(html, v, ctrl)  # first: in review mode it is what the page is for
                _inputs(html, v, ctrl)
                _model(html, v, ctrl)
                _run(html, v, ctrl)
                _display(html, v, ctrl)
            with html.Div(classes="xai-views", id="views"):
                scene_app.layout_manager.initialize_layout_grid(layout)
        _trust_dialog(html, v, ctrl)
    return layout


def _inputs(html, v, ctrl):
    html.Label("Input volume", classes="xai-caption", for_="image")
    with html.Select(id="image", v_model=("image",)):
        html.Option("(choose an image)", value="")
        html.Option("{{ item.title }}", v_for="item in images", key="item.value", value=("item.value",))
    with html.Div(classes="d-flex mt-1"):
        html.Input(type="text", id="image-path", v_model=("image_path",), placeholder="path on the server")
        v.VBtn("Open", id="open-path", size="small", click=ctrl.open_path, classes="ml-1")
    html.Label("Reference mask (label map, for the metrics)", classes="xai-caption", for_="mask")
    with html.Select(id="mask", v_model=("mask",)):
        html.Option("(none)", value="")
        html.Option("{{ item.title }}", v_for="item in images", key="item.value", value=("item.value",))
    html.Label("Upload (NRRD, NIfTI, MHA, zip of one DICOM series)", classes="xai-caption", for_="upload")
    # the size is checked here first (no transfer of a file that would be refused) and again on the server
    html.Input(type="file", id="upload", accept=".nrrd,.nii,.gz,.mha,.zip",
               change=(ctrl.upload, "[$event.target.files[0] && $event.target.files[0].size > upload_limit "
                                    "? {name: $event.target.files[0].name, size: $event.target.files[0].size} "
                                    ": $event.target.files]"))


def _model(html, v, ctrl):
    html.Label("Model", classes="xai-caption", for_="model")
    with html.Select(id="model", v_model=("model",)):
        html.Option("(choose a model)", value="")
        html.Option("{{ item.title }}", v_for="item in models", key="item.value", value=("item.value",))
    html.Div("{{ model_description }}", id="model-description", classes="xai-status")
    html.Label("Methods", classes="xai-caption")
    with html.Div(classes="xai-methods", id="methods"):
        with html.Label(v_for="item in method_items", key="item.value", title=("item.props.subtitle",),
                        style=("item.props.disabled ? 'opacity: 0.45' : ''",)):
            html.Input(type="checkbox", value=("item.value",), v_model=("methods",),
                       disabled=("item.props.disabled",), id=("'method-' + item.value",))
            html.Span(" {{ item.title }}")
    html.Label("Target", classes="xai-caption", for_="target")
    with html.Select(id="target", v_model=("target",)):
        html.Option("{{ item.title }}", v_for="item in target_items", key="item.value", value=("item.value",))
    with html.Div(v_if="target === 'roi'", classes="mt-1"):
        with html.Select(id="segment", v_model=("segment",)):
            html.Option("(run the model once: its prediction's segments appear here)", value="",
                        v_if="!segment_items.length")
            html.Option("{{ item.title }}", v_for="item in segment_items", key="item.value", value=("item.value",))
    with html.Div(v_if="target === 'point'", classes="mt-1"):
        v.VBtn("Place point", id="place-point", size="small", click=ctrl.place_point)
        html.Span(" {{ point_text }}", id="point-text", classes="xai-status")
    html.Label("Layer", classes="xai-caption", for_="layer")
    with html.Select(id="layer", v_model=("layer",)):
        html.Option("{{ item }}", v_for="item in layer_items", key="item", value=("item",))
    html.Label("Mode", classes="xai-caption", for_="mode")
    with html.Select(id="mode", v_model=("mode",)):
        html.Option("{{ item.title }}", v_for="item in mode_items", key="item.value", value=("item.value",))
    with html.Div(v_if="modality_items.length"):
        html.Label("Modality", classes="xai-caption", for_="modality")
        with html.Select(id="modality", v_model=("modality",)):
            html.Option("{{ item.title }}", v_for="item in modality_items", key="item.value", value=("item.value",))
    html.Label("Device", classes="xai-caption", for_="device")
    with html.Select(id="device", v_model=("device",)):
        html.Option("{{ item.title }}", v_for="item in device_items", key="item.value", value=("item.value",))
    html.Label("Label map", classes="xai-caption", for_="label-choice")
    with html.Select(id="label-choice", v_model=("label_choice",)):
        html.Option("{{ item.title }}", v_for="item in label_items", key="item.value", value=("item.value",))
    html.Input(type="number", id="label-fixed", v_if="label_choice === 'fixed'", v_model_number=("label_fixed",),
               min=0, max=0.99, step=0.05)


def _run(html, v, ctrl):
    v.VBtn("{{ run_text }}", id="apply", block=True, color=("running ? 'error' : 'primary'",), classes="mt-3",
           click=ctrl.apply, disabled=("!running && (!model || !methods.length || !image_loaded)",))
    v.VProgressLinear(v_show="running", model_value=("progress",), id="progress", height=8, classes="mt-1",
                      color="primary")
    # for scripts and tests: the progress in percent and the scene's node count, as text
    html.Div("{{ progress }}", id="progress-value", style="display: none")
    html.Div("{{ scene_nodes }}", id="scene-nodes", style="display: none")
    html.Div("{{ timings }}", id="timings", style="display: none")  # the last run's seconds per phase (JSON)
    html.Div("{{ status }}", id="status", classes="xai-status mt-1")
    html.Div("{{ error }}", id="error", classes="xai-error", v_show="error")


def _display(html, v, ctrl):
    html.Label("Heatmaps", classes="xai-caption")
    with html.Div(id="heatmaps"):
        with html.Div(v_for="(item, i) in heatmaps", key="item.id", classes="d-flex align-center"):
            html.Input(type="checkbox", checked=("item.visible",), id=("'show-' + i",),
                       change=(ctrl.show_heatmap, "[i, $event.target.checked]"))
            html.Span(" {{ item.name }}", classes="flex-grow-1 ml-1", style="font-size: 12px")
            html.A("NRRD", href=("item.download",), download=True, classes="ml-1", id=("'download-' + i",))
    with html.Div(v_show="color_range", classes="mt-2"):
        html.Div(style=f"height: 12px; background: {colour_bar_css()};", id="colour-bar")
        html.Div("{{ color_range }}", id="colour-range", classes="xai-status")
    html.Label("Opacity: {{ opacity }}", classes="xai-caption", for_="opacity")
    html.Input(type="range", id="opacity", min=0, max=1, step=0.05, v_model_number=("opacity",), style="width:100%")
    html.Label("Window / level", classes="xai-caption")
    with html.Div(classes="d-flex"):
        html.Input(type="number", id="window", v_model_number=("window",), style="width: 50%", step=10)
        html.Input(type="number", id="level", v_model_number=("level",), style="width: 50%", step=10)
    with html.Div(v_if="metrics.length", classes="mt-2"):
        html.Label("Metrics against the mask", classes="xai-caption")
        with html.Table(id="metrics", style="font-size: 12px; width: 100%"):
            with html.Tr(v_for="row in metrics", key="row.name"):
                html.Td("{{ row.name }}")
                html.Td("{{ row.value }}", style="text-align: right")
    with html.Div(v_if="probabilities.length", classes="mt-2", id="probabilities"):
        html.Label("Per-slice probabilities", classes="xai-caption")
        html.Div(v_html=("probability_plot",))
    v.VBtn("Save", id="save", size="small", classes="mt-3", click=ctrl.save,
           disabled=("running || !image_loaded || !model",), v_show="can_save")


def _review(html, v, ctrl):
    with html.Div(v_if="review_items.length", id="review", classes="mb-3"):
        html.Label("Review: {{ review_index + 1 }} / {{ review_items.length }}", classes="xai-caption")
        with html.Div(classes="d-flex"):
            v.VBtn("Previous", id="review-previous", size="small", click=(ctrl.review_step, "[-1]"))
            v.VBtn("Next", id="review-next", size="small", click=(ctrl.review_step, "[1]"), classes="ml-1")
        html.Div("{{ review_summary }}", id="review-summary", classes="xai-status")


def _trust_dialog(html, v, ctrl):
    with v.VDialog(model_value=("!!trust_question",), persistent=True, max_width=520):
        with v.VCard(title="Untrusted model", id="trust-dialog"):
            v.VCardText("{{ trust_question }}", style="white-space: pre-wrap")
            with v.VCardActions():
                v.VBtn("Yes", id="trust-yes", click=ctrl.trust_yes)
                v.VBtn("No", id="trust-no", click=ctrl.trust_no)
