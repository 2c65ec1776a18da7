"""The ``--device`` option that every computing ``pnerf`` command shares."""


def add_device_argument(p) -> None:
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="where to compute: auto (the default: CUDA when torch sees a GPU and pnerf_fast._C was "
                        "compiled with CUDA, else the CPU), cpu, cuda or cuda:N")


def device_from_args(args):
    """``args.device`` checked and resolved -> a torch.device; a bad value or an absent GPU
    raise ValueError naming --device (the CLI prints it on one line, exit code 2)."""
    from .._device import resolve_device

    return resolve_device(args.device, "--device")
