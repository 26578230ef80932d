"""Start the page: arguments (``xaiexplain serve``'s, parsed by the command line's own parser),
access control, the scene app, the bridge, the page and the routes for map downloads.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import security

PROG = "xaiexplain serve"


def parse(argv):
    """``xaiexplain serve``'s arguments; one parser, in :mod:`XAIExplainLib.cli.main`."""
    from ..cli.main import build_parser

    return build_parser().parse_args(["serve", *argv])


def allowed_paths(args) -> security.AllowedPaths:
    """What the page may open: the named images and models, and what lies under the named folders."""
    allowed = security.AllowedPaths(files=list(args.inputs) + [m for m in args.models or [] if Path(m).exists()])
    for folder in (args.models_dir, args.output_dir, args.review):
        if folder:
            allowed.add_root(folder)
    return allowed


def check_arguments(args) -> None:
    """Every path named must exist; a non-loopback host needs the token (always on)."""
    for path in args.inputs:
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such image file")
    for option, folder in (("--models-dir", args.models_dir), ("--output-dir", args.output_dir),
                           ("--review", args.review)):
        if folder and not Path(folder).is_dir():
            raise ValueError(f"{option} {folder}: no such folder")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: must be 0..65535")
    if args.upload_limit <= 0:
        raise ValueError(f"--upload-limit {args.upload_limit}: must be positive")


def token_middleware(token: str):
    """An aiohttp middleware refusing every request (page, assets, websocket) without the token.

    The URL's ``?token=`` is accepted once and set as an HttpOnly, same-site cookie, so the
    page's own requests (scripts, the websocket) carry it without putting it in other URLs.
    """
    from aiohttp import web

    @web.middleware
    async def check(request, handler):
        given = request.query.get(security.TOKEN_PARAMETER)
        if security.token_matches(given, token):
            response = await handler(request)
            if isinstance(response, web.StreamResponse) and not response.prepared:
                response.set_cookie(security.TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return response
        if security.token_matches(request.cookies.get(security.TOKEN_COOKIE), token):
            return await handler(request)
        return web.Response(status=403, text="403: this XAIExplain server needs its access token: open the URL "
                                             "it printed (…?token=…)\n")

    return check


def download_route(bridge):
    """``GET /download/<node id>``: a heatmap of the scene as an NRRD file (the geometry of its input)."""
    from aiohttp import web

    async def download(request):
        import tempfile

        import SimpleITK as sitk

        from ..mrml import volume_to_sitk, naming

        node = bridge.scene.GetNodeByID(request.match_info["node"])
        if node is None or node.GetAttribute(naming.KIND_ATTRIBUTE) != "heatmap":
            return web.Response(status=404, text="no such heatmap\n")
        with tempfile.TemporaryDirectory(prefix="xaiexplain-download-") as folder:
            path = Path(folder) / "map.nrrd"
            sitk.WriteImage(volume_to_sitk(node), str(path), True)
            body = path.read_bytes()
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in node.GetName()) + ".nrrd"
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return web.get("/download/{node}", download)


def build(args, server=None):
    """Server, scene app, bridge and page for ``args``; returns ``(server, bridge, url)``."""
    from trame.app import get_server

    from .bridge import Bridge
    from .page import build_page
    from .review import Review
    from .scene_app import SceneApp

    check_arguments(args)
    server = server or get_server("xaiexplain", client_type="vue3")
    from trame_slicer import module as trame_slicer_module

    server.enable_module(trame_slicer_module)
    needs_token = args.require_token or not security.is_loopback(args.host)
    token = security.new_token() if needs_token else ""
    scene_app = SceneApp(server)
    bridge = Bridge(server, scene_app, allowed_paths(args), images=args.inputs, models=args.models or [],
                    methods=args.methods or [], models_dir=args.models_dir, output_dir=args.output_dir,
                    upload_limit=int(args.upload_limit * 2 ** 20))
    build_page(server, scene_app)

    def bind(wslink_server):
        app = wslink_server.app
        if token:
            app.middlewares.append(token_middleware(token))
        app.router.add_routes([download_route(bridge)])

    server.controller.on_server_bind.add(bind)
    if args.review:
        try:
            review = Review(bridge, args.review)
        except ValueError as error:
            raise ValueError(f"--review {args.review}: {error}") from None
        server.controller.on_server_ready.add(lambda **_: review.show(0))
    else:
        _preselect(bridge, args)
    state = {"token": token}
    return server, bridge, state


def _preselect(bridge, args) -> None:
    if args.models:
        bridge.state.model = str(args.models[0])
        bridge.on_model(bridge.state.model)
    if args.inputs:
        bridge.state.image = str(args.inputs[0])
        bridge.open_image(args.inputs[0])


def url(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?{security.TOKEN_PARAMETER}={token}" if token else "")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    try:
        server, bridge, extra = build(args)
    except (ValueError, security.AccessError) as error:
        print(f"{PROG}: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2

    def announce(**_):
        print(f"XAIExplain is served at {url(args.host, server.port, extra['token'])}", flush=True)

    server.controller.on_server_ready.add(announce)
    server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=False,
                 disable_logging=not args.debug, timeout=0)
    return 0
