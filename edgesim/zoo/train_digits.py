"""Trains the two shipped digits models and writes them with the zoo's builders (run by hand).

    python -m venv /tmp/zoo-venv
    /tmp/zoo-venv/bin/pip install torch==2.13.0 numpy onnx scikit-learn onnxruntime
    cd <repo> && PYTHONPATH=. /tmp/zoo-venv/bin/python edgesim/zoo/train_digits.py

Data: scikit-learn's 8x8 digits (shipped inside scikit-learn), pixels scaled to [0, 1], split
by a seeded permutation into test (360), calib (200) and train (the remaining 1237). The torch
modules below name their parameters exactly as the ONNX builders do and store MatMul weights
[in, out], so the state dict is the builders' `weights=` argument. The script exports both
models, measures their test accuracy with onnxruntime, checks it against torch's, and writes
`data/digits_cnn.onnx`, `data/digits_transformer.onnx` and `data/digits.npz`. Not imported by
the package: it needs torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from edgesim.zoo.cnn import digits_cnn_graph
from edgesim.zoo.transformer import digits_transformer_graph

SEED = 0
N_TEST, N_CALIB = 360, 200
DATA_DIR = Path(__file__).resolve().parent / "data"
BARS = {"digits_cnn": 0.97, "digits_transformer": 0.93}


def split_digits(seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded train / calib / test split of the 1797 digits, images [N, 1, 8, 8] in [0, 1]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    test, calib, train = np.split(order, [N_TEST, N_TEST + N_CALIB])
    return {"x_train": x[train], "y_train": y[train], "x_calib": x[calib], "y_calib": y[calib],
            "x_test": x[test], "y_test": y[test]}


class DigitsCNN(nn.Module):
    """Mirror of `digits_cnn_graph`: Conv-BN-ReLU (16, 32), MaxPool, Conv-BN-ReLU 64, GAP, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class Dense(nn.Module):
    """x @ W + b with W stored [in, out], as the ONNX MatMul initializer."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cin, cout) / math.sqrt(cin))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Attention(nn.Module):
    """Mirror of `transformer.attention`: separate q/k/v/o projections."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (Dense(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        q, k, v = (p(x).view(n, s, self.heads, -1).transpose(1, 2)
                   for p in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(n, s, d))


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = Dense(d, hidden), Dense(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then + mlp(LN(x))."""

    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm2, self.mlp = nn.LayerNorm(d), Mlp(d, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsTransformer(nn.Module):
    """Mirror of `digits_transformer_graph` (8 row tokens, d 64, 2 blocks, 4 heads, MLP 128)."""

    def __init__(self, d: int = 64, depth: int = 2, heads: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.embed = Dense(8, d)
        self.pos_embed = nn.Parameter(0.5 * torch.randn(1, 8, d))
        self.blocks = nn.ModuleList(Block(d, heads, hidden) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.reshape(-1, 8, 8)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augmentation: every image moved by up to one pixel in each direction (zero fill)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + 8, dx:dx + 8]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> nn.Module:
    """AdamW with cosine decay, batch 64, one-pixel shift augmentation."""
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(64):
            loss = F.cross_entropy(model(shift(xt[idx], gen)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def state_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The state dict as the builders' `weights=` (BN's batch counter dropped)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def ort_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Logits of the exported model, run by onnxruntime."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def export(name: str, model: nn.Module, graph: onnx.ModelProto,
           data: dict[str, np.ndarray]) -> None:
    """Checks the ONNX against torch, reports its test accuracy, and writes it to data/."""
    onnx.checker.check_model(graph, full_check=True)
    logits = ort_logits(graph, data["x_test"])
    with torch.no_grad():
        ref = model(torch.from_numpy(data["x_test"])).numpy()
    acc = float((logits.argmax(1) == data["y_test"]).mean())
    print(f"{name}: onnxruntime test accuracy {acc:.4f} (bar {BARS[name]}), "
          f"max |ort - torch| = {np.abs(logits - ref).max():.2e}")
    if acc < BARS[name]:
        raise SystemExit(f"{name}: accuracy {acc:.4f} is below the bar {BARS[name]}")
    onnx.save(graph, DATA_DIR / f"{name}.onnx")


def main() -> None:
    """Trains, exports and writes both models and the calib / test data."""
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    data = split_digits()
    cnn = train(DigitsCNN(), data["x_train"], data["y_train"], epochs=60, lr=3e-3)
    export("digits_cnn", cnn, digits_cnn_graph(weights=state_weights(cnn)), data)
    tfm = train(DigitsTransformer(), data["x_train"], data["y_train"], epochs=150, lr=2e-3)
    export("digits_transformer", tfm, digits_transformer_graph(weights=state_weights(tfm)), data)
    np.savez_compressed(DATA_DIR / "digits.npz",  # numpy's stubs mistype **arrays
                        **{k: data[k] for k in ("x_calib", "y_calib", "x_test", "y_test")})  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
