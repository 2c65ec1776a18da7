"""pnerf view: look around a finetuned portrait in the browser (viser)."""
from ._device_arg import add_device_argument, device_from_args

NAME = "view"
HELP = ("Open a finetuned portrait in an interactive web viewer (viser): orbit and zoom, RGB/depth/opacity, "
        "a dolly-zoom focal-length slider, PNG snapshots and camera_path.json keyframes.")


def add_arguments(p):
    p.add_argument("model", help="finetuned portrait checkpoint (from `pnerf finetune`)")
    p.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--res", type=int, default=256, help="views are refined up to about RES² pixels when the camera stops")
    p.add_argument("--preview-res", type=int, default=None,
                   help="at most about PREVIEW_RES² pixels while the camera moves, fewer when --fps needs it "
                        "(default: 128, or --res if smaller)")
    p.add_argument("--fps", type=float, default=5.0, help="frame rate aimed at while the camera moves")
    p.add_argument("--out-dir", default=".", help="where Save PNG and Save camera path write (default: here)")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="print only the URL")


def check_port(host: str, port: int) -> None:
    """ValueError naming --port or --host unless ``host:port`` can be bound now."""
    import errno
    import socket

    if not 0 <= port <= 65535:
        raise ValueError(f"argument --port: must be in [0, 65535], got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"argument --host: cannot resolve {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"argument --port: {host}:{port} is in use; pick another "
                                 "(or --port 0 for any free one)") from None
            if e.errno == errno.EACCES:
                raise ValueError(f"argument --port: not allowed to bind {host}:{port} "
                                 "(ports below 1024 need root)") from None
            raise ValueError(f"argument --host: cannot bind {host}:{port}: {e.strerror or e}") from None


def run(args):
    import signal
    import time
    from pathlib import Path

    from .._io import check_output
    from ..api import load
    from ..viewer.app import Viewer, ViewerConfig, viser_module

    device = device_from_args(args)
    preview = min(128, args.res) if args.preview_res is None else args.preview_res
    cfg = ViewerConfig(res=args.res, preview_res=preview, fps=args.fps, out_dir=Path(args.out_dir),
                       name=Path(args.model).stem or "portrait", verbose=not args.quiet).check()
    check_output(cfg.out_dir / f"{cfg.name}_camera_path.json", "--out-dir", [args.model], kind="file")
    check_port(args.host, args.port)
    viser_module()
    portrait = load(args.model, device=device)
    viewer = Viewer(portrait, cfg)
    url = viewer.start(args.host, args.port)
    print(f"pnerf view: {url}  (Ctrl+C to stop)", flush=True)
    if not args.quiet:
        print(f"pnerf view: previews of ~{viewer.preview_side()}² pixels while moving "
              f"({viewer.s_per_ray * 1e6:.0f} µs per ray here), refined to ~{cfg.res}²; "
              f"saving into {cfg.out_dir}", flush=True)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    return 0
