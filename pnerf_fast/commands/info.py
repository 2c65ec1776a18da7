"""pnerf info: what native backends were compiled."""
import json

NAME = "info"
HELP = "Show the compiled backends (CPU, CUDA and its architectures) and versions."


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    from .. import backend_info

    info = backend_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")
    return 0
