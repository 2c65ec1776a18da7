"""Native kernels, each with an autograd wrapper and a pure-PyTorch reference."""
